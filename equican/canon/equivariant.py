"""The equivariant canonicalizer: an escnn C_n-equivariant network scores the n rotations.

This is the only module that imports escnn (an optional dependency: ``pip install escnn``);
[`equican.canon`][equican.canon] imports it only when
[`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer] is first asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import _validate as V
from ..errors import ConfigError
from ..group import Group
from . import Canonicalizer

try:
    from escnn import gspaces
    from escnn import nn as enn
except ImportError as exc:  # pragma: no cover - exercised only without escnn
    raise ImportError("EquivariantCanonicalizer needs escnn: pip install escnn (it builds py3nj, which needs "
                      "gfortran)") from exc

__all__ = ["EquivariantCanonicalizer"]


class EquivariantCanonicalizer(Canonicalizer):
    """Scores the ``n`` elements of a cyclic rotation group with a C_n-equivariant CNN and takes the arg-max.

    The network (escnn ``R2Conv`` layers on regular fields of C_n, ReLU, then a spatial mean) gives scores
    ``s(x) ∈ R^n`` that are *shifted* by rotations: rotating the input by the ``k``-th rotation rolls the scores
    by ``k``. The canonicalizing element is the one of the reversed scores' arg-max, so a rotated input gets the
    correspondingly rotated element and the canonical input is exactly the same: on square images, with a group
    whose action is exact (rot90 for n dividing 4), the canonicalizer is invariant to rounding error (ties in the
    scores aside). Gradients reach the network through the straight-through estimator of
    [`Canonicalizer`][equican.canon.Canonicalizer] (discrete groups).

    The group must be discrete with a score chart ``(n,)`` whose ``i``-th score selects the rotation by ``2πi/n``
    (counter-clockwise on screen, as ``torch.rot90``), which is how the cyclic rotation group is written.

    ``info`` keys: ``scores``: ``(B, n)`` the network's scores.

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
        channels = tuple(channels)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ConfigError(f"EquivariantCanonicalizer: expected channels to be positive ints, got {channels!r}")
        n = group.unconstrained_shape[0]
        self.n, self.in_channels = n, in_channels  # in_channels: read by check_input (escnn's asserts are untyped)
        space = gspaces.rot2dOnR2(N=n)
        field = enn.FieldType(space, in_channels * [space.trivial_repr])
        self.in_type = field
        layers: list[Any] = []
        for width in channels:
            hidden = enn.FieldType(space, width * [space.regular_repr])
            layers += [enn.R2Conv(field, hidden, kernel_size=kernel_size, padding=kernel_size // 2),
                       enn.ReLU(hidden)]
            field = hidden
        layers.append(enn.R2Conv(field, enn.FieldType(space, [space.regular_repr]), kernel_size=kernel_size,
                                 padding=kernel_size // 2))
        self.net = enn.SequentialModule(*layers)
        # Reversing the scores (i -> -i mod n) turns "rotating the input by k rolls the scores by +k" into the
        # canonicalizing element's law h(act(k, x)) = h(x) k⁻¹.
        self.register_buffer("reverse", (-torch.arange(n)) % n, persistent=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The network's scores, ``(B, n)``, rolled by ``k`` when ``x: (B, C, H, W)`` is rotated by ``2πk/n``."""
        out = self.net(enn.GeometricTensor(x, self.in_type)).tensor  # (B, n, H, W): one regular field
        return out.mean(dim=(-2, -1))

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The reversed scores ``(B, n)`` of ``x: (B, C, H, W)`` (their arg-max is the canonicalizing rotation) and
        ``info["scores"]``, the network's scores ``(B, n)``."""
        s = self.scores(x)
        return s[:, self.reverse], {"scores": s}
