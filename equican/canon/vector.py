"""The vector-field canonicalizer: rotations (and reflections) read off an equivariant network's averaged field.

A trunk network maps an image to a vector field (and, for groups with reflections, a second one). Averaged over a
disc, the field gives one vector ``v(x) ∈ R²`` per image that turns with the image, ``v(R_α x) = R_α v(x)``, and the
cross product ``s = v × w`` of the two vectors, which changes sign under a mirror; the element is
``g = (angle of v, sign of s)``. With an
equivariant trunk (escnn's, built by [`SteerableTrunk`][equican.canon.equivariant.SteerableTrunk]) the canonicalizer is
equivariant by construction, ``g(act(k, x)) = k g(x)``, so the canonical input ``act(g⁻¹, x)`` is invariant. This module
does not import escnn: any trunk works, which is how the tests run a plain CNN trunk as the negative control.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import validation as V
from ..errors import ConfigError, ShapeError
from ..group import Group
from .base import CanonResult, Canonicalizer
from .prior import vector_prior

__all__ = ["VectorFieldCanonicalizer", "disc_weights"]

#: Pixel tolerance of the construction-time probe that the group rotates and mirrors as the convention says.
_PROBE_ATOL = 1e-6


def disc_weights(height: int, width: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The smooth disc ``cos²(π r / 2)`` for ``r < 1`` (0 beyond) over a ``height × width`` image, normalized to sum 1.

    ``r`` is the distance to the image centre in normalized coordinates (``align_corners=True``). The coordinates are
    made exactly antisymmetric (``u[i] = -u[-1-i]`` bit for bit), so the weights are exactly invariant under flips and,
    on square images, under rot90: the averaged field keeps those symmetries to rounding error. The taper to 0 at the
    inscribed circle keeps corners (which rotations by other angles cut off) out of the average.

    Returns:
        ``(height, width)`` weights summing to 1.
    """
    def coords(n: int) -> torch.Tensor:
        u = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
        return (u - u.flip(0)) / 2

    r = torch.sqrt(coords(height)[:, None] ** 2 + coords(width)[None, :] ** 2)
    w = torch.where(r < 1, torch.cos(0.5 * math.pi * r) ** 2, 0.0)
    return (w / w.sum()).to(device=device, dtype=dtype)


class VectorFieldCanonicalizer(Canonicalizer):
    """Rotation (and reflection) from the averaged vector field of a rotation-equivariant trunk.

    The trunk maps ``x: (B, C, H, W)`` to fields ``(B, 2 + 2r, H, W)``: channels 0-1 a vector field ``(v_x, v_y)``
    (x along the width, y down the rows, turning with the image as rotations of the group turn points, and mapped to
    ``(v_x, -v_y)`` by the mirror ``x.flip(-1)``), and, when the group has reflections (``r = 1``), channels 2-3 a
    second such field ``w``. Each field is averaged with [`disc_weights`][equican.canon.vector.disc_weights] into
    ``v, w: (B, 2)``; the pseudo-scalar ``s = v_x w_y - v_y w_x`` (``(B,)``) is unchanged by rotations and negated by
    mirrors. (A cross product of two vectors rather than a pseudo-scalar field of the trunk: escnn's sign fields
    averaged over smooth images are small and turned by 10-50% at angles off the C_N grid, so their sign flipped under
    about a quarter of random rotations in our measurements; the two vectors turn to about 0.01 rad, and their cross
    product changes sign only where they are nearly parallel.) The element is

    * ``g = θ = atan2(v_y, v_x)`` for a group of rotations (elements ``θ``, shape ``(B, 1)``);
    * ``g = (θ, d)``, ``d = +1`` where ``s ≥ 0`` else ``-1``, for rotations and reflections (elements ``(θ, d)``,
      shape ``(B, 2)``, the mirror ``u_x ↦ -u_x`` applied first);
    * for a discrete group (``group.discrete``), the element of the group nearest to that ``g`` (same ``d``, nearest
      angle), through scores ``(B, n)`` linear in ``v``, so the straight-through gradient of
      [`Canonicalizer`][equican.canon.base.Canonicalizer] trains the trunk.

    If the trunk is equivariant, ``v(act(k, x)) = ρ(k) v(x)`` (likewise ``w``), so ``s(act(k, x)) = det(k) s(x)``,
    ``g(act(k, x)) = k g(x)`` and the canonical input is invariant. ``symmetrize=True`` averages ``v`` and ``w``
    over the exact rot90/flip subgroup (``ρ(t)⁻¹ v(t·x)`` over the 4 quarter turns, and their mirror images for
    groups with reflections): those symmetries then hold to rounding error whatever the trunk (escnn's filters, sampled
    from numerically computed bases, are rot90-equivariant only to about 1e-6 relative, measured in float64), at 4×
    (8×) the trunk's cost. It needs square images.

    The group must rotate as ``act(π/2, x) = torch.rot90(x, 1, dims=(-2, -1))`` and mirror as ``act((0, -1), x) =
    x.flip(-1)``; this is checked once, at construction, on a probe image.

    ``info`` keys: ``vector`` ``(B, 2)``; ``pseudoscalar`` ``(B,)`` (``v × w``) and ``second_vector`` ``w`` ``(B, 2)``
    for groups with reflections.

    The trained prior ([`prior_loss`][equican.canon.base.Canonicalizer.prior_loss] of a result) is
    [`vector_prior`][equican.canon.prior.vector_prior] of ``v`` (and ``w``): ``1 - cos θ`` (``+ 1 - sin φ``), for
    continuous and discrete groups alike (a discrete element is the one nearest to ``θ``).

    Args:
        group: rotations (``param_shape (1,)``) or rotations and reflections (``(2,)``), continuous or discrete.
        trunk: ``(B, C, H, W) -> (B, 2 + 2r, H, W)`` (``r = 1`` with reflections, else 0).
        symmetrize: average over the exact rot90 (and flip) subgroup, as above.

    Raises:
        ConfigError: ``group`` is not such a group, or ``trunk`` is not a module.
    """

    def __init__(self, group: Group, trunk: nn.Module, symmetrize: bool = True) -> None:
        super().__init__(group)
        if not isinstance(trunk, nn.Module):
            raise ConfigError(f"VectorFieldCanonicalizer: expected trunk to be a torch.nn.Module, "
                              f"got {type(trunk).__name__}")
        if not isinstance(symmetrize, bool):
            raise ConfigError(f"VectorFieldCanonicalizer: expected symmetrize to be a bool, got {symmetrize!r}")
        if tuple(group.param_shape) not in ((1,), (2,)):
            raise ConfigError(self._group_message(group, f"param_shape {tuple(group.param_shape)}"))
        self.reflections = group.param_shape == (2,)
        self.trunk, self.symmetrize = trunk, symmetrize
        self._probe(group)
        if group.discrete:
            n = group.unconstrained_shape[0]
            elements = group.from_unconstrained(torch.eye(n, dtype=torch.float64))  # (n, 1) or (n, 2)
            directions = torch.stack([torch.cos(elements[:, 0]), torch.sin(elements[:, 0])], 1)  # (n, 2)
            dets = elements[:, 1] if self.reflections else torch.ones(n, dtype=torch.float64)
            self.register_buffer("directions", directions, persistent=False)  # (n, 2)
            self.register_buffer("dets", dets, persistent=False)  # (n,)
        # ρ(t)⁻¹ of the exact subgroup, entries 0 and ±1: t = R_{kπ/2} F^m acts as rot90(flip^m(x), k) and turns a
        # vector by ρ(t) = R_{kπ/2} diag(1, (-1)^m).
        transforms = [(k, m) for m in ((0, 1) if self.reflections else (0,)) for k in range(4)]
        inv = []
        for k, m in transforms:
            c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
            rho = torch.tensor([[c, -s], [s, c]], dtype=torch.float64) @ torch.diag(
                torch.tensor([1.0, 1.0 - 2 * m], dtype=torch.float64))
            inv.append(torch.linalg.inv(rho).round())
        self.transforms = transforms
        self.register_buffer("rho_inv", torch.stack(inv).float(), persistent=False)  # (T, 2, 2)

    @staticmethod
    def _group_message(group: Group, got: str) -> str:
        return (f"VectorFieldCanonicalizer: expected a group of rotations (elements θ, shape (B, 1)) or of rotations "
                f"and reflections ((θ, d), shape (B, 2)), continuous or discrete, acting as rot90 at θ = π/2 and as "
                f"x.flip(-1) at (0, -1); got {group!r} with {got}")

    def _probe(self, group: Group) -> None:
        """Check on a 7×7 probe image that the group's quarter turn is rot90 and its mirror is flip (where they are
        elements), so that the vector's angle means the group's angle."""
        x = torch.arange(49, dtype=torch.float64).reshape(1, 1, 7, 7) / 49
        probes = [((math.pi / 2, 1.0), torch.rot90(x, 1, dims=(-2, -1)))]
        if self.reflections:
            probes.append(((0.0, -1.0), x.flip(-1)))
        for params, expected in probes:
            g = torch.tensor([params[:group.param_shape[0]]], dtype=torch.float64)
            if group.invalid_reason(g) is not None:
                continue  # e.g. C_3 has no quarter turn; its other elements follow the same formula
            if not torch.allclose(group.act(g, x), expected, atol=_PROBE_ATOL, rtol=0):
                raise ConfigError(self._group_message(group, f"act({g[0].tolist()}, ·) not matching that"))

    def fields(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The averaged vector ``v: (B, 2)`` and pseudo-scalar ``s = v × w: (B,)`` (None without reflections) of
        ``x: (B, C, H, W)``, symmetrized over the exact subgroup when ``symmetrize``."""
        return self._pseudoscalar(self._vectors(x))

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The averaged (and symmetrized) vectors ``(B, 2 + 2r)`` of ``x: (B, C, H, W)``: ``v``, then ``w``."""
        if not self.symmetrize:
            return self._average(self.trunk(x), x)
        if x.shape[-1] != x.shape[-2]:
            raise ShapeError(f"VectorFieldCanonicalizer: expected square images with symmetrize=True, "
                             f"got x of shape {V.fmt_shape(x.shape)}")
        batch = x.shape[0]
        stacked = torch.cat([torch.rot90(x.flip(-1) if m else x, k, dims=(-2, -1)) for k, m in self.transforms])
        vectors = self._average(self.trunk(stacked), stacked)  # (T·B, 2 + 2r)
        vectors = vectors.reshape(len(self.transforms), batch, -1, 2)
        vectors = torch.einsum("tij,tbvj->bvi", self.rho_inv.to(vectors.dtype), vectors) / len(self.transforms)
        return vectors.flatten(1)

    def _pseudoscalar(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(v, v × w)`` from the averaged vectors ``(B, 2 + 2r)``."""
        if not self.reflections:
            return vectors, None
        return vectors[:, :2], vectors[:, 0] * vectors[:, 3] - vectors[:, 1] * vectors[:, 2]

    def _average(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The trunk's fields ``out: (B, 2 + 2r, H, W)`` averaged over the disc: ``(B, 2 + 2r)``."""
        channels = 2 + 2 * int(self.reflections)
        if out.ndim != 4 or out.shape[1] != channels or out.shape[-2:] != x.shape[-2:]:
            raise ShapeError(f"VectorFieldCanonicalizer: expected the trunk to return fields of shape "
                             f"(B, {channels}, {x.shape[-2]}, {x.shape[-1]}), got {V.fmt_shape(out.shape)}")
        w = disc_weights(x.shape[-2], x.shape[-1], dtype=out.dtype, device=out.device)
        return (out * w).sum(dim=(-2, -1))

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Chart parameters of ``h = g⁻¹`` for ``x: (B, C, H, W)``: ``(B, *unconstrained_shape)``, and ``info``."""
        vectors = self._vectors(x)
        v, s = self._pseudoscalar(vectors)
        info: dict[str, Any] = {"vector": v}
        d = None
        if s is not None:
            info["pseudoscalar"], info["second_vector"] = s, vectors[:, 2:]
            d = torch.where(s >= 0, 1.0, -1.0).to(v.dtype)
        if self.group.discrete:
            # h = g⁻¹ = (-dθ, d) has the direction (v_x, -d v_y)/|v|. Score each element by the cosine of its angle to
            # that direction, times |v| (linear in v), and push elements of the other determinant 3|v| below any of
            # the right one, so the arg-max is the nearest element with the same d.
            sign = torch.ones_like(v[:, 0]) if d is None else d
            u = torch.stack([v[:, 0], -sign * v[:, 1]], dim=1)
            scores = u @ self.directions.to(v.dtype).T  # (B, n)
            if d is not None:
                mismatch = (self.dets.to(v.dtype)[None, :] != d[:, None]).to(v.dtype)
                scores = scores - 3 * v.norm(dim=1, keepdim=True) * mismatch
            return scores, info
        theta = torch.atan2(v[:, 1], v[:, 0])[:, None]
        g = theta if d is None else torch.cat([theta, d[:, None]], dim=1)
        return self.group.to_unconstrained(self.group.inverse(g)), info

    def result_prior(self, result: CanonResult) -> torch.Tensor | None:
        """[`vector_prior`][equican.canon.prior.vector_prior] of the result's ``info["vector"]`` (and
        ``info["second_vector"]``): ``(B,)``; None for a result without them (the distance prior then)."""
        v = result.info.get("vector")
        if not isinstance(v, torch.Tensor):
            return None
        return vector_prior(v, result.info.get("second_vector") if self.reflections else None)
