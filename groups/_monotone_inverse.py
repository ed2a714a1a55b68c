"""Inversion numerics of [`MonotoneScaling`][equican_groups.monotone.MonotoneScaling], kept beside the group.

Everything here works on validated lattice fields ``(B, 2, N, M)`` (the group's sampling maps, normalized
coordinates, channel 0 x and channel 1 y) and does no validation of its own: the closed-form preimages of lattice
points under a piecewise-bilinear field, the per-pixel Newton refinement of an interpolated inverse, and the
helpers both share (cell pieces, point location, bilinear evaluation with Jacobians).
"""

from __future__ import annotations

import torch

from equican.sampling import identity_field

from ._monotone_checks import node_residual

# Residual (in normalized units, times the dtype's eps) at which the per-pixel Newton iteration counts as
# converged, and its iteration limit. The differentiable step needs a converged root for an exact gradient.
_NEWTON_TOL = 64
_NEWTON_ITERS = 4
# Targets within this distance (in cell / lattice-index units) of a cell's image are tried against that cell, and
# preimages this far outside a cell are accepted (clamped onto it), so that targets on a shared edge are claimed.
_SLACK = 1e-4


def _cramer(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, r0: torch.Tensor,
            r1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``[[a, b], [c, d]] @ (x0, x1) = (r0, r1)`` elementwise (all tensors of one shape)."""
    det = a * d - b * c
    return (d * r0 - b * r1) / det, (a * r1 - c * r0) / det


def _solve2x2(jac: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``jac @ step = rhs`` pointwise; ``jac: (..., 2, 2)``, ``rhs: (..., 2)`` -> ``(..., 2)``."""
    return torch.stack(_cramer(jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1], rhs[..., 0],
                               rhs[..., 1]), dim=-1)


def _lattice_points(height: int, width: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalized coordinates ``(x, y)`` of a ``height × width`` lattice, channels last: ``(height, width, 2)``."""
    return identity_field(height, width, batch=1, device=device, dtype=dtype)[0].permute(1, 2, 0)


def _bilinear_eval(field: torch.Tensor, batch: torch.Tensor, points: torch.Tensor, *, jacobian: bool = True,
                   coef: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Value and Jacobian of the piecewise-bilinear maps ``field`` at scattered points, differentiable in both.

    Args:
        field: ``(B, 2, N, M)`` node values.
        batch: ``(K,)`` long, the element each point belongs to.
        points: ``(K, 2)`` normalized coordinates ``(x, y)``; outside ``[-1, 1]²`` the border cells are extended.
        jacobian: also return the Jacobian (None otherwise).
        coef: the field's pieces (``_cell_pieces(field)[0]``) when already computed; they are then not
            differentiable in ``field``.

    Returns:
        ``(value, jac)``: ``value: (K, 2)``; ``jac: (K, 2, 2)``, ``jac[:, a, b] = ∂value_a/∂u_b``, one-sided within
        the cell that holds the point, so exact for its bilinear piece.
    """
    n, m = field.shape[-2:]
    sx, sy = (m - 1) / 2, (n - 1) / 2  # normalized -> node-index units
    coef = _cell_pieces(field)[0] if coef is None else coef
    px, py = (points[:, 0] + 1) * sx, (points[:, 1] + 1) * sy
    vx, vy, *derivatives = _piece_eval(coef, *_locate(px, py, batch, n, m), jacobian=jacobian)
    value = torch.stack([vx / sx - 1, vy / sy - 1], dim=1)
    if not jacobian:
        return value, None
    jxs, jys, jxt, jyt = derivatives
    jac = torch.stack([torch.stack([jxs, jxt * (sy / sx)], dim=1), torch.stack([jys * (sx / sy), jyt], dim=1)], dim=1)
    return value, jac


def _locate(px: torch.Tensor, py: torch.Tensor, batch: torch.Tensor, n: int,
            m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The lattice cell holding each point and the point's local coordinates in it.

    Args:
        px, py: ``(K,)`` points in node-index units (``0 … M-1`` and ``0 … N-1``); batch: ``(K,)`` their elements.
        n, m: the lattice size ``N × M``.

    Returns:
        ``(cell, s, t)``: the cell index as in ``_cell_pieces`` and ``(s, t)``, in ``[0, 1]`` inside the
        lattice (the border cells are extended beyond it).
    """
    j = px.detach().floor().clamp_(0, m - 2)
    i = py.detach().floor().clamp_(0, n - 2)
    return (batch * (n - 1) + i.long()) * (m - 1) + j.long(), px - j, py - i


def _piece_eval(coef: torch.Tensor, cell: torch.Tensor, s: torch.Tensor, t: torch.Tensor, *,
                jacobian: bool = True) -> tuple[torch.Tensor, ...]:
    """Value, and Jacobian if asked, of the bilinear pieces ``coef: (8, K)`` (``_cell_pieces``) at points.

    Returns:
        ``(vx, vy)``, then ``(jxs, jys, jxt, jyt)`` (the derivatives along s and along t) if ``jacobian``; each
        ``(P,)`` for ``cell, s, t`` of shape ``(P,)``.
    """
    ax, bx, cx, dx, ay, by, cy, dy = coef.index_select(1, cell).unbind(0)
    jxs, jys = bx + dx * t, by + dy * t
    vx, vy = ax + jxs * s + cx * t, ay + jys * s + cy * t
    if not jacobian:
        return vx, vy
    return vx, vy, jxs, jys, cx + dx * s, cy + dy * s


def _newton(coef: torch.Tensor, batch: torch.Tensor, px: torch.Tensor, py: torch.Tensor, tx: torch.Tensor,
            ty: torch.Tensor, n: int, *, tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton's method for ``field(p) = target`` at scattered points, in node-index units.

    Args:
        coef: ``(8, K)`` the pieces of an ``n × n`` lattice field (``_cell_pieces``).
        batch: ``(P,)`` each point's element.
        px, py: ``(P,)`` the starting points; tx, ty: ``(P,)`` the targets.
        tol: the largest residual (either coordinate) that counts as converged.

    Returns:
        ``(px, py, done)``, ``(P,)`` each: the converged points (the starting points where not converged) and
        whether each converged. Converged points leave the iteration, so the later steps cost little.
    """
    out_x, out_y = px.clone(), py.clone()
    done = torch.zeros(px.shape, dtype=torch.bool, device=px.device)
    live = torch.arange(px.numel(), device=px.device)
    for step in range(_NEWTON_ITERS + 1):
        vx, vy, jxs, jys, jxt, jyt = _piece_eval(coef, *_locate(px, py, batch, n, n))
        rx, ry = vx - tx, vy - ty
        # The start is an interpolated value, practically never a root: the residual is tested after each step (on
        # default-strength warps at 224×224, 78% converge after one step and 99% after two).
        if step > 0:
            ok = torch.maximum(rx.abs(), ry.abs()) <= tol
            finished = torch.nonzero(ok).squeeze(1)
            at = live.index_select(0, finished)
            done[at] = True
            out_x[at], out_y[at] = px.index_select(0, finished), py.index_select(0, finished)
            if step == _NEWTON_ITERS or finished.numel() == live.numel():
                break
            if finished.numel():
                keep = torch.nonzero(~ok).squeeze(1)
                live, px, py, tx, ty, batch, rx, ry, jxs, jys, jxt, jyt = (
                    v.index_select(0, keep) for v in (live, px, py, tx, ty, batch, rx, ry, jxs, jys, jxt, jyt))
        ds, dt = _cramer(jxs, jxt, jys, jyt, rx, ry)
        # A singular Jacobian (on a fold line) gives a non-finite step: stay, and leave the point to the fallback.
        move = ds.isfinite() & dt.isfinite()
        px = torch.where(move, px - ds, px).clamp_(0, n - 1)
        py = torch.where(move, py - dt, py).clamp_(0, n - 1)
    return out_x, out_y, done


def _corner_jacobians(g: torch.Tensor) -> torch.Tensor:
    """Cross products of the cell edges at the four corners of every lattice cell, shape ``(B, 4, N-1, N-1)``.

    A bilinear cell map preserves orientation iff all four are positive (its Jacobian determinant is affine in the
    cell coordinates, so it is positive everywhere iff it is at the corners).
    """
    p00, p01, p10, p11 = g[:, :, :-1, :-1], g[:, :, :-1, 1:], g[:, :, 1:, :-1], g[:, :, 1:, 1:]

    def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    return torch.stack([cross(p01 - p00, p10 - p00), cross(p01 - p00, p11 - p01),
                        cross(p11 - p10, p10 - p00), cross(p11 - p10, p11 - p01)], dim=1)


def _poor_cells(coef: torch.Tensor, inv: torch.Tensor, height: int, width: int, *, tol: float) -> torch.Tensor:
    """The lattice cells where interpolating the node-level inverse misses by ``tol`` pixels or more.

    The inverse field is interpolated at the cell centres and edge midpoints (the nodes are exact) and mapped back
    through the field; the miss, in pixels of a ``height × width`` image, is the residual there.

    Args:
        coef: ``(8, K)`` the pieces of the field (``_cell_pieces``).
        inv: its inverse field ``(B, 2, N, M)``.

    Returns:
        ``(B, N-1, M-1)`` bool.
    """
    b, _, n, m = inv.shape
    q = (inv + 1) * inv.new_tensor([(m - 1) / 2, (n - 1) / 2])[:, None, None]  # node-index units
    px_per_node = ((width - 1) / (m - 1), (height - 1) / (n - 1))

    # The interpolated preimages of the lattice points (j + dx, i + dy) at the edge midpoints and cell centres,
    # mapped back through the field in one evaluation (one call per operation instead of three).
    sets = (((q[..., :, :-1] + q[..., :, 1:]) / 2, 0.5, 0.0),  # (B, 2, N, M-1): midpoints of horizontal edges
            ((q[..., :-1, :] + q[..., 1:, :]) / 2, 0.0, 0.5),  # (B, 2, N-1, M): midpoints of vertical edges
            ((q[..., :-1, :-1] + q[..., :-1, 1:] + q[..., 1:, :-1] + q[..., 1:, 1:]) / 4, 0.5, 0.5))  # centres
    sizes = [points[:, 0].numel() for points, _, _ in sets]
    px = torch.cat([points[:, 0].reshape(-1) for points, _, _ in sets])
    py = torch.cat([points[:, 1].reshape(-1) for points, _, _ in sets])
    batch = torch.cat([torch.arange(b, device=inv.device).repeat_interleave(points.shape[-2] * points.shape[-1])
                       for points, _, _ in sets])
    vx, vy = _piece_eval(coef, *_locate(px, py, batch, n, m), jacobian=False)
    misses = []
    for (points, dx, dy), vx_, vy_ in zip(sets, vx.split(sizes), vy.split(sizes)):
        p, q_ = points.shape[-2:]
        tx = torch.arange(q_, device=inv.device, dtype=inv.dtype) + dx
        ty = torch.arange(p, device=inv.device, dtype=inv.dtype)[:, None] + dy
        misses.append(torch.maximum((vx_.view(b, p, q_) - tx).abs() * px_per_node[0],
                                    (vy_.view(b, p, q_) - ty).abs() * px_per_node[1]))
    across, down, centre = misses
    worst = torch.maximum(torch.maximum(centre, torch.maximum(across[:, :-1], across[:, 1:])),
                          torch.maximum(down[:, :, :-1], down[:, :, 1:]))
    return worst >= tol


# ---------------------------------------------------------------------- preimages of lattice points
# A global Newton solve has no good start for strong warps and cannot choose between the several preimages of a
# folded one. Instead the targets are rasterized: every lattice cell's image is intersected with the target lattice
# through its bounding box, and each candidate (cell, target) pair is solved in closed form, the cell's bilinear map
# being invertible through one quadratic. Only the candidate pairs are computed (a flat list, no padded boxes), and
# the arithmetic runs on one 1-D tensor per coordinate.

def _cell_pieces(field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bilinear pieces of every lattice cell of ``field: (B, 2, N, M)``, in node-index units.

    Cell ``k = (b·(N-1) + i)·(M-1) + j`` maps its local coordinates ``(s, t) ∈ [0, 1]²`` to
    ``a + b·s + c·t + d·s·t``, in units where the target nodes are the integer points.

    Returns:
        ``(coef, lo, hi)``: ``coef: (8, K)``, rows ``a, b, c, d`` of x then of y; ``lo, hi: (2, K)`` bound the
        cell's image (x then y; the corners' min and max, since a bilinear cell lies in their convex hull).
    """
    n, m = field.shape[-2:]
    q = (field + 1) * field.new_tensor([(m - 1) / 2, (n - 1) / 2])[:, None, None]
    q = q.transpose(0, 1)  # (2, B, N, M)
    q00, q01, q10, q11 = q[..., :-1, :-1], q[..., :-1, 1:], q[..., 1:, :-1], q[..., 1:, 1:]
    coef = torch.stack([q00, q01 - q00, q10 - q00, q11 - q01 - q10 + q00], dim=1)  # (2, 4, B, N-1, M-1)
    lo = torch.minimum(torch.minimum(q00, q01), torch.minimum(q10, q11))
    hi = torch.maximum(torch.maximum(q00, q01), torch.maximum(q10, q11))
    return coef.reshape(8, -1), lo.reshape(2, -1), hi.reshape(2, -1)


def _expand_boxes(lo_x: torch.Tensor, hi_x: torch.Tensor, lo_y: torch.Tensor,
                  hi_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every integer point of the boxes ``[lo_x, hi_x] × [lo_y, hi_y]`` (long tensors of shape ``(K,)``).

    Returns:
        ``(box, col, row)``, each of shape ``(T,)``: point ``(col, row)`` lies in box ``box``. Empty boxes
        (``hi < lo``) contribute nothing.
    """
    nx = (hi_x - lo_x + 1).clamp_(min=0)
    ny = (hi_y - lo_y + 1).clamp_(min=0)
    counts = nx * ny
    total = int(counts.sum())
    box = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts, output_size=total)
    rank = torch.arange(total, device=counts.device) - (torch.cumsum(counts, 0) - counts).index_select(0, box)
    width = nx.index_select(0, box)
    row = torch.div(rank, width, rounding_mode="floor")
    return box, lo_x.index_select(0, box) + (rank - row * width), lo_y.index_select(0, box) + row


def _node_candidates(field: torch.Tensor, pieces: tuple[torch.Tensor, ...] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate (cell, node) pairs for inverting ``field: (B, 2, N, M)`` at its own lattice nodes (``pieces``:
    ``_cell_pieces(field)`` when already computed).

    Returns:
        ``(coef, cell, col, row)``: the cells' pieces (see ``_cell_pieces``) and, per candidate ``(T,)``, the
        cell and the target node's column and row.
    """
    coef, lo, hi = _cell_pieces(field) if pieces is None else pieces
    n, m = field.shape[-2:]
    lo = torch.ceil(lo - _SLACK).clamp_(min=0).long()
    hi = torch.floor(hi + _SLACK).long().minimum(torch.tensor([[m - 1], [n - 1]], device=field.device))
    cell, col, row = _expand_boxes(lo[0], hi[0], lo[1], hi[1])
    return coef, cell, col, row


def _overlapped_cells(lo: torch.Tensor, hi: torch.Tensor, n: int, m: int,
                      cells: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cell, lattice cell) pairs where a cell's image bounding box meets a cell of the ``n × m`` lattice.

    Args:
        lo, hi: ``(2, K)`` the bounding boxes in node units (``_cell_pieces``).
        cells: ``(K',)`` the cells to consider (default: all).

    Returns:
        ``(cell, lattice)``: ``(T,)`` each, the cell and the flat index of the lattice cell in ``(B, N-1, M-1)``.
    """
    if cells is not None:
        lo, hi = lo[:, cells], hi[:, cells]
    top = torch.tensor([[m - 2], [n - 2]], device=lo.device)
    first = torch.floor(lo - _SLACK).clamp_(min=0).long().minimum(top)
    last = torch.floor(hi + _SLACK).clamp_(min=0).long().minimum(top)
    box, jc, ic = _expand_boxes(first[0], last[0], first[1], last[1])
    cell = box if cells is None else cells[box]
    return cell, (torch.div(cell, (n - 1) * (m - 1), rounding_mode="floor") * (n - 1) + ic) * (m - 1) + jc


def _folded_area(field: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The lattice cells that may hold points with several preimages, ``(B, N-1, M-1)`` bool.

    The border is fixed, so every point has one more orientation-preserving preimage than reversing ones: a point
    with several preimages has one in a folded cell. The cells met by the folded cells' image bounding boxes
    cover them all.
    """
    b, _, n, m = field.shape
    folded = torch.nonzero(_corner_jacobians(field).amin(dim=1).reshape(-1) <= 0).squeeze(1)
    area = torch.zeros(b * (n - 1) * (m - 1), dtype=torch.bool, device=field.device)
    if folded.numel():
        area[_overlapped_cells(lo, hi, n, m, folded)[1]] = True
    return area.view(b, n - 1, m - 1)


class _OwnedPixels:
    """The pixels of a ``height × width`` image that belong to the flagged cells of an ``N × M`` lattice.

    Every pixel belongs to exactly one lattice cell (cell ``j`` owns the columns ``c`` with
    ``j ≤ c·(M-1)/(W-1) < j+1``, the last cell also the right border; rows alike), so no pixel is listed twice.

    Attributes:
        index: ``(P,)`` flat pixel indices into ``(B, height, width)``.
        batch, col, row: ``(P,)`` each pixel's element, column and row.
        lattice: ``(P,)`` the flat index of each pixel's lattice cell in ``(B, N-1, M-1)``.
        height, width: the image size.
    """

    def __init__(self, flag: torch.Tensor, height: int, width: int) -> None:
        b, n1, m1 = flag.shape
        device = flag.device
        j, i = torch.arange(m1, device=device), torch.arange(n1, device=device)
        first_col = (j * (width - 1) + m1 - 1) // m1  # ceil(j·(W-1)/(M-1))
        last_col = torch.cat([first_col[1:] - 1, first_col.new_tensor([width - 1])])
        first_row = (i * (height - 1) + n1 - 1) // n1
        last_row = torch.cat([first_row[1:] - 1, first_row.new_tensor([height - 1])])
        self.height, self.width = height, width
        fb, fi, fj = flag.nonzero().unbind(dim=1)
        box, self.col, self.row = _expand_boxes(first_col[fj], last_col[fj], first_row[fi], last_row[fi])
        self.batch = fb[box]
        self.index = (self.batch * height + self.row) * width + self.col
        self.lattice = ((fb * n1 + fi) * m1 + fj)[box]


def _pixel_candidates(coef: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, shape: torch.Size,
                      pixels: _OwnedPixels, wanted: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Candidate (cell, pixel) pairs for the ``wanted`` pixels of ``pixels``.

    Args:
        coef, lo, hi: the pieces of a field of shape ``shape = (B, 2, N, M)`` (``_cell_pieces``).
        pixels: the owned pixels of the flagged lattice cells.
        wanted: ``(P,)`` bool over ``pixels``, the pixels to solve.

    Returns:
        ``(coef, cell, col, row, slot)`` as in ``_node_candidates`` (pieces in pixel units), plus each
        candidate's position in ``pixels``.
    """
    b, _, n, m = shape
    device = coef.device
    height, width = pixels.height, pixels.width
    slot = torch.nonzero(wanted).squeeze(1)
    col, row, owner = pixels.col[slot], pixels.row[slot], pixels.lattice[slot]
    # (cell, lattice cell) pairs whose bounding boxes overlap, in node units, for the lattice cells that own a
    # wanted pixel, grouped by lattice cell: each wanted pixel is then tried against its lattice cell's group.
    box, lattice = _overlapped_cells(lo, hi, n, m)
    needed = torch.zeros(b * (n - 1) * (m - 1), dtype=torch.bool, device=device)
    needed[owner] = True
    keep = needed[lattice]
    lattice, box = lattice[keep], box[keep]
    order = torch.argsort(lattice)
    group = box[order]
    count = torch.bincount(lattice, minlength=needed.numel())
    start = torch.cumsum(count, 0) - count
    pixel, _, rank = _expand_boxes(torch.zeros_like(owner), torch.zeros_like(owner), torch.zeros_like(owner),
                                   count[owner] - 1)
    cell = group[start[owner][pixel] + rank]
    col, row, slot = col[pixel], row[pixel], slot[pixel]
    # Keep the pairs whose pixel lies in the cell image's bounding box (in pixel units): a cheap test that
    # spares most of the closed-form solves.
    fx, fy = (width - 1) / (m - 1), (height - 1) / (n - 1)
    cx, cy = col.to(lo.dtype) / fx, row.to(lo.dtype) / fy
    inside = ((cx >= lo[0, cell] - _SLACK) & (cx <= hi[0, cell] + _SLACK) & (cy >= lo[1, cell] - _SLACK)
              & (cy <= hi[1, cell] + _SLACK))
    scale = coef.new_tensor([fx] * 4 + [fy] * 4)[:, None]
    return coef * scale, cell[inside], col[inside], row[inside], slot[inside]


def _node_preimages(field: torch.Tensor, batch: torch.Tensor, target: torch.Tensor,
                    pieces: tuple[torch.Tensor, ...] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Preimages of the lattice nodes under ``field: (B, 2, N, N)``, with the field's value and Jacobian there
    (``pieces``: ``_cell_pieces(field)`` when already computed).

    Returns:
        ``(p, value, jac, err)``: ``p (B·N·N, 2)`` (NaN for a node no cell claims), the field and its Jacobian at
        ``p`` (see ``_bilinear_eval``), and the largest node residual (inf when a node is unclaimed).
    """
    b, n = field.shape[0], field.shape[-1]
    coef, cell, col, row = _node_candidates(field, pieces)
    slot = (torch.div(cell, (n - 1) ** 2, rounding_mode="floor") * n + row) * n + col
    index, cell, s, t = _preimages(coef, cell, col, row, slot, b * n * n)
    p = torch.full((b * n * n, 2), float("nan"), device=field.device, dtype=field.dtype)
    p[index] = _cell_point(cell, s, t, n, n)
    # A node no cell claimed (NaN) can only come from a field that is not onto the square.
    value, jac = _bilinear_eval(field, batch, p.nan_to_num(0.0), coef=coef)
    err = node_residual(p, value, target, jac, complete=index.numel() == p.shape[0])
    return p, value, jac, err


def _preimages(coef: torch.Tensor, cell: torch.Tensor, col: torch.Tensor, row: torch.Tensor, slot: torch.Tensor,
               size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve the candidate pairs and keep one preimage per target.

    Args:
        coef: ``(8, K)`` the cells' pieces in target units (``_cell_pieces``).
        cell, col, row: ``(T,)`` the candidates: cell, and the target's column and row in target units.
        slot: ``(T,)`` the target's index in ``[0, size)``.
        size: the number of targets.

    Returns:
        ``(found, cell, s, t)``, each ``(P,)``: target ``found`` is the image of the point ``(s, t)`` of cell
        ``cell``. Targets no candidate reaches are absent.

    Where the map folds, a target has several preimages. An orientation-preserving one is kept, and among those
    the one where the map compresses least (smallest Frobenius norm of its Jacobian), where ``act(g, x)`` is
    sampled most finely. Preferring the orientation-preserving sheets keeps neighbouring nodes on one sheet more
    often, which is what matters when the inverse is interpolated between nodes: on the accuracy protocol of
    benchmarks/group_actions.py it lowers the round-trip error of ``act(inverse(g), ·)`` from 0.0107 to 0.0099
    (mean, seed 0; seeds 1 and 2 alike) compared with the smallest norm alone, and changes nothing measurable
    when every pixel is solved. Preimages strictly inside their cell come before ones on an edge claimed with the
    slack, whose clamping moves them slightly.
    """
    ax, bx, cx, dx, ay, by, cy, dy = coef.index_select(1, cell).unbind(0)
    qx, qy = col.to(coef.dtype) - ax, row.to(coef.dtype) - ay
    # q = b·s + c·t + d·s·t; crossing with (c + d·s) eliminates t:
    # cross(b, d)·s² + (cross(b, c) - cross(q, d))·s - cross(q, c) = 0.
    qa = bx * dy - by * dx
    qb = bx * cy - by * cx - (qx * dy - qy * dx)
    qc = qy * cx - qx * cy
    disc = qb * qb - 4 * qa * qc
    # The numerically stable pair of roots: no cancellation, and the root that stays finite as qa -> 0 (a
    # parallelogram cell, the common case) is qc / big.
    big = -0.5 * (qb + torch.copysign(disc.clamp(min=0).sqrt(), qb))

    def solve(s: torch.Tensor, sel: slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bx_, cx_, dx_, by_, cy_, dy_, qx_, qy_ = (v[sel] for v in (bx, cx, dx, by, cy, dy, qx, qy))
        ex, ey = cx_ + dx_ * s, cy_ + dy_ * s
        t = ((qx_ - bx_ * s) * ex + (qy_ - by_ * s) * ey) / (ex * ex + ey * ey)
        outside = torch.maximum(torch.maximum(-s, s - 1), torch.maximum(-t, t - 1)).clamp_(min=0)
        s, t = s.clamp(0, 1), t.clamp(0, 1)
        jx, jy = bx_ + dx_ * t, by_ + dy_ * t  # ∂/∂s; ∂/∂t is (ex, ey) at the clamped s
        ex, ey = cx_ + dx_ * s, cy_ + dy_ * s
        residual = torch.maximum((jx * s + cx_ * t - qx_).abs(), (jy * s + cy_ * t - qy_).abs())
        hit = (outside <= _SLACK) & (residual < 1e-3) & (disc[sel] >= 0)
        norm2 = jx * jx + jy * jy + ex * ex + ey * ey
        # Lexicographic (outside, reversed, norm) in one number: inside and orientation-preserving -> [0, 1),
        # inside and reversed -> [1, 2), on the slack -> [2, 2 + slack].
        key = norm2 / (1 + norm2) + (jx * ey - ex * jy <= 0).to(norm2.dtype)
        key = torch.where(outside > 0, 2 + outside, key)
        return s, t, torch.where(hit, key, torch.full_like(key, float("inf")))

    s, t, key = solve(qc / big, slice(None))
    # The other root lies in its cell only where the cell folds over itself (rare): solve those alone.
    other = big / qa
    two = torch.nonzero((other >= -_SLACK) & (other <= 1 + _SLACK)).squeeze(1)
    if two.numel():
        s2, t2, key2 = solve(other[two], two)
        better = key2 < key[two]
        two = two[better]
        s[two], t[two], key[two] = s2[better], t2[better], key2[better]

    # Per target the smallest key; ties (a point on an edge shared by two cells) go to the first candidate, so
    # the choice does not depend on the order of a parallel scatter.
    best = torch.full((size,), float("inf"), device=coef.device, dtype=coef.dtype)
    best.scatter_reduce_(0, slot, key, reduce="amin")
    winner = torch.nonzero(torch.isfinite(key) & (key <= best.index_select(0, slot))).squeeze(1)
    first = torch.full((size,), cell.numel(), device=coef.device, dtype=torch.long)
    first.scatter_reduce_(0, slot.index_select(0, winner), winner, reduce="amin")
    found = torch.nonzero(first < cell.numel()).squeeze(1)
    chosen = first.index_select(0, found)
    return found, cell.index_select(0, chosen), s.index_select(0, chosen), t.index_select(0, chosen)


def _cell_point(cell: torch.Tensor, s: torch.Tensor, t: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Normalized coordinates ``(P, 2)`` of the points ``(s, t)`` of lattice cells ``cell`` (``_cell_pieces``)."""
    within = cell % ((n - 1) * (m - 1))
    i = torch.div(within, m - 1, rounding_mode="floor")
    j = within - i * (m - 1)
    return torch.stack([-1 + 2 * (j.to(s.dtype) + s) / (m - 1), -1 + 2 * (i.to(t.dtype) + t) / (n - 1)], dim=1)
