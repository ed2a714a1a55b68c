"""Monotone scaling: local, spatially varying rescaling by monotone piecewise-linear warps.

Rahman et al., "Local Scale Equivariance with Latent Deep Equilibrium Canonicalizer" (ICCV 2025) approximate local
scaling by warps whose x-coordinate is a monotone piecewise-linear function along each row of a coarse grid and whose
y-coordinate is one along each column, built from logits by a softmax (temperature 3) and a cumulative sum.
"""

from __future__ import annotations

import torch

from equican import Group, Tolerance
from equican.errors import ConfigError, ConvergenceError
from equican.sampling import field_sample, identity_field, upsample_field


class MonotoneScaling(Group, name="monotone"):
    """Local scaling by monotone piecewise-bilinear warps of the image square onto itself.

    Convention:
        An element ``g`` is the coordinate field of its *sampling map* ``u ↦ g⁻¹·u`` on an ``N × N`` node lattice,
        ``N = cells·refine + 1``: shape ``(B, 2, N, N)``, channel 0 the x and channel 1 the y coordinate (normalized,
        ``[-1, 1]``, y down), node ``(i, j)`` at ``(x, y) = (-1 + 2j/(N-1), -1 + 2i/(N-1))``. Between nodes the map
        is bilinear. So ``act(g, x) = grid_sample(x, upsample(g))``, the paper's ``deform``.

        Valid elements map the square onto itself: the border columns have x = ∓1, the border rows y = ∓1 and all
        coordinates lie in ``[-1, 1]``, so nothing is ever sampled outside the image. When every lattice cell keeps
        its orientation the map is a homeomorphism of the square; the paper's chart also produces *folded* warps at
        high strength (see :meth:`folded_fraction`), which have no two-sided inverse: for them ``inverse`` returns
        a right inverse ``g⁻¹`` with ``act(g⁻¹, act(g, x)) ≈ x`` and ``compose(inverse(g), g) ≈ identity``.

        The paper's warps are the chart :meth:`from_unconstrained`: logits ``z`` of shape ``(2, cells+1, cells)``;
        ``softmax(temperature·z[0, i])`` are the widths of the ``cells`` segments of the x-warp on coarse row ``i``,
        ``softmax(temperature·z[1, j])`` those of the y-warp on coarse column ``j``; cumulative sums place the knots
        and bilinear interpolation (exact on the refined lattice) fills the cells. Constant logits give the identity.

        Composition and inversion leave the chart (the composite of two such warps is not one of them) but stay in
        the lattice representation: ``compose`` evaluates one field at the other's nodes; ``inverse`` solves
        ``g⁻¹·p = u`` for every node ``u`` exactly, by locating the lattice cell whose image holds ``u`` and
        inverting that cell's bilinear map, so it is accurate for non-separable warps too. Both are exact at the nodes and bilinear in between, which is why the group is not
        ``exact``; ``refine`` trades memory for accuracy.

    Args:
        cells: warp segments per axis, ``R`` in the paper (4 for its MNIST models, 8 for its evaluation warps).
        refine: lattice nodes per warp segment; ``N = cells·refine + 1``.
        strength: :meth:`sample` draws every logit from ``U[0, strength)`` (the paper evaluates with 0.25).
        temperature: softmax temperature (3 in the paper).
    """

    def __init__(self, cells: int = 4, refine: int = 8, strength: float = 0.25, temperature: float = 3.0) -> None:
        for key, value in (("cells", cells), ("refine", refine)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"MonotoneScaling: expected {key} to be a positive int, got {value!r}")
        for key, value in (("strength", strength), ("temperature", temperature)):
            if not (isinstance(value, (int, float)) and 0 <= value < 1e3):
                raise ConfigError(f"MonotoneScaling: expected {key} to be a number in [0, 1000), got {value!r}")
        if temperature == 0:
            raise ConfigError("MonotoneScaling: expected temperature > 0, got 0")
        self.cells, self.refine = cells, refine
        self.strength, self.temperature = float(strength), float(temperature)

    @property
    def nodes(self) -> int:
        """``N``, the lattice size along each axis."""
        return self.cells * self.refine + 1

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (2, self.nodes, self.nodes)

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        return (2, self.cells + 1, self.cells)

    # ------------------------------------------------------------------ the group
    def identity(self, batch, *, device=None, dtype=None):
        return identity_field(self.nodes, self.nodes, batch=batch, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        z = self._uniform((batch, *self.unconstrained_shape), 0.0, self.strength, generator=generator,
                          device=device, dtype=dtype)
        return self.from_unconstrained(z)

    def compose(self, g, h):
        # (gh)⁻¹·u = h⁻¹·(g⁻¹·u): evaluate h's sampling map at g's node values.
        points, _ = self._eval(h, g)
        return points

    def inverse(self, g):
        target = self.identity_like(g)
        with torch.no_grad():
            p = _invert_nodes(g.detach(), self.nodes)
            value, jac = self._eval(g.detach(), p)
            err = float((value - target).abs().amax())
            if err > self._solve_tol(g.dtype):
                raise ConvergenceError(
                    f"MonotoneScaling.inverse: could not invert the warp (max residual {err:.3g} at the lattice "
                    f"nodes, tolerance {self._solve_tol(g.dtype):.3g}); the field may be degenerate"
                )
        # One Newton step, differentiable in g, carries the implicit-function gradient
        # dp/dg = -J⁻¹ ∂g(p)/∂g to the solution (the residual is ~0, so the value does not move).
        value, _ = self._eval(g, p)
        return p - _solve2x2(jac, value - target)

    @staticmethod
    def _solve_tol(dtype: torch.dtype) -> float:
        return 1e4 * torch.finfo(dtype).eps

    def act(self, g, x):
        return field_sample(x, g)

    def distance(self, g, h):
        """Root-mean-square distance between the two sampling maps over the lattice nodes, shape ``(B,)``."""
        return (g - h).pow(2).sum(dim=1).mean(dim=(1, 2)).sqrt()

    def tolerance(self, dtype):
        # element: compose and inverse are exact at the nodes; the laws compare fields that went through
        # bilinear evaluation between nodes (measured max RMS 1.5e-3 in float64 over 200 seeds at the default
        # strength; the float32 solve adds rounding of order 1e-6). action: two bilinear resamplings of the test
        # images plus the between-node error of composite/inverse fields (measured max 0.024).
        return Tolerance(element=3e-3, action=0.04)

    def invalid_reason(self, g):
        tol = 1e3 * torch.finfo(g.dtype).eps
        x, y = g[:, 0], g[:, 1]
        border = torch.stack([(x[:, :, 0] + 1).abs().amax(1), (x[:, :, -1] - 1).abs().amax(1),
                              (y[:, 0, :] + 1).abs().amax(1), (y[:, -1, :] - 1).abs().amax(1)], 1).amax(1)
        if bool((border > tol).any()):
            return f"a field that does not fix the square's border (largest deviation {float(border.max()):.3g})"
        if bool((g.abs() > 1 + tol).any()):
            return f"coordinates outside [-1, 1] (largest |value| {float(g.abs().max()):.6g})"
        return None

    def folded_fraction(self, g: torch.Tensor) -> torch.Tensor:
        """Fraction of lattice cells whose orientation is reversed or degenerate, shape ``(B,)``; 0 for injective
        warps. The paper's chart folds at high strength (measured with temperature 3 and ``cells=4``: no element at
        strength 0.25, half of them at 0.5, nearly all at 1.0, where folds cover about 9% of the square)."""
        self.check(g, where="MonotoneScaling.folded_fraction")
        return (_corner_jacobians(g).amin(dim=1) <= 0).flatten(1).to(g.dtype).mean(dim=1)

    # ------------------------------------------------------------------ the paper's chart
    def from_unconstrained(self, z):
        widths = torch.softmax(self.temperature * z, dim=-1)  # (B, 2, R+1, R), each row sums to 1
        knots = torch.cumsum(widths, dim=-1)
        # Divide by the last knot so that the border lands on exactly 1, whatever the rounding of the sum.
        knots = torch.cat([torch.zeros_like(knots[..., :1]), knots / knots[..., -1:]], dim=-1)
        coarse = torch.stack([knots[:, 0], knots[:, 1].transpose(-1, -2)], dim=1) * 2 - 1  # (B, 2, R+1, R+1)
        return upsample_field(coarse, self.nodes, self.nodes)

    def to_unconstrained(self, g):
        """The logits of the chart warp through the coarse knots of ``g`` (exact on the chart's image).

        Elements outside the chart (composites, inverses) are projected: the knots of their coarse lattice are kept
        and everything between them is forgotten. Non-positive knot spacings, which only fields far outside the
        chart have, are floored at the dtype's smallest normal number before the logarithm.
        """
        coarse = g[:, :, :: self.refine, :: self.refine]
        dx = torch.diff(coarse[:, 0], dim=-1)  # (B, R+1, R): x-segments along each coarse row
        dy = torch.diff(coarse[:, 1], dim=-2).transpose(-1, -2)  # (B, R+1, R): y-segments along each coarse column
        logits = torch.log(torch.stack([dx, dy], dim=1).clamp_min(torch.finfo(g.dtype).tiny)) / self.temperature
        return logits - logits.mean(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ piecewise-bilinear evaluation
    def _eval(self, field: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value and Jacobian of the piecewise-bilinear map ``field`` at ``points``.

        Args:
            field: ``(B, 2, N, N)`` node values.
            points: ``(B, 2, P, Q)`` normalized coordinates in ``[-1, 1]``.

        Returns:
            ``(value, jac)`` with ``value: (B, 2, P, Q)`` and ``jac: (B, 2, 2, P, Q)``, ``jac[:, a, b] = ∂value_a/∂u_b``
            (one-sided within the cell that holds the point, so it is exact for the bilinear piece).
        """
        b, _, n, _ = field.shape
        scale = (n - 1) / 2
        pos = (points + 1) * scale  # continuous node indices: channel 0 along j (x), channel 1 along i (y)
        cell = pos.detach().floor().clamp(0, n - 2)
        s, t = (pos - cell).unbind(dim=1)  # (B, P, Q) offsets inside the cell
        j0, i0 = cell.long().unbind(dim=1)
        flat = field.flatten(2)  # (B, 2, N*N)

        def corner(di: int, dj: int) -> torch.Tensor:
            index = ((i0 + di) * n + (j0 + dj)).flatten(1)[:, None, :].expand(b, 2, -1)
            return flat.gather(2, index).view(b, 2, *s.shape[1:])

        c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
        s, t = s[:, None], t[:, None]
        top = c00 + s * (c01 - c00)
        bottom = c10 + s * (c11 - c10)
        value = top + t * (bottom - top)
        d_s = (1 - t) * (c01 - c00) + t * (c11 - c10)
        d_t = bottom - top
        jac = torch.stack([d_s, d_t], dim=2) * scale
        return value, jac


def _solve2x2(jac: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``jac @ step = rhs`` pointwise; ``jac: (B, 2, 2, P, Q)``, ``rhs: (B, 2, P, Q)``."""
    a, b_, c, d = jac[:, 0, 0], jac[:, 0, 1], jac[:, 1, 0], jac[:, 1, 1]
    det = a * d - b_ * c
    r0, r1 = rhs[:, 0], rhs[:, 1]
    return torch.stack([(d * r0 - b_ * r1) / det, (a * r1 - c * r0) / det], dim=1)


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


def _invert_nodes(field: torch.Tensor, n: int, newton_iters: int = 12) -> torch.Tensor:
    """Solve ``field(p) = u`` for every lattice node ``u`` of an ``n × n`` lattice; returns ``p: (B, 2, n, n)``.

    The map is piecewise bilinear, so the solution is found cell by cell: every cell's image (a quadrilateral) is
    intersected with the lattice through its bounding box, and for each node inside, the cell's bilinear map is
    inverted by Newton's method from the cell centre (a smooth, low-degree problem where Newton converges in a few
    steps). This needs no global initial guess, which is what a Newton solve over the whole warp lacks for strong
    warps. Where the map folds (the paper's chart folds at high strength), several cells claim a node and any one
    of them is kept: the result is then a right inverse, ``field(p) = u``.
    """
    b = field.shape[0]
    cells = n - 1
    h = 2.0 / cells
    slack = 1e-4
    q = (field + 1) / h  # node-index coordinates of every field value
    c00, c01, c10, c11 = q[:, :, :-1, :-1], q[:, :, :-1, 1:], q[:, :, 1:, :-1], q[:, :, 1:, 1:]
    corners = torch.stack([c00, c01, c10, c11])  # (4, B, 2, C, C)
    start = torch.ceil(corners.amin(0) - slack).clamp(0, cells)
    stop = torch.floor(corners.amax(0) + slack).clamp(0, cells)
    k = int((stop - start).amax()) + 1 if stop.numel() else 1
    offsets = torch.arange(k, device=field.device, dtype=field.dtype)
    # Candidate targets: (B, C, C, k, k) nodes (col, row) in each cell's bounding box.
    col = start[:, 0, :, :, None, None] + offsets[None, None, None, None, :]
    row = start[:, 1, :, :, None, None] + offsets[None, None, None, :, None]
    inside = (col <= stop[:, 0, :, :, None, None]) & (row <= stop[:, 1, :, :, None, None])
    col, row = col.expand_as(inside), row.expand_as(inside)
    shape = inside.shape

    def corner(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return c[:, 0, :, :, None, None], c[:, 1, :, :, None, None]

    (x00, y00), (x01, y01), (x10, y10), (x11, y11) = corner(c00), corner(c01), corner(c10), corner(c11)
    s = torch.full(shape, 0.5, device=field.device, dtype=field.dtype)
    t = torch.full(shape, 0.5, device=field.device, dtype=field.dtype)
    for _ in range(newton_iters):
        xt, yt = x00 + s * (x01 - x00), y00 + s * (y01 - y00)
        xb, yb = x10 + s * (x11 - x10), y10 + s * (y11 - y10)
        rx, ry = xt + t * (xb - xt) - col, yt + t * (yb - yt) - row
        a = (1 - t) * (x01 - x00) + t * (x11 - x10)
        c = (1 - t) * (y01 - y00) + t * (y11 - y10)
        bb, d = xb - xt, yb - yt
        det = a * d - bb * c
        det = torch.where(det.abs() > 1e-12, det, torch.full_like(det, 1e-12))
        s = (s - (d * rx - bb * ry) / det).clamp(-1.0, 2.0)
        t = (t - (a * ry - c * rx) / det).clamp(-1.0, 2.0)
    xt, yt = x00 + s * (x01 - x00), y00 + s * (y01 - y00)
    xb, yb = x10 + s * (x11 - x10), y10 + s * (y11 - y10)
    resid = torch.maximum((xt + t * (xb - xt) - col).abs(), (yt + t * (yb - yt) - row).abs())
    hit = inside & (s >= -slack) & (s <= 1 + slack) & (t >= -slack) & (t <= 1 + slack) & (resid < 1e-3)

    # The solution in normalized coordinates: the cell origin (i, j) plus (s, t) cells.
    jj = torch.arange(cells, device=field.device, dtype=field.dtype)
    px = -1 + h * (jj[None, None, :, None, None] + s.clamp(0, 1))
    py = -1 + h * (jj[None, :, None, None, None] + t.clamp(0, 1))
    target = (row * n + col).long()
    batch = torch.arange(b, device=field.device)[:, None, None, None, None].expand(shape)
    out = torch.full((b, n * n, 2), float("nan"), device=field.device, dtype=field.dtype)
    out[batch[hit], target[hit]] = torch.stack([px.expand(shape)[hit], py.expand(shape)[hit]], dim=-1)
    out = out.view(b, n, n, 2).permute(0, 3, 1, 2)
    # A node no cell claimed can only come from a field that is not onto the square; report it as non-converged
    # by leaving it at the identity, where the residual check of the caller will see it.
    missing = torch.isnan(out)
    if bool(missing.any()):
        ident = torch.linspace(-1, 1, n, device=field.device, dtype=field.dtype)
        out = torch.where(missing, torch.stack([ident.expand(n, n), ident[:, None].expand(n, n)])[None], out)
    return out
