"""Rotations about the image centre: continuous SO(2) and its cyclic subgroups C_n."""

from __future__ import annotations

import math

import torch

from equican.group import Tolerance
from equican import validation as V
from equican.errors import ShapeError
from equican.sampling import affine_sample

from ._one_parameter import OneParameterGroup


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to ``[-π, π)``."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


class Rotation2d(OneParameterGroup, name="rotation"):
    """SO(2): rotations of the image about its centre by an angle.

    Convention:
        An element is an angle ``θ`` in radians, shape ``(B, 1)``; any real value is valid (angles are taken mod
        2π). ``g·u`` rotates the point ``u`` by ``θ`` counter-clockwise *as seen on screen* (rows pointing down),
        so ``act(θ = π/2, x)`` equals ``torch.rot90(x, 1, dims=(-2, -1))`` on square images. Rotation is rigid in
        pixel units: on non-square images the normalized coordinates are rescaled to pixels, rotated, and scaled
        back. Samples leaving the image read 0. Composition adds angles.

    Args:
        max_angle: [`sample`][equican_groups.rotation.Rotation2d.sample] draws ``θ`` uniformly from ``[-max_angle, max_angle)``
            (default: the full circle).
    """

    def __init__(self, max_angle: float = math.pi) -> None:
        self.max_angle = V.require_number(max_angle, low=0, high=math.pi, where="Rotation2d", name="max_angle")

    @property
    def sample_bound(self) -> float:
        """``max_angle``: the half-width of the interval [`sample`][equican_groups.rotation.Rotation2d.sample] draws angles
        from."""
        return self.max_angle

    def compose(self, g, h):
        """The sum of the angles, wrapped to ``[-π, π)``; ``g``, ``h`` and the result have shape ``(B, 1)``."""
        return wrap_angle(g + h)

    def inverse(self, g):
        """The negated angles, wrapped to ``[-π, π)``, shape ``(B, 1)``."""
        return wrap_angle(-g)

    def distance(self, g, h):
        """The absolute angle difference mod 2π, in ``[0, π]``, shape ``(B,)`` for ``g, h: (B, 1)``."""
        return wrap_angle(g - h).abs()[:, 0]

    def tolerance(self, dtype):
        """Measured bounds: 16 eps of ``dtype`` for the element laws, 0.05 for the action laws."""
        # Measured with equican.testing.measure_law_errors: seeds 0-1999, batch 4, the default max_angle, action
        # laws on the interior of 32×32 band-limited images (the protocol of equican.testing.images).
        # element: largest error 10 eps in float64 and 8 eps in float32 (associativity: sums of angles up to 3π,
        # where one rounding is up to 4 eps, are wrapped twice); bound 16 eps.
        # action: largest error 0.0314 (float64) and 0.0331 (float32), both the inverse action, i.e. two bilinear
        # resamplings (homomorphism 0.0294 / 0.0282); bound 0.05, 1.5x.
        return Tolerance(element=16 * torch.finfo(dtype).eps, action=0.05)

    def act(self, g, x):
        """Rotate each image ``x: (B, C, H, W)`` about its centre by its angle ``g: (B, 1)``; result ``(B, C, H, W)``.

        Bilinear resampling, rigid in pixel units (see [`sampling_matrix`][equican_groups.rotation.Rotation2d.sampling_matrix]),
        zero outside the image.
        """
        return affine_sample(x, self.sampling_matrix(g, x.shape[-2], x.shape[-1]))

    @staticmethod
    def sampling_matrix(g: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The ``(B, 2, 3)`` affine map ``u ↦ g⁻¹·u`` in normalized coordinates of a ``height × width`` image."""
        c, s = torch.cos(g[:, 0]), torch.sin(g[:, 0])
        # In pixel units g⁻¹ is the rotation by -θ; conjugating by the normalized-to-pixel scaling
        # diag((W-1)/2, (H-1)/2) keeps it rigid on non-square images.
        aspect = (height - 1) / (width - 1)
        zero = torch.zeros_like(c)
        return torch.stack([torch.stack([c, -s * aspect, zero], -1), torch.stack([s / aspect, c, zero], -1)], 1)


class CyclicRotation2d(Rotation2d, name="cyclic"):
    """C_n: the rotations by multiples of 2π/n.

    Convention:
        Elements are angles ``2πk/n`` (shape ``(B, 1)``, wrapped to ``[-π, π)``), as in
        [`Rotation2d`][equican_groups.rotation.Rotation2d]. When ``n`` divides 4 the action on square images is exact
        (``torch.rot90``, no interpolation) and the group is ``exact``; otherwise it is the interpolated rotation. The
        unconstrained parameters are ``n`` scores, one per
        rotation: [`from_unconstrained`][equican_groups.rotation.CyclicRotation2d.from_unconstrained] picks the highest (not
            differentiable: ``discrete = True``).

    Args:
        n: the order of the group (default 4), at most [`MAX_ORDER`][equican.validation.MAX_ORDER] (1024): a
            config from disk or the command line cannot ask for a head of 10^12 scores.
    """

    discrete = True

    def __init__(self, n: int = 4) -> None:
        self.n = V.require_int(n, low=1, high=V.MAX_ORDER, where="CyclicRotation2d", name="n")

    @property
    def max_angle(self) -> float:  # the inherited Rotation2d state, fixed for a cyclic group
        """π: the inherited [`Rotation2d`][equican_groups.rotation.Rotation2d] setting, fixed for a cyclic group
        ([`sample`][equican_groups.rotation.CyclicRotation2d.sample] draws ``k``)."""
        return math.pi

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True when ``n`` divides 4: the action is then ``torch.rot90``, with no interpolation."""
        return 4 % self.n == 0

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """``(n,)``: one score per rotation; [`from_unconstrained`][equican_groups.rotation.CyclicRotation2d.from_unconstrained]
        picks the highest."""
        return (self.n,)

    def _index(self, g: torch.Tensor) -> torch.Tensor:
        """The integer k of each element ``2πk/n``, shape ``(B,)``, in ``[0, n)``."""
        return torch.remainder(torch.round(g[:, 0] * self.n / (2 * math.pi)), self.n).long()

    def _angle(self, k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return wrap_angle((2 * math.pi / self.n) * k.to(dtype)[:, None])

    def invalid_reason(self, g):
        """Why some angle of ``g: (B, 1)`` is not a multiple of ``2π/n`` (up to rounding), or None if all are."""
        # In float64 with one float32-sized tolerance, whatever g's dtype: a float32 element cast to float64 stays
        # valid, and a float32 angle so large that its spacing exceeds 2π/n (e.g. 1e10) is not waved through by
        # rounding its own index.
        k = g[:, 0].double() * (self.n / (2 * math.pi))
        bad = (k - torch.round(k)).abs() > 1e3 * torch.finfo(torch.float32).eps * self.n
        if bool(bad.any()):
            return f"{int(bad.sum())} angle(s) that are not multiples of 2π/{self.n}, e.g. {float(g[bad][0, 0]):.9g}"
        return None

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        """``batch`` elements ``2πk/n`` with ``k`` uniform in ``{0, ..., n-1}`` (from ``generator``), shape
        ``(batch, 1)``."""
        k = torch.randint(self.n, (batch,), generator=generator, device=generator.device).to(device)
        return self._angle(k, dtype)

    def compose(self, g, h):
        """``2π(k_g + k_h mod n)/n``, wrapped to ``[-π, π)``; ``g``, ``h`` and the result have shape ``(B, 1)``."""
        # Snap to the lattice so that long products do not drift off it.
        return self._angle(torch.remainder(self._index(g) + self._index(h), self.n), g.dtype)

    def inverse(self, g):
        """``2π(-k mod n)/n``, wrapped to ``[-π, π)``, shape ``(B, 1)``."""
        return self._angle(torch.remainder(-self._index(g), self.n), g.dtype)

    def from_unconstrained(self, z):
        """The rotation of the highest score: scores ``z: (B, n)`` to angles ``2πk/n``, ``k = argmax z``, ``(B, 1)``.

        Not differentiable in ``z`` (``discrete = True``); canonicalizers use a straight-through gradient instead.
        """
        return self._angle(z.argmax(dim=1), z.dtype)

    def to_unconstrained(self, g):
        """One-hot scores of the rotation index ``k`` of each element: ``g: (B, 1)`` to ``(B, n)``."""
        return torch.nn.functional.one_hot(self._index(g), self.n).to(g.dtype)

    def tolerance(self, dtype):
        """0 action error (2 eps element error) when [`exact`][equican_groups.rotation.CyclicRotation2d.exact]; otherwise
        [`Rotation2d`][equican_groups.rotation.Rotation2d]'s bounds."""
        if self.exact:
            # Measured 0 for every law (n = 4, seeds 0-1999, both dtypes, white-noise images): every element is
            # computed by the one formula 2πk/n, wrapped, and rot90 moves pixels without arithmetic. The element
            # bound allows one ulp of π (2 eps) for elements computed elsewhere; the action bound is 0.
            return Tolerance(element=2 * torch.finfo(dtype).eps, action=0.0)
        # Interpolated rotations by multiples of 2π/n: a subset of Rotation2d's elements, so its bounds hold
        # (measured for n = 8 over seeds 0-199: largest action error 0.0254 in both dtypes, element error 0).
        return super().tolerance(dtype)

    def act(self, g, x):
        """Rotate ``x: (B, C, H, W)`` by ``g: (B, 1)``; result ``(B, C, H, W)``.

        Exactly, with ``torch.rot90``, when ``n`` divides 4 (rotations by ±90° need square images, else
        [`ShapeError`][equican.errors.ShapeError]); otherwise the interpolated rotation of
        [`Rotation2d`][equican_groups.rotation.Rotation2d].
        """
        if not self.exact:
            return super().act(g, x)
        k = torch.remainder(self._index(g) * (4 // self.n), 4)
        if x.shape[-1] != x.shape[-2] and bool((k % 2 == 1).any()):
            raise ShapeError(f"CyclicRotation2d.act: expected square images for rotations by ±90°, "
                             f"got x of shape {tuple(x.shape)}")
        out = torch.empty_like(x)
        for quarter in range(4):
            idx = (k == quarter).nonzero()[:, 0]
            if idx.numel():
                out[idx] = torch.rot90(x[idx], quarter, dims=(-2, -1))
        return out
