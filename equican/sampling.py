"""Resampling primitives that groups build their actions from.

Convention: normalized coordinates ``[-1, 1]²`` with ``align_corners=True`` (``-1`` and ``1`` are the centres of the
border pixels), channel 0 of a coordinate field is x (along the width), channel 1 is y (down the rows), and samples
outside the image read 0 (zero padding). These helpers do no validation: the group methods calling them have
already validated their arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["linspace_grid", "affine_sample", "field_sample", "upsample_field", "identity_field",
           "grid_sample", "bilinear_sample", "twice_differentiable"]

_TWICE_DIFFERENTIABLE = contextvars.ContextVar("equican_twice_differentiable", default=False)


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Within this context every group action samples with [`bilinear_sample`][equican.sampling.bilinear_sample].

    ``torch.nn.functional.grid_sample`` has no double backward with respect to the grid, so code that
    differentiates a gradient of an action with respect to the element (unrolled optimization, gradient
    penalties) must run inside this context. It is slower; outside it the fused kernel is used.
    """
    token = _TWICE_DIFFERENTIABLE.set(True)
    try:
        yield
    finally:
        _TWICE_DIFFERENTIABLE.reset(token)


def bilinear_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with zero padding and ``align_corners=True``, written in differentiable torch ops.

    Same values as ``F.grid_sample(x, grid, align_corners=True)`` (``x: (B, C, H, W)``, ``grid: (B, P, Q, 2)``,
    result ``(B, C, P, Q)``), but every derivative of every order exists, in ``x`` and in ``grid``.
    """
    b, c, h, w = x.shape
    px = (grid[..., 0] + 1) * (w - 1) / 2
    py = (grid[..., 1] + 1) * (h - 1) / 2
    x0, y0 = px.detach().floor(), py.detach().floor()
    fx, fy = px - x0, py - y0
    flat = x.reshape(b, c, h * w)
    out = 0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().flatten(1)
            values = flat.gather(2, index[:, None, :].expand(b, c, -1)).view(b, c, *grid.shape[1:3])
            out = out + values * (wx * wy * valid.to(x.dtype))[:, None]
    return out


def grid_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear, zero-padded, ``align_corners=True`` sampling of ``x: (B, C, H, W)`` at ``grid: (B, P, Q, 2)``.

    The single sampling routine of every group action: the fused kernel, or
    [`bilinear_sample`][equican.sampling.bilinear_sample] inside
    [`twice_differentiable`][equican.sampling.twice_differentiable].
    """
    if _TWICE_DIFFERENTIABLE.get():
        return bilinear_sample(x, grid)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def linspace_grid(n: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``n`` normalized pixel-centre coordinates along one axis, shape ``(n,)``, from -1 to 1."""
    return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)


def identity_field(height: int, width: int, *, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The coordinates of an ``height × width`` node lattice, shape ``(batch, 2, height, width)``."""
    ys = linspace_grid(height, device=device, dtype=dtype)
    xs = linspace_grid(width, device=device, dtype=dtype)
    field = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])
    return field.expand(batch, 2, height, width).contiguous()


# Per-call overhead dominates small actions (a 32×32 grid_sample takes ~10 µs, each extra torch call ~2-4 µs), so
# the coordinate tensors every affine action needs are built once per (size, device, dtype) and reused. They are
# made outside inference mode (an inference tensor cannot be saved for a later backward) and never written to.
_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_LIMIT = 64
def _cached(kind: str, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (kind, height, width, device, dtype)
    value = _CACHE.get(key)
    if value is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        with torch.inference_mode(False):
            # "axis": the pixel-centre coordinates along one axis of length ``width``
            value = linspace_grid(width, device=device, dtype=dtype)
        _CACHE[key] = value
    return value


def affine_sample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Sample ``x: (B, C, H, W)`` at ``matrix @ (u, 1)`` for every output point ``u``; ``matrix: (B, 2, 3)``.

    The grid is built separably, an outer sum of a per-column and a per-row term: a fraction of the cost of
    ``F.affine_grid``'s batched matrix product, and elementwise, so an image gets the same result in any batch. (A
    matrix product with a cached homogeneous lattice was faster only for one image of 32×32, 33 against 42 µs, and
    2-2.3× slower from 8×32×32 up; measured on this CPU, one thread.)
    """
    _, _, h, w = x.shape
    xs = _cached("axis", 1, w, x.device, x.dtype)
    ys = _cached("axis", 1, h, x.device, x.dtype)
    # grid[b, i, j, c] = m[c, 0] * xs[j] + m[c, 1] * ys[i] + m[c, 2]
    col = matrix[:, :, 0, None] * xs  # (B, 2, W)
    row = matrix[:, :, 1, None] * ys + matrix[:, :, 2, None]  # (B, 2, H)
    grid = (col[:, :, None, :] + row[:, :, :, None]).permute(0, 2, 3, 1)
    return grid_sample(x, grid)


# Up to this many multiply-adds per coordinate map (H·N·M + H·W·M), bilinear upsampling runs as two small matrix
# products with cached interpolation matrices: one call per side instead of F.interpolate's Python checks and its
# kernel, which dominate at lattice sizes (a monotone element 5×5 -> 33×33, a 33×33 field -> a 14×14 token grid).
_MATMUL_UPSAMPLE = 131072


def _interpolation_matrix(size: int, nodes: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(size, nodes)``: row ``i`` holds the ``align_corners=True`` bilinear weights of output ``i`` on the nodes."""
    key = ("interp", size, nodes, device, dtype)
    value = _CACHE.get(key)
    if value is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        with torch.inference_mode(False):
            # The source coordinate as F.interpolate computes it: i·(nodes-1)/(size-1), in the dtype's precision.
            src = torch.arange(size, dtype=dtype) * ((nodes - 1) / (size - 1)) if size > 1 else torch.zeros(1, dtype=dtype)
            left = src.floor().clamp(max=nodes - 2).long() if nodes > 1 else torch.zeros(size, dtype=torch.long)
            frac = src - left.to(dtype)
            value = torch.zeros(size, nodes, dtype=dtype)
            rows = torch.arange(size)
            value[rows, left] = 1 - frac
            if nodes > 1:
                value[rows, left + 1] += frac
            if size > 1:  # the last output sits exactly on the last node (its computed source may round below it)
                value[-1] = 0
                value[-1, -1] = 1
            value = value.to(device)
        _CACHE[key] = value
    return value


def upsample_field(field: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear interpolation of a node field ``(B, 2, N, M)`` to ``(B, 2, height, width)`` (nodes at the corners)."""
    n, m = field.shape[-2:]
    if (n, m) == (height, width):
        return field
    if height * n * m + height * width * m <= _MATMUL_UPSAMPLE and n > 1 and m > 1:
        rows = _interpolation_matrix(height, n, field.device, field.dtype)
        cols = _interpolation_matrix(width, m, field.device, field.dtype)
        return torch.matmul(torch.matmul(rows, field), cols.t())
    return F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)


def field_sample(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Sample ``x: (B, C, H, W)`` at the piecewise-bilinear coordinate map given by ``field: (B, 2, N, M)``.

    ``field[b, :, i, j]`` is the point (x, y) sampled for the output at node (i, j) of an ``N × M`` lattice
    spanning the image; between nodes the map is bilinear.
    """
    grid = upsample_field(field, x.shape[-2], x.shape[-1]).permute(0, 2, 3, 1)
    return grid_sample(x, grid)

