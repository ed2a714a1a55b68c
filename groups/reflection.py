"""Rotations and reflections about the image centre: continuous O(2) and the dihedral groups D_n."""

from __future__ import annotations

import torch

from equican.group import Group, Tolerance
from equican import validation as V

from .rotation import CyclicRotation2d, Rotation2d, wrap_angle


class O2(Group, name="o2"):
    """O(2): rotations about the image centre and reflections (roto-reflections).

    Convention:
        An element is ``(θ, d)``, shape ``(B, 2)``: an angle ``θ`` in radians (any real value, taken mod 2π) and a
        determinant ``d ∈ {+1, -1}``. It is the map ``R_θ F^m`` with ``m = (1 - d)/2``: first the mirror ``F``
        (when ``d = -1``), then the rotation ``R_θ`` of [`Rotation2d`][equican_groups.rotation.Rotation2d]
        (counter-clockwise on screen). ``F`` mirrors the width axis, ``u_x ↦ -u_x``, so ``act((0, -1), x)`` is
        ``torch.flip(x, dims=(-1,))``, exactly (no interpolation). Since ``F R_θ F = R_{-θ}``, composition is
        ``(θ₁, d₁)(θ₂, d₂) = (θ₁ + d₁θ₂, d₁d₂)`` and the inverse is ``(-dθ, d)`` (a reflection is its own inverse).
        Angles are wrapped to ``[-π, π)``. The unconstrained chart is ``(θ, t)`` with ``d = +1`` where ``t ≥ 0`` and
        ``-1`` where ``t < 0`` (``z = 0`` is the identity; the sign is not differentiable, the angle is).
        [`distance`][equican_groups.reflection.O2.distance] is the angle difference plus 2 between the two components.
    """

    def __init__(self) -> None:
        self.rotation: Rotation2d = Rotation2d()

    # ------------------------------------------------------------------ the six members
    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(2,)``: an angle and a determinant ``±1`` per element."""
        return (2,)

    def identity(self, batch, *, device=None, dtype=None):
        """``batch`` identities ``(0, +1)``, shape ``(batch, 2)``."""
        e = torch.zeros(batch, 2, device=device, dtype=dtype)
        e[:, 1] = 1
        return e

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        """``batch`` elements: the rotation's [`sample`][equican_groups.rotation.Rotation2d.sample] (uniform on the circle,
        or on ``C_n``) and ``d = ±1`` with probability 1/2 each, from ``generator``; shape ``(batch, 2)``."""
        theta = self.rotation.sample(batch, generator=generator, device=device, dtype=dtype)
        flip = torch.randint(2, (batch, 1), generator=generator, device=generator.device).to(device)
        return torch.cat([theta, (1 - 2 * flip).to(dtype)], dim=1)

    def compose(self, g, h):
        """``(θ_g + d_g θ_h, d_g d_h)``: ``h`` first; ``g``, ``h`` and the result have shape ``(B, 2)``."""
        theta = self.rotation.compose(g[:, :1], g[:, 1:] * h[:, :1])
        return torch.cat([theta, g[:, 1:] * h[:, 1:]], dim=1)

    def inverse(self, g):
        """``(-dθ, d)``, shape ``(B, 2)``."""
        return torch.cat([self.rotation.inverse(g[:, 1:] * g[:, :1]), g[:, 1:]], dim=1)

    def act(self, g, x):
        """Mirror (where ``d = -1``) then rotate each image ``x: (B, C, H, W)``; result ``(B, C, H, W)``.

        The mirror is exact (``torch.flip`` of the width axis); the rotation is
        [`Rotation2d.act`][equican_groups.rotation.Rotation2d.act] (or the exact rot90 of a cyclic group that allows it).
        """
        mirrored = torch.where((g[:, 1] < 0)[:, None, None, None], x.flip(-1), x)
        return self.rotation.act(g[:, :1], mirrored)

    # ------------------------------------------------------------------ overrides
    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """``(2,)``: the angle and a real number whose sign is the determinant."""
        return (2,)

    def from_unconstrained(self, z):
        """``z = (θ, t): (B, 2)`` to ``(wrap(θ), +1 if t ≥ 0 else -1)``, shape ``(B, 2)``; differentiable in ``θ``."""
        d = torch.where(z[:, 1:] >= 0, 1.0, -1.0).to(z.dtype)
        return torch.cat([wrap_angle(z[:, :1]), d], dim=1)

    def to_unconstrained(self, g):
        """The element itself, ``(θ, d)``: ``(B, 2)`` (the chart's own representative)."""
        return g

    def distance(self, g, h):
        """The rotation distance of the angles (in ``[0, π]``) plus ``|d_g - d_h|`` (0 or 2), shape ``(B,)``."""
        return self.rotation.distance(g[:, :1], h[:, :1]) + (g[:, 1] - h[:, 1]).abs()

    def invalid_reason(self, g):
        """Why some ``d`` of ``g: (B, 2)`` is not ``±1`` (or an angle is invalid for the rotation part), or None if all
        are valid."""
        bad = (g[:, 1].abs() != 1)
        if bool(bad.any()):
            return f"{int(bad.sum())} determinant(s) that are not ±1, e.g. {float(g[bad][0, 1]):.6g}"
        return self.rotation.invalid_reason(g[:, :1])

    def tolerance(self, dtype):
        """[`Rotation2d`][equican_groups.rotation.Rotation2d]'s measured bounds: the mirror adds no error."""
        # Measured with equican.testing.measure_law_errors (seeds 0-1999, batch 4, 32×32 band-limited images,
        # interior crop): element laws at most 8 eps in both dtypes (associativity; the determinant is an exact ±1),
        # as Rotation2d's; action laws largest 0.0324 (float64) and 0.0330 (float32), the inverse action (homomorphism
        # 0.0274 / 0.0270), the same size as Rotation2d's 0.0314 / 0.0331: torch.flip moves pixels without arithmetic
        # and the sampling grid is symmetric. Rotation2d's bounds, 16 eps and 0.05 (1.5x), hold.
        return Tolerance(element=16 * torch.finfo(dtype).eps, action=0.05)


class Dihedral(O2, name="dihedral"):
    """D_n: the ``n`` rotations by multiples of ``2π/n`` and the ``n`` reflections, ``2n`` elements.

    Convention:
        Elements are ``(2πk/n, d)``, shape ``(B, 2)``, as in [`O2`][equican_groups.reflection.O2] (angles wrapped to
        ``[-π, π)``, ``d = ±1``, mirror of the width axis first). When ``n`` divides 4 the action on square images is
        exact (``torch.flip`` and ``torch.rot90``) and the group is ``exact``; otherwise the rotation interpolates. The
        unconstrained parameters are ``2n`` scores: score ``i < n`` selects ``(2πi/n, +1)``, score ``n + i`` selects
        ``(2πi/n, -1)``; [`from_unconstrained`][equican_groups.reflection.Dihedral.from_unconstrained] picks the highest (not
        differentiable: ``discrete = True``).

    Args:
        n: the number of rotations (default 4: the symmetries of the square), at most
            [`MAX_ORDER`][equican.validation.MAX_ORDER] (1024).
    """

    discrete = True

    def __init__(self, n: int = 4) -> None:
        self.n = V.require_int(n, low=1, high=V.MAX_ORDER, where="Dihedral", name="n")
        self.rotation: CyclicRotation2d = CyclicRotation2d(self.n)

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True when ``n`` divides 4: the action is then ``torch.flip`` and ``torch.rot90``, with no interpolation."""
        return self.rotation.exact

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """``(2n,)``: one score per element (rotations first, then reflections)."""
        return (2 * self.n,)

    def _element(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The elements of score indices ``index: (B,)`` in ``[0, 2n)``, shape ``(B, 2)``."""
        theta = self.rotation._angle(torch.remainder(index, self.n), dtype)
        d = torch.where(index < self.n, 1.0, -1.0).to(dtype)[:, None]
        return torch.cat([theta, d], dim=1)

    def from_unconstrained(self, z):
        """The element of the highest score: ``z: (B, 2n)`` to ``(B, 2)`` (see the Convention).

        Not differentiable in ``z`` (``discrete = True``); canonicalizers use a straight-through gradient instead.
        """
        return self._element(z.argmax(dim=1), z.dtype)

    def to_unconstrained(self, g):
        """One-hot scores of each element's index (``k`` for rotations, ``n + k`` for reflections): ``(B, 2n)``."""
        index = self.rotation._index(g[:, :1]) + self.n * (g[:, 1] < 0).long()
        return torch.nn.functional.one_hot(index, 2 * self.n).to(g.dtype)

    def tolerance(self, dtype):
        """0 action error (2 eps element error) when [`exact`][equican_groups.reflection.Dihedral.exact]; otherwise
        [`O2`][equican_groups.reflection.O2]'s bounds."""
        if self.exact:
            # Measured 0 for every law (n = 4 and n = 2, seeds 0-1999, both dtypes, white-noise images): angles come
            # from the one formula 2πk/n, d is an exact ±1, flip and rot90 move pixels without arithmetic. The
            # element bound allows one ulp of π (2 eps) for elements computed elsewhere, as CyclicRotation2d.
            return Tolerance(element=2 * torch.finfo(dtype).eps, action=0.0)
        # Interpolated rotations by multiples of 2π/n and exact mirrors: a subset of O(2)'s elements, so its bounds
        # hold (measured for n = 8 over seeds 0-199: largest action error 0.0251 in both dtypes, the homomorphism;
        # element error 0).
        return super().tolerance(dtype)
