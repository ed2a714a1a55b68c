"""Interoperation with kornia: group elements as kornia's pixel-space affine matrices, and back.

kornia describes a geometric transformation by a *pixel-space* matrix ``M`` (``(B, 2, 3)`` for
``kornia.geometry.transform.warp_affine``, ``(B, 3, 3)`` for ``kornia.augmentation.RandomAffine.transform_matrix``):
the output pixel ``p`` (column, row; pixel centres at integers) reads the input at ``M⁻¹ p``. equican's groups act
in normalized coordinates: ``act(g, x)(u) = x(g⁻¹·u)`` with ``u ∈ [-1, 1]²`` and ``±1`` at the centres of the border
pixels (``align_corners=True``). The two agree when ``M = D N D⁻¹``, where ``N`` is the element's point map
``u ↦ g·u`` as a homogeneous 3×3 matrix and ``D`` maps normalized coordinates to pixel indices; that conjugation is
kornia's own ``denormalize_homography`` (and ``normalize_homography`` the other way), which is what this module
calls.

A pixel matrix given to the affine group unconverted is a valid element (any ``det A > 0`` is), so nothing can
detect the mistake and the image comes out differently; convert with
[`from_kornia_matrix`][equican.interop.from_kornia_matrix].

```python
import torch, equican
from kornia.geometry.transform import warp_affine
from equican.interop import to_kornia_matrix

affine = equican.make_group("affine")
g = affine.sample(4, generator=torch.Generator().manual_seed(0))
x = torch.rand(4, 3, 32, 48)
m = to_kornia_matrix(affine, g, (32, 48))                   # (4, 3, 3), pixel space
y = warp_affine(x, m[:, :2], (32, 48), align_corners=True)  # ≈ affine.act(g, x), to ~3e-6
```

Groups with a matrix form: ``affine`` ([`Affine2d`][equican_groups.affine.Affine2d]: every element),
``rotation`` and ``cyclic`` (rotations about the image centre, rigid in pixel units) and ``scale`` (isotropic scaling
about the centre), and their subclasses. Another group registers its own with
[`register_matrix_form`][equican.interop.register_matrix_form]. Both directions work for any image size, square or
not, and match ``warp_affine`` with ``align_corners`` True or False (the pixel matrix is in pixel indices either way:
checked against kornia in ``tests/test_interop.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import validation as V
from .errors import ConfigError, InvalidElementError, ShapeError
from .group import Group

__all__ = ["to_kornia_matrix", "from_kornia_matrix", "to_normalized_matrix", "from_normalized_matrix",
           "register_matrix_form", "has_matrix_form"]


@dataclass(frozen=True)
class _MatrixForm:
    """``to(g, h, w) -> (B, 3, 3)`` normalized point maps; ``back(n, h, w) -> (B, *param_shape)`` elements."""

    to: Callable[[torch.Tensor, int, int], torch.Tensor]
    back: Callable[[torch.Tensor, int, int], torch.Tensor]


_FORMS: dict[str, _MatrixForm] = {}


def register_matrix_form(name: str, to: Callable[[torch.Tensor, int, int], torch.Tensor],
                         back: Callable[[torch.Tensor, int, int], torch.Tensor]) -> None:
    """Give the group registered as ``name`` (and its subclasses) a matrix form.

    Args:
        name: the group's registry name.
        to: ``to(g, height, width)``: elements ``(B, *param_shape)`` to their point maps ``u ↦ g·u`` in normalized
            coordinates of a ``height × width`` image, homogeneous ``(B, 3, 3)``.
        back: ``back(n, height, width)``: the inverse of ``to``, normalized ``(B, 3, 3)`` to elements; it may
            return the nearest element, [`from_normalized_matrix`][equican.interop.from_normalized_matrix] checks
            that it reproduces ``n``.
    """
    _FORMS[name] = _MatrixForm(to, back)


def _homogeneous(m: torch.Tensor) -> torch.Tensor:
    last = torch.zeros_like(m[:, :1, :])
    last[:, 0, 2] = 1
    return torch.cat([m[:, :2], last], dim=1)


def _rotation_to(g: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # The forward map g·u is the rotation's own sampling matrix (the map u ↦ g⁻¹·u) of the inverse angle.
    from equican_groups.rotation import Rotation2d

    return _homogeneous(Rotation2d.sampling_matrix(-g, h, w))


def _rotation_back(n: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # n[:2, :2] = [[cos, sin·a], [-sin/a, cos]] with a = (h-1)/(w-1) (rigid in pixel units): read sin from both
    # off-diagonal entries.
    aspect = (h - 1) / (w - 1)
    sin = 0.5 * (n[:, 0, 1] / aspect - n[:, 1, 0] * aspect)
    cos = 0.5 * (n[:, 0, 0] + n[:, 1, 1])
    return torch.atan2(sin, cos)[:, None]


def _scale_to(g: torch.Tensor, h: int, w: int) -> torch.Tensor:
    s = torch.exp(g[:, 0])
    eye = torch.eye(3, dtype=g.dtype, device=g.device).expand(g.shape[0], 3, 3).clone()
    eye[:, 0, 0] = s
    eye[:, 1, 1] = s
    return eye


def _scale_back(n: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (0.5 * (torch.log(n[:, 0, 0].abs()) + torch.log(n[:, 1, 1].abs())))[:, None]


def _builtin_forms() -> None:
    if not _FORMS:
        _FORMS["affine"] = _MatrixForm(lambda g, h, w: _homogeneous(g), lambda n, h, w: n[:, :2].contiguous())
        _FORMS["rotation"] = _MatrixForm(_rotation_to, _rotation_back)
        _FORMS["scale"] = _MatrixForm(_scale_to, _scale_back)


def _form(group: Group, where: str) -> _MatrixForm:
    _builtin_forms()
    if not isinstance(group, Group):
        raise ConfigError(f"{where}: expected group to be an equican.Group, got {type(group).__name__}")
    for cls in type(group).__mro__:  # a subclass (cyclic of rotation) inherits its parent's form
        name = getattr(cls, "name", "")
        if name in _FORMS and issubclass(cls, Group):
            return _FORMS[name]
    raise ConfigError(f"{where}: expected a group whose elements are affine maps (one of "
                      f"{', '.join(sorted(_FORMS))}, or one given a form with register_matrix_form), got "
                      f"{type(group).__name__} ({group.name!r})")


def _size(size: object, where: str) -> tuple[int, int]:
    ok = isinstance(size, (tuple, list, torch.Size)) and len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 2 for s in size)
    if not ok:
        raise ShapeError(f"{where}: expected size to be (height, width) with both >= 2, got {size!r}")
    return int(size[0]), int(size[1])


def to_normalized_matrix(group: Group, g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The point maps ``u ↦ g·u`` of elements ``g: (B, *param_shape)`` in normalized coordinates of an image of
    ``size = (height, width)``, as homogeneous matrices ``(B, 3, 3)`` (for the affine group, ``g`` itself with the
    row ``(0, 0, 1)`` appended).

    Raises:
        ConfigError: the group has no matrix form. ShapeError, DTypeError, InvalidElementError: invalid ``g`` or
            ``size``.
    """
    where = "to_normalized_matrix"
    form = _form(group, where)
    h, w = _size(size, where)
    group.check(g, where=where)
    return form.to(g, h, w)


def from_normalized_matrix(group: Group, n: torch.Tensor, size: tuple[int, int], *,
                           atol: float | None = None) -> torch.Tensor:
    """The elements ``(B, *param_shape)`` whose point maps are ``n: (B, 3, 3)`` (or ``(B, 2, 3)``) in normalized
    coordinates of an image of ``size = (height, width)``.

    Args:
        group: a group with a matrix form.
        n: normalized point maps.
        size: ``(height, width)``.
        atol: how far (largest entry of the 2×3 part) the element's own matrix may be from ``n``; None: ``1e-4`` in
            float32 and ``1e-9`` in float64 times the largest entry of ``n``.

    Raises:
        InvalidElementError: some matrix is not an element of the group (a shear given to the rotation group, a
            reflection given to the affine group); the message says which and how far.
    """
    where = f"from_normalized_matrix({group.name!r})" if isinstance(group, Group) else "from_normalized_matrix"
    form = _form(group, where)
    h, w = _size(size, where)
    V.require_tensor(n, where=where, name="the matrix")
    if n.ndim != 3 or n.shape[1:] not in ((2, 3), (3, 3)):
        raise ShapeError(f"{where}: expected a matrix of shape (B, 2, 3) or (B, 3, 3), got {V.fmt_shape(n.shape)}")
    V.require_float(n, where=where, name="the matrix")
    V.require_finite(n, where=where, name="the matrix")
    if n.shape[1] == 3 and n.shape[0]:
        last = (n[:, 2] - n.new_tensor([0.0, 0.0, 1.0])).abs().max()
        if float(last) > 1e-6 * max(float(n.abs().max()), 1.0):
            raise InvalidElementError(f"{where}: expected affine matrices (last row (0, 0, 1)), got a projective one "
                                      f"(last row off by {float(last):.3g})")
    n = _homogeneous(n)
    g = form.back(n, h, w)
    if g.shape[0]:
        scale = float(n[:, :2].abs().max())
        tol = atol if atol is not None else (1e-9 if n.dtype == torch.float64 else 1e-4) * max(scale, 1.0)
        finite = bool(torch.isfinite(g).all())
        gap = (form.to(g, h, w)[:, :2] - n[:, :2]).abs().flatten(1).amax(dim=1) if finite else None
        if not finite or bool((gap > tol).any()):
            worst = "a non-finite element" if gap is None else f"{float(gap.max()):.3g} (tolerance {tol:.3g})"
            raise InvalidElementError(f"{where}: expected matrices of the group's elements "
                                      f"({type(group).__name__}), got some that are not: largest distance to the "
                                      f"group's matrix {worst}")
    group.check(g, where=where)
    return g


def to_kornia_matrix(group: Group, g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """kornia's pixel-space matrices ``(B, 3, 3)`` of elements ``g: (B, *param_shape)`` acting on images of
    ``size = (height, width)``.

    ``kornia.geometry.transform.warp_affine(x, m[:, :2], size)`` then equals ``group.act(g, x)`` up to
    interpolation rounding (measured ≤ 3e-6 in float32), and so does kornia's ``warp_perspective`` with the 3×3
    matrix.
    """
    from kornia.geometry.conversions import denormalize_homography

    n = to_normalized_matrix(group, g, size)
    h, w = _size(size, "to_kornia_matrix")
    return denormalize_homography(n, (h, w), (h, w), align_corners=True)


def from_kornia_matrix(group: Group, m: torch.Tensor, size: tuple[int, int], *,
                       atol: float | None = None) -> torch.Tensor:
    """The elements ``(B, *param_shape)`` of kornia pixel-space matrices ``m: (B, 2, 3)`` or ``(B, 3, 3)`` (as
    ``warp_affine`` takes them, or ``RandomAffine.transform_matrix`` after a call) for images of
    ``size = (height, width)``: ``group.act(g, x)`` then equals ``warp_affine(x, m[:, :2], size)``.

    Args:
        group: a group with a matrix form (``affine``, ``rotation``, ``cyclic``, ``scale``, ...).
        m: pixel-space matrices.
        size: ``(height, width)`` of the images.
        atol: see [`from_normalized_matrix`][equican.interop.from_normalized_matrix] (in normalized units).

    Raises:
        InvalidElementError: a matrix that is not an element of ``group``. ShapeError, DTypeError, NonFiniteError:
            a malformed ``m`` or ``size``. ConfigError: a group without a matrix form.
    """
    from kornia.geometry.conversions import normalize_homography

    where = "from_kornia_matrix"
    h, w = _size(size, where)
    V.require_tensor(m, where=where, name="m")
    if m.ndim != 3 or m.shape[1:] not in ((2, 3), (3, 3)):
        raise ShapeError(f"{where}: expected m of shape (B, 2, 3) or (B, 3, 3), got {V.fmt_shape(m.shape)}")
    V.require_float(m, where=where, name="m")
    full = m if m.shape[1] == 3 else _homogeneous(m)  # a projective last row is refused after normalizing
    n = normalize_homography(full, (h, w), (h, w), align_corners=True)
    return from_normalized_matrix(group, n, (h, w), atol=atol)


def has_matrix_form(group: Group) -> bool:
    """Whether [`to_kornia_matrix`][equican.interop.to_kornia_matrix] works for ``group``."""
    try:
        _form(group, "has_matrix_form")
    except ConfigError:
        return False
    return True

