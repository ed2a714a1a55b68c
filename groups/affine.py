"""Orientation-preserving affine maps of the image plane: GL⁺(2) ⋉ R²."""

from __future__ import annotations

import math

import torch

from equican.group import Group, Tolerance
from equican import validation as V
from equican.sampling import affine_sample


class Affine2d(Group, name="affine"):
    """GL⁺(2) ⋉ R²: ``u ↦ A u + t`` with ``det A > 0``, in normalized coordinates.

    Convention:
        An element is the matrix ``[A | t]``, shape ``(B, 2, 3)``, of the point map ``g·u = A u + t`` on normalized
        coordinates (x right, y down, ``[-1, 1]²``; on non-square images the two axes are scaled independently).
        Valid iff ``det A > 0``. Composition is the matrix product of the homogeneous 3×3 forms. Samples leaving
        the image read 0.

        The unconstrained chart has 6 parameters ``z = (θ, a, b, c, t_x, t_y)``:
        ``A = R(θ) [[e^a, c], [0, e^b]]`` where ``R(θ)`` rotates counter-clockwise on screen (as
        [`Rotation2d`][equican_groups.rotation.Rotation2d]); every ``A`` with positive determinant has exactly one such
        factorization (a QR decomposition), so the chart is a bijection onto the group (``θ`` taken mod 2π).

    [`sample`][equican_groups.affine.Affine2d.sample] draws each chart coordinate uniformly from ``[-max, max)`` of its bound:

    Args:
        max_angle: bound of the rotation angle ``θ`` (radians, at most π).
        max_log_scale: bound of the log-scales ``a`` and ``b``.
        max_shear: bound of the shear ``c``.
        max_translation: bound of the translations ``t_x`` and ``t_y`` (normalized units).
    """

    def __init__(self, max_angle: float = math.pi, max_log_scale: float = 0.2, max_shear: float = 0.2,
                 max_translation: float = 0.1) -> None:
        for key, value, hi in (("max_angle", max_angle, math.pi), ("max_log_scale", max_log_scale, 5.0),
                               ("max_shear", max_shear, 5.0), ("max_translation", max_translation, 2.0)):
            V.require_number(value, low=0, high=hi, where="Affine2d", name=key)
        self.max_angle = float(max_angle)
        self.max_log_scale = float(max_log_scale)
        self.max_shear = float(max_shear)
        self.max_translation = float(max_translation)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(2, 3)``: the matrix ``[A | t]``."""
        return (2, 3)

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """``(6,)``: the chart ``(θ, a, b, c, t_x, t_y)``."""
        return (6,)

    def identity(self, batch, *, device=None, dtype=None):
        """``batch`` copies of ``[I | 0]``, shape ``(batch, 2, 3)``."""
        return torch.eye(2, 3, device=device, dtype=dtype).expand(batch, 2, 3).clone()

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        """``batch`` elements whose chart coordinates are uniform within the bounds, shape ``(batch, 2, 3)``."""
        bounds = torch.tensor([self.max_angle, self.max_log_scale, self.max_log_scale, self.max_shear,
                               self.max_translation, self.max_translation], dtype=dtype)
        z = self.uniform((batch, 6), -1.0, 1.0, generator=generator, device=device, dtype=dtype)
        return self.from_unconstrained(z * bounds.to(device))

    def invalid_reason(self, g):
        """Why some ``A`` of ``g: (B, 2, 3)`` has ``det A <= 0``, or None if none has."""
        det = torch.linalg.det(g[:, :, :2])
        bad = det <= 0
        if bool(bad.any()):
            return f"{int(bad.sum())} matrix/matrices with det A <= 0 (e.g. {float(det[bad][0]):.4g})"
        return None

    @staticmethod
    def _homogeneous(g: torch.Tensor) -> torch.Tensor:
        last = torch.zeros_like(g[:, :1, :])
        last[:, 0, 2] = 1
        return torch.cat([g, last], dim=1)

    def compose(self, g, h):
        """The product of the homogeneous 3×3 forms; ``g``, ``h`` and the result have shape ``(B, 2, 3)``."""
        return (self._homogeneous(g) @ self._homogeneous(h))[:, :2]

    def inverse(self, g):
        """``[A⁻¹ | -A⁻¹ t]``, shape ``(B, 2, 3)``."""
        # inv_ex does not raise on a singular matrix (its rows come out non-finite): valid elements (det A > 0, checked
        # on every public call) are unaffected, and a canonicalizer's degenerate prediction, acted on unchecked,
        # falls back for that input alone instead of failing the batch.
        a_inv = torch.linalg.inv_ex(g[:, :, :2])[0]
        return torch.cat([a_inv, -a_inv @ g[:, :, 2:]], dim=2)

    # distance: the base class's Euclidean distance of the parameters, here the Frobenius norm of g - h.

    def tolerance(self, dtype):
        """Measured bounds: 6 eps of ``dtype`` for the element laws, 0.053 for the action laws."""
        # Measured with equican.testing.measure_law_errors: seeds 0-999, batch 4, the default sampling bounds,
        # action laws on the interior of 32×32 band-limited images (the protocol of equican.testing.images).
        # element: largest error 2.5 eps (float64, associativity) and 3.5 eps (float32, chart round trip): 2×2
        # products and inverses of well-conditioned matrices; bound 6 eps.
        # action: largest error 0.0352 (float64) and 0.0339 (float32), inverse action (homomorphism 0.0306 /
        # 0.0267); bound 0.053, 1.5x.
        return Tolerance(element=6 * torch.finfo(dtype).eps, action=0.053)

    def act(self, g, x):
        """Warp ``x: (B, C, H, W)`` by ``g: (B, 2, 3)``, sampling at ``g⁻¹·u``; result ``(B, C, H, W)``.

        Bilinear resampling, zero outside the image.
        """
        return affine_sample(x, self.inverse(g))

    def from_unconstrained(self, z):
        """``z = (θ, a, b, c, t_x, t_y)``, shape ``(B, 6)``, to ``[R(θ) [[e^a, c], [0, e^b]] | t]``, ``(B, 2, 3)``."""
        theta, a, b, c, tx, ty = z.unbind(dim=1)
        cos, sin = torch.cos(theta), torch.sin(theta)
        ea, eb = torch.exp(a), torch.exp(b)
        # R(θ) = [[cos, sin], [-sin, cos]] (counter-clockwise on screen, rows pointing down) times [[e^a, c], [0, e^b]]
        row0 = torch.stack([cos * ea, cos * c + sin * eb, tx], dim=1)
        row1 = torch.stack([-sin * ea, -sin * c + cos * eb, ty], dim=1)
        return torch.stack([row0, row1], dim=1)

    def to_unconstrained(self, g):
        """The chart coordinates ``(B, 6)`` of ``g: (B, 2, 3)``, from the QR factorization of ``A``.

        ``θ`` comes out in ``(-π, π]``; exact inverse of
        [`from_unconstrained`][equican_groups.affine.Affine2d.from_unconstrained] up to rounding.
        """
        a0, a1 = g[:, 0, 0], g[:, 1, 0]  # first column = e^a (cos θ, -sin θ)
        ea = torch.hypot(a0, a1)
        cos, sin = a0 / ea, -a1 / ea
        # Rows of R(θ)ᵀ applied to the second column give the upper-triangular entries c and e^b.
        c = cos * g[:, 0, 1] - sin * g[:, 1, 1]
        eb = sin * g[:, 0, 1] + cos * g[:, 1, 1]
        theta = torch.atan2(sin, cos)
        return torch.stack([theta, torch.log(ea), torch.log(eb), c, g[:, 0, 2], g[:, 1, 2]], dim=1)
