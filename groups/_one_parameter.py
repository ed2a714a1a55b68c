"""Shared members of the groups whose element is one real number: rotation angles, log-scales."""

from __future__ import annotations

import abc

import torch

from equican.group import Group


class OneParameterGroup(Group):
    """A group whose element is a single real parameter per batch entry, shape ``(B, 1)``, with 0 the identity.

    Subclasses name the half-width of the sampling interval with ``sample_bound``;
    [`sample`][equican.group.Group.sample] draws the parameter uniformly from ``[-sample_bound, sample_bound)``.
    """

    @property
    @abc.abstractmethod
    def sample_bound(self) -> float:
        """Half-width of the interval [`sample`][equican.group.Group.sample] draws from."""

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(1,)``: one real parameter per element, so a batch is ``(B, 1)``."""
        return (1,)

    def identity(self, batch, *, device=None, dtype=None):
        """``batch`` identity elements: zeros of shape ``(batch, 1)``."""
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        """``batch`` parameters drawn uniformly from ``[-sample_bound, sample_bound)`` with ``generator``, shape
        ``(batch, 1)``."""
        return self.uniform((batch, 1), -self.sample_bound, self.sample_bound, generator=generator, device=device,
                             dtype=dtype)
