"""Numerical guards of [`MonotoneScaling`][equican_groups.monotone.MonotoneScaling], kept beside the group: the chart's
overflow-free softmax input, the lattice bound, and the node residual that decides whether an inverse exists."""

from __future__ import annotations

import torch

from equican.errors import ConfigError

MAX_NODES = 1025
"""The largest lattice side ``N = cells·refine + 1``: one float64 element is then 17 MB; ``cells=10000`` would ask
for 51 GB per element."""


def check_lattice(cells: int, refine: int) -> None:
    """Raise [`ConfigError`][equican.errors.ConfigError] when ``cells·refine + 1`` exceeds ``MAX_NODES``."""
    if cells * refine + 1 > MAX_NODES:
        raise ConfigError(f"MonotoneScaling: expected cells·refine <= {MAX_NODES - 1} (a lattice of at most "
                          f"{MAX_NODES}² nodes), got cells={cells}, refine={refine} ({cells * refine})")


def softmax_logits(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``temperature·z`` shifted by its row maximum and floored at -1e4: the same softmax over the last dimension,
    shape of ``z``, but finite for every finite ``z`` (``3·3e38`` overflows float32 to inf, and inf - inf is NaN).

    The shift is softmax's own invariance; the floor changes nothing, since ``exp(-1e4)`` is 0 in float64 too.
    """
    shifted = (z - z.amax(dim=-1, keepdim=True)).clamp(min=-1e4 / temperature)
    return temperature * shifted


def node_residual(p: torch.Tensor, value: torch.Tensor, target: torch.Tensor, jac: torch.Tensor, *,
                  complete: bool) -> float:
    """The largest residual ``|g(p) - target|`` over the lattice nodes: inf when a node has no preimage
    (``complete`` False), a non-finite one, or a singular Jacobian there (a degenerate field: the closed-form
    solve or the final Newton step would divide by 0 and return NaN), and 0 for an empty batch.

    Args:
        p: the preimages ``(M, 2)``; value: the field at them ``(M, 2)``; target: the nodes ``(M, 2)``;
        jac: the field's Jacobian at them ``(M, 2, 2)``.
    """
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    if not complete or not bool(torch.isfinite(p).all()) or not bool((torch.isfinite(det) & (det != 0)).all()):
        return float("inf")
    if p.numel() == 0:
        return 0.0
    return float((value - target).abs().amax())
