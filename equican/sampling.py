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


def affine_sample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Sample ``x: (B, C, H, W)`` at ``matrix @ (u, 1)`` for every output point ``u``; ``matrix: (B, 2, 3)``.

    The sampling grid is built separably (an outer sum of a per-column and a per-row term), which costs a small
    fraction of ``F.affine_grid``'s batched matrix product at 224×224 (measured in benchmarks/group_actions.py).
    """
    b, _, h, w = x.shape
    xs = linspace_grid(w, device=x.device, dtype=x.dtype)
    ys = linspace_grid(h, device=x.device, dtype=x.dtype)
    # grid[b, i, j, c] = m[c, 0] * xs[j] + m[c, 1] * ys[i] + m[c, 2]
    col = matrix[:, :, 0, None] * xs  # (B, 2, W)
    row = matrix[:, :, 1, None] * ys + matrix[:, :, 2, None]  # (B, 2, H)
    grid = (col[:, :, None, :] + row[:, :, :, None]).permute(0, 2, 3, 1)
    return grid_sample(x, grid)


def upsample_field(field: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear interpolation of a node field ``(B, 2, N, M)`` to ``(B, 2, height, width)`` (nodes at the corners)."""
    if field.shape[-2:] == (height, width):
        return field
    return F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)


def field_sample(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Sample ``x: (B, C, H, W)`` at the piecewise-bilinear coordinate map given by ``field: (B, 2, N, M)``.

    ``field[b, :, i, j]`` is the point (x, y) sampled for the output at node (i, j) of an ``N × M`` lattice
    spanning the image; between nodes the map is bilinear.
    """
    grid = upsample_field(field, x.shape[-2], x.shape[-1]).permute(0, 2, 3, 1)
    return grid_sample(x, grid)

