"""Exactly equivariant canonicalizers built from escnn steerable networks.

* [`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer]: a C_n-equivariant network scores
  the ``n`` rotations of a cyclic group.
* [`VectorFieldCanonicalizer`][equican.canon.equivariant.VectorFieldCanonicalizer]: a C_N- (or D_N-) equivariant
  network outputs a vector field, averaged into one vector whose angle is the rotation (and a pseudo-scalar whose sign
  is the reflection): continuous rotations SO(2), O(2), and the finite C_n, D_n by snapping.
* [`equivariant_canonicalizer`][equican.canon.equivariant.equivariant_canonicalizer]: the one of the two that suits a
  group (what the ``escnn`` training method builds).

This is the only module that imports escnn (an optional dependency: ``pip install escnn``);
[`equican.canon`][equican.canon] imports it only when
[`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer] is first asked for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import validation as V
from ..errors import ConfigError
from ..group import Group
from .base import Canonicalizer
from .vector import VectorFieldCanonicalizer

try:
    from escnn import gspaces
    from escnn import nn as enn
except ImportError as exc:  # pragma: no cover - exercised only without escnn
    raise ImportError("EquivariantCanonicalizer needs escnn: pip install escnn (it builds py3nj, which needs "
                      "gfortran)") from exc

__all__ = ["EquivariantCanonicalizer", "VectorFieldCanonicalizer", "SteerableTrunk", "equivariant_canonicalizer"]


class EquivariantCanonicalizer(Canonicalizer):
    """Scores the ``n`` elements of a cyclic rotation group with a C_n-equivariant CNN and takes the arg-max.

    The network (escnn ``R2Conv`` layers on regular fields of C_n, ReLU, then a spatial mean) gives scores
    ``s(x) ∈ R^n`` that are *shifted* by rotations: rotating the input by the ``k``-th rotation rolls the scores
    by ``k``. The canonicalizing element is the one of the reversed scores' arg-max, so a rotated input gets the
    correspondingly rotated element and the canonical input is exactly the same: on square images, with a group
    whose action is exact (rot90 for n dividing 4), the canonicalizer is invariant to rounding error (ties in the
    scores aside). Gradients reach the network through the straight-through estimator of
    [`Canonicalizer`][equican.canon.base.Canonicalizer] (discrete groups).

    The group must be discrete with a score chart ``(n,)`` whose ``i``-th score selects the rotation by ``2πi/n``
    (counter-clockwise on screen, as ``torch.rot90``), which is how the cyclic rotation group is written.

    ``info`` keys: ``scores``: ``(B, n)`` the network's scores; ``logits``: ``(B, n)`` the chart scores of ``h = g⁻¹``
    (the reversed scores, differentiable), which the trained prior
    ([`prior_loss`][equican.canon.base.Canonicalizer.prior_loss] of the result) pushes toward the identity by
    cross-entropy.

    Args:
        group: the discrete rotation group ``C_n``.
        in_channels: input channels (each a scalar field).
        channels: regular fields per hidden layer.
        kernel_size: odd kernel size of every layer.
    """

    def __init__(self, group: Group, in_channels: int, channels: Sequence[int] = (8, 8),
                 kernel_size: int = 5) -> None:
        super().__init__(group)
        if not group.discrete:
            raise ConfigError(f"EquivariantCanonicalizer: expected a discrete (cyclic) group, got {group!r}")
        for key, value in (("in_channels", in_channels), ("kernel_size", kernel_size)):
            V.require_int(value, low=1, where="EquivariantCanonicalizer", name=key)
        if kernel_size % 2 == 0:
            raise ConfigError(f"EquivariantCanonicalizer: expected an odd kernel_size, got {kernel_size}")
        channels = _positive_ints(channels, where="EquivariantCanonicalizer")
        n = group.unconstrained_shape[0]
        self.n, self.in_channels = n, in_channels  # in_channels: read by check_input (escnn's asserts are untyped)
        space = gspaces.rot2dOnR2(N=n)
        self.in_type = enn.FieldType(space, in_channels * [space.trivial_repr])
        self.net = _network(self.in_type, channels, kernel_size, [space.regular_repr])
        # Reversing the scores (i -> -i mod n) turns "rotating the input by k rolls the scores by +k" into the
        # canonicalizing element's law h(act(k, x)) = h(x) k⁻¹.
        self.register_buffer("reverse", (-torch.arange(n)) % n, persistent=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The network's scores, ``(B, n)``, rolled by ``k`` when ``x: (B, C, H, W)`` is rotated by ``2πk/n``."""
        out = self.net(enn.GeometricTensor(x, self.in_type)).tensor  # (B, n, H, W): one regular field
        return out.mean(dim=(-2, -1))

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The reversed scores ``(B, n)`` of ``x: (B, C, H, W)`` (their arg-max is the canonicalizing rotation) and
        ``info``: ``scores``, the network's scores ``(B, n)``, and ``logits``, the reversed ones ``(B, n)``."""
        s = self.scores(x)
        z = s[:, self.reverse]
        return z, {"scores": s, "logits": z}


class SteerableTrunk(nn.Module):
    """An escnn network from scalar images to a vector field (two with reflections): the trunk of
    [`VectorFieldCanonicalizer`][equican.canon.vector.VectorFieldCanonicalizer].

    Layers of ``R2Conv`` on regular fields of C_N (rotations by multiples of ``2π/N``) or, with ``reflections``, of
    D_N (those and their mirror images), with ReLU, then an ``R2Conv`` to one frequency-1 field (the vector, which
    turns with the image), two with ``reflections``. Exactly
    equivariant for the elements of C_N / D_N up to the precision of escnn's filter bases (measured: 1e-6 relative
    for rot90 in float64), approximately for other angles (steerable filters on a pixel grid).

    The output's channel 0 is along the image width and channel 1 down the rows, with ``+90°`` meaning
    ``torch.rot90(x, 1, dims=(-2, -1))``; the mirror is ``x.flip(-1)`` (escnn's D_N reflection with its default
    axis). Checked in ``tests/test_exact_canonicalizers.py``.

    Args:
        in_channels: input channels, each a scalar field.
        channels: regular fields per hidden layer.
        kernel_size: odd kernel size of every layer.
        rotations: ``N``, the rotations the network is exactly equivariant to.
        reflections: D_N instead of C_N, and a second vector field.

    Shapes:
        ``x: (B, in_channels, H, W) -> (B, 2 + 2·reflections, H, W)``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (8, 8), kernel_size: int = 5,
                 rotations: int = 8, reflections: bool = False) -> None:
        super().__init__()
        where = "SteerableTrunk"
        for key, value in (("in_channels", in_channels), ("kernel_size", kernel_size), ("rotations", rotations)):
            V.require_int(value, low=1, where=where, name=key)
        if kernel_size % 2 == 0:
            raise ConfigError(f"{where}: expected an odd kernel_size, got {kernel_size}")
        channels = _positive_ints(channels, where=where)
        if not isinstance(reflections, bool):
            raise ConfigError(f"{where}: expected reflections to be a bool, got {reflections!r}")
        # escnn's default reflection axis (π/2): its frequency-1 field then maps (v_x, v_y) to (v_x, -v_y) under
        # x.flip(-1) (measured; with axis=π it maps it to (-v_x, v_y)), so that the vector's angle θ becomes -θ, as
        # the mirror's conjugation F R_θ F = R_{-θ} of the group convention needs.
        space = gspaces.flipRot2dOnR2(N=rotations) if reflections else gspaces.rot2dOnR2(N=rotations)
        self.in_type = enn.FieldType(space, in_channels * [space.trivial_repr])
        out = 2 * [space.irrep(1, 1)] if reflections else [space.irrep(1)]
        self.net = _network(self.in_type, channels, kernel_size, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fields ``(B, 2 + 2·reflections, H, W)`` of ``x: (B, in_channels, H, W)``."""
        return self.net(enn.GeometricTensor(x, self.in_type)).tensor


def _network(in_type: Any, channels: tuple[int, ...], kernel_size: int, out: list[Any]) -> Any:
    """``R2Conv`` + ReLU layers on ``channels[i]`` regular fields of ``in_type``'s space, then an ``R2Conv`` to the
    representations ``out``; made private by ``_private``."""
    space, field, layers = in_type.gspace, in_type, []
    for width in channels:
        hidden = enn.FieldType(space, width * [space.regular_repr])
        layers += [enn.R2Conv(field, hidden, kernel_size=kernel_size, padding=kernel_size // 2), enn.ReLU(hidden)]
        field = hidden
    layers.append(enn.R2Conv(field, enn.FieldType(space, out), kernel_size=kernel_size, padding=kernel_size // 2))
    return _private(enn.SequentialModule(*layers))


def _private(net: Any) -> Any:
    """A copy of the escnn module ``net`` that shares no buffers with other modules, in train mode with no cached
    filters in its state dict.

    escnn caches the sampled filter bases of each pair of field types and shares those sub-modules between every layer
    built with them, so converting one network (``.double()``, ``.to("cuda")``) converted the bases of every other one
    in the process, and a float32 network built after a float64 one failed ("expected scalar type Float but found
    Double"). The deep copy gives this network its own bases.

    escnn also registers each layer's expanded filter as a buffer at construction and in eval mode, and deletes it on
    the way back to train mode: a trained module (which has been through eval mode) saved no filters, while a freshly
    built one expected them, so its checkpoint did not load into a new module. After the round trip through eval mode
    every module in train mode has the same keys.
    """
    net = copy.deepcopy(net)
    net.train(False)
    net.train(True)
    return net


def _positive_ints(channels: Sequence[int], *, where: str) -> tuple[int, ...]:
    channels = tuple(channels)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
        raise ConfigError(f"{where}: expected channels to be positive ints, got {channels!r}")
    return channels


def equivariant_canonicalizer(group: Group, in_channels: int, channels: Sequence[int] = (8, 8),
                              kernel_size: int = 5, rotations: int | None = None) -> Canonicalizer:
    """The exactly equivariant canonicalizer for ``group``: what the ``escnn`` training method builds.

    * a cyclic group (discrete, elements ``θ`` of shape ``(B, 1)``):
      [`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer], which scores its ``n``
      rotations;
    * otherwise (SO(2), O(2), D_n): [`VectorFieldCanonicalizer`][equican.canon.vector.VectorFieldCanonicalizer] on a
      [`SteerableTrunk`][equican.canon.equivariant.SteerableTrunk] (with reflections for elements ``(θ, d)`` of shape
      ``(B, 2)``), symmetrized over rot90 and flips.

    Args:
        group: the group.
        in_channels: input channels.
        channels: regular fields per hidden layer.
        kernel_size: odd kernel size.
        rotations: ``N`` of the trunk's C_N / D_N; default 8, or the least multiple of 8 and of the group's number of
            rotations for a discrete group (so that every element of the group is one of the trunk's).

    Raises:
        ConfigError: a group neither kind supports, or invalid sizes.
    """
    if group.discrete and tuple(group.param_shape) == (1,):
        return EquivariantCanonicalizer(group, in_channels, channels=channels, kernel_size=kernel_size)
    reflections = tuple(group.param_shape) == (2,)
    if rotations is None:
        rotations = 8
        if group.discrete:
            rotations = math.lcm(8, group.unconstrained_shape[0] // (1 + int(reflections)))
    trunk = SteerableTrunk(in_channels, channels, kernel_size, rotations=rotations, reflections=reflections)
    return VectorFieldCanonicalizer(group, trunk)
