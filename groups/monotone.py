"""Monotone scaling: local, spatially varying rescaling by monotone piecewise-linear warps.

Rahman et al., "Local Scale Equivariance with Latent Deep Equilibrium Canonicalizer" (ICCV 2025) approximate local
scaling by warps whose x-coordinate is a monotone piecewise-linear function along each row of a coarse grid and whose
y-coordinate is one along each column, built from logits by a softmax (temperature 3) and a cumulative sum.
"""

from __future__ import annotations

import torch

from equican.group import Group, Tolerance
from equican import validation as V
from equican.errors import ConfigError, ConvergenceError, ShapeError
from equican.sampling import field_sample, grid_sample, identity_field, upsample_field

from ._monotone_checks import check_lattice, node_residual, softmax_logits


class MonotoneScaling(Group, name="monotone"):
    """Local scaling by monotone piecewise-bilinear warps of the image square onto itself.

    Convention:
        An element ``g`` is the coordinate field of its *sampling map* ``u ↦ g⁻¹·u`` on an ``N × N`` node lattice,
        ``N = cells·refine + 1``: shape ``(B, 2, N, N)``, channel 0 the x and channel 1 the y coordinate (normalized,
        ``[-1, 1]``, y down), node ``(i, j)`` at ``(x, y) = (-1 + 2j/(N-1), -1 + 2i/(N-1))``. Between nodes the map
        is bilinear. So ``act(g, x) = grid_sample(x, upsample(g))``, the reference implementation's ``deform``
        (which also blurs the logits with a 5×5 Gaussian of σ = 0.2 first: a change below 2e-5 in the field).

        Valid elements map the square onto itself: the border columns have x = ∓1, the border rows y = ∓1 and all
            coordinates lie in ``[-1, 1]``, so nothing is ever sampled outside the image. When every lattice cell keeps
            its orientation the map is a homeomorphism of the square; the paper's chart also produces *folded* warps at
            high strength (see [`folded_fraction`][equican_groups.monotone.MonotoneScaling.folded_fraction]), which have no
            two-sided inverse: for them ``inverse`` returns
        a right inverse ``g⁻¹`` with ``act(g⁻¹, act(g, x)) ≈ x`` and ``compose(inverse(g), g) ≈ identity``.

        The paper's warps are the chart [`from_unconstrained`][equican_groups.monotone.MonotoneScaling.from_unconstrained]:
        logits ``z`` of shape ``(2, cells+1, cells)``; ``softmax(temperature·z[0, i])`` are the widths of the ``cells``
        segments of the x-warp on coarse row ``i``, ``softmax(temperature·z[1, j])`` those of the y-warp on coarse
        column ``j``; cumulative sums place the knots and bilinear interpolation (exact on the refined lattice) fills
        the cells. Constant logits give the identity.
        One departure from the paper: each width is floored, ``w = (1 - min_width)·softmax + min_width / cells``,
        so no segment shrinks below ``min_width`` of its uniform width. Without it, logits of ordinary size (a
        learned canonicalizer reaches ``|z| ~ 1``) underflow a width in float32 and the warp collapses a segment
        to a point, which has no inverse. The floor keeps constant logits at the identity and only weakens a
        warp's deviation from uniform by the factor ``1 - min_width`` (2% by default).

        Composition and inversion leave the chart (the composite of two such warps is not one of them) but stay in
        the lattice representation: ``compose`` evaluates one field at the other's nodes; ``inverse`` solves
            ``g⁻¹·p = u`` for every node ``u`` exactly, by finding the lattice cells whose images hold ``u`` and
            inverting their bilinear maps in closed form, so it is accurate for non-separable and folded warps too. Both
            are exact at the nodes and bilinear in between, which is why the group is not ``exact``; ``refine`` trades
            memory for accuracy. [`act_inverse`][equican_groups.monotone.MonotoneScaling.act_inverse] (the canonicalizing
            direction) goes further and solves the
        inverse at the pixels where interpolating it between the nodes would be off by half a pixel or more.

    Args:
        cells: warp segments per row and column, ``R``. The reference implementation counts knots, ``R + 1``: its
            MNIST models (``adapter_coarse_resolution: 4``) have 3 segments, its evaluation warps
            (``warping_resolution: 8``) 7.
        refine: lattice nodes per warp segment; ``N = cells·refine + 1``.
        strength: [`sample`][equican_groups.monotone.MonotoneScaling.sample] draws every logit from ``U[0, strength)`` (the
            paper evaluates with 0.25).
        temperature: softmax temperature (3 in the paper).
        min_width: the floor of every segment's width, as a fraction of the uniform width ``1 / cells``; in
            ``[0, 1)`` (0 is the paper's chart, which float32 cannot invert once a width underflows).
    """

    def __init__(self, cells: int = 4, refine: int = 8, strength: float = 0.25, temperature: float = 3.0,
                 min_width: float = 0.02) -> None:
        for key, value in (("cells", cells), ("refine", refine)):
            V.require_int(value, low=1, where="MonotoneScaling", name=key)
        check_lattice(cells, refine)
        for key, value in (("strength", strength), ("temperature", temperature), ("min_width", min_width)):
            V.require_number(value, low=0, high=1 if key == "min_width" else 1e3, high_open=True,
                             where="MonotoneScaling", name=key)
        if temperature == 0:
            raise ConfigError("MonotoneScaling: expected temperature > 0, got 0")
        self.min_width = float(min_width)
        self.cells, self.refine = cells, refine
        self.strength, self.temperature = float(strength), float(temperature)

    @property
    def nodes(self) -> int:
        """``N``, the lattice size along each axis."""
        return self.cells * self.refine + 1

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(2, N, N)``: the sampling map's x and y coordinates on the node lattice."""
        return (2, self.nodes, self.nodes)

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """``(2, cells + 1, cells)``: the chart's logits, x-warps per coarse row and y-warps per coarse column."""
        return (2, self.cells + 1, self.cells)

    # ------------------------------------------------------------------ the group
    def identity(self, batch, *, device=None, dtype=None):
        """``batch`` identity fields (each node at its own coordinates), shape ``(batch, 2, N, N)``."""
        return identity_field(self.nodes, self.nodes, batch=batch, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        """``batch`` chart warps with every logit uniform in ``[0, strength)`` (from ``generator``), shape
        ``(batch, 2, N, N)``."""
        z = self.uniform((batch, *self.unconstrained_shape), 0.0, self.strength, generator=generator,
                          device=device, dtype=dtype)
        return self.from_unconstrained(z)

    def compose(self, g, h):
        """The product ``gh``: ``h``'s sampling map evaluated at ``g``'s node values, shape ``(B, 2, N, N)``.

        Exact at the nodes, bilinear between them (so not exactly a group law; see the class docstring).
        """
        # (gh)⁻¹·u = h⁻¹·(g⁻¹·u): evaluate h's sampling map at g's node values.
        b, n = g.shape[0], self.nodes
        batch = torch.arange(b, device=g.device).repeat_interleave(n * n)
        value, _ = _bilinear_eval(h, batch, g.permute(0, 2, 3, 1).reshape(-1, 2), jacobian=False)
        return value.view(b, n, n, 2).permute(0, 3, 1, 2).contiguous()

    def inverse(self, g):
        """The inverse elements ``(B, 2, N, N)``: the preimage under ``g``'s sampling map of every lattice node.

        Exact at the nodes (measured residual below 4e-7 in float32, 1e-15 in float64), a right inverse for folded
        warps (of several preimages, the orientation-preserving one where the map compresses least; see
        ``_preimages``). Differentiable in ``g`` with the implicit-function gradient; second derivatives are not
        those of the exact inverse.

        Raises:
            ConvergenceError: if a node has no preimage (only a field that is not onto the square can cause this).
        """
        return self._invert(g)

    @staticmethod
    def _solve_tol(dtype: torch.dtype) -> float:
        return 1e4 * torch.finfo(dtype).eps

    def act(self, g, x):
        """``grid_sample(x, upsample(g))``: ``x: (B, C, H, W)`` sampled at ``g``'s bilinearly upsampled field.

        The result has shape ``(B, C, H, W)``; nothing is sampled outside the image for valid elements.
        """
        return field_sample(x, g)

    def act_inverse(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``act(inverse(g), x)``, with the inverse solved at the pixels of ``x`` where the node lattice is too coarse.

        ``act(inverse(g), x)`` interpolates the inverse field between the lattice nodes. That is accurate where the
        inverse is smooth, but not across the discontinuities of a folded warp's right inverse, nor at the kinks of
        strong warps. This samples ``x`` on [`inverse_grid`][equican_groups.monotone.MonotoneScaling.inverse_grid] instead,
        which re-solves the inverse at every pixel of the lattice cells where the interpolation misses by half a pixel
        or more.

        Args:
            g: elements ``(B, 2, N, N)``.
            x: images ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``, differentiable in ``g`` (implicit-function gradient) and ``x``.
        """
        return grid_sample(x, self.inverse_grid(g, x.shape[-2], x.shape[-1]))

    def inverse_grid(self, g: torch.Tensor, height: int, width: int, *, pixel_tol: float = 0.5) -> torch.Tensor:
        """The sampling grid of the inverse action on ``height × width`` images.

        The inverse field (exact at the lattice nodes) is interpolated to the pixels, then checked at the centres
        and edge midpoints of the lattice cells by mapping it back through ``g``; in every cell where it misses by
        ``pixel_tol`` pixels or more, the preimage of each pixel is solved exactly (Newton's method where the
        warp is one-to-one, a closed-form search over candidate cells where it folds).

        Args:
            g: elements ``(B, 2, N, N)``.
            height: the image height (at least 2).
            width: the image width (at least 2).
            pixel_tol: the position error, in pixels, from which a cell is re-solved; 0 solves every pixel. On
                the accuracy protocol of ``benchmarks/group_actions.py`` the default 0.5 gives the same max and a
                mean 7% above solving every pixel (0.0059 vs 0.0055, non-separable), at a fraction of the cost:
                it re-solves ~6% of the cells of default-strength warps at 224×224.

        Returns:
            ``(B, height, width, 2)``, for ``grid_sample(x, grid)``; differentiable in ``g``.
        """
        where = "MonotoneScaling.inverse_grid"
        self.check(g, where=where)
        for key, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ShapeError(f"{where}: expected {key} to be an int >= 2, got {value!r}")
        if isinstance(pixel_tol, bool) or not isinstance(pixel_tol, (int, float)) or not pixel_tol >= 0:
            raise ConfigError(f"{where}: expected pixel_tol to be a number >= 0, got {pixel_tol!r}")
        return self._refine_grid(g, self._invert(g), height, width, float(pixel_tol))

    def distance(self, g, h):
        """Root-mean-square distance between the two sampling maps over the lattice nodes, shape ``(B,)``.

        Differentiable everywhere: where ``g = h`` the root has no derivative, and the gradient there is 0 (a
        subgradient, and the exact gradient of the squared distance), never NaN.
        """
        mean_square = (g - h).pow(2).sum(dim=1).mean(dim=(1, 2))
        positive = mean_square > 0
        # Both wheres are needed: sqrt's derivative at 0 is infinite, and the outer where alone would pass on
        # 0·∞ = NaN. The inner one keeps 0 out of sqrt, so that branch's gradient is finite and then masked.
        return torch.where(positive, torch.where(positive, mean_square, 1.0).sqrt(), 0.0)

    def tolerance(self, dtype):
        """Measured bounds, the same in both dtypes: 0.017 (RMS field distance) for the element laws, 0.062 for the
        action laws."""
        # Measured with equican.testing.measure_law_errors: seeds 0-1999, batch 4, the default configuration,
        # action laws on the interior of 32×32 band-limited images (the protocol of equican.testing.images).
        # element: compose and inverse are exact at the nodes, so identity and compose(g⁻¹, g) = e hold to
        # rounding (1e-16 / 6e-8); compose(g, g⁻¹) = e evaluates the inverse field between its nodes, where it is
        # only bilinear: largest RMS error 0.0111 (float64) / 0.0089 (float32), associativity 0.0029; bound 0.017.
        # Both dtypes share it: the between-node error dwarfs float32 rounding.
        # action: largest error 0.0405 (float64) / 0.0415 (float32), inverse action (homomorphism 0.0317 /
        # 0.0322; act_inverse at most 0.0519, float32); bound 0.062, 1.5x the largest through inverse().
        return Tolerance(element=0.017, action=0.062)

    def invalid_reason(self, g):
        """Why some field of ``g: (B, 2, N, N)`` is not a valid element (a border not fixed, or coordinates outside
        ``[-1, 1]``), or None if all are."""
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
        """The paper's warp of logits ``z: (B, 2, cells + 1, cells)``, as a field ``(B, 2, N, N)`` (see the class
        docstring); constant logits give the identity."""
        # (B, 2, R+1, R), each row sums to 1 and no width is below min_width / R (see the class docstring).
        widths = (1 - self.min_width) * torch.softmax(softmax_logits(z, self.temperature), dim=-1) \
            + self.min_width / self.cells
        knots = torch.cumsum(widths, dim=-1)
        # Divide by the last knot so that the border lands on exactly 1, whatever the rounding of the sum.
        knots = torch.cat([torch.zeros_like(knots[..., :1]), knots / knots[..., -1:]], dim=-1)
        coarse = torch.stack([knots[:, 0], knots[:, 1].transpose(-1, -2)], dim=1) * 2 - 1  # (B, 2, R+1, R+1)
        return upsample_field(coarse, self.nodes, self.nodes)

    def to_unconstrained(self, g):
        """The logits ``(B, 2, cells + 1, cells)`` of the chart warp through the coarse knots of ``g: (B, 2, N, N)``.

        Exact on the chart's image, with every row of logits centred to mean 0.

        Elements outside the chart (composites, inverses) are projected: the knots of their coarse lattice are kept
        and everything between them is forgotten. Non-positive knot spacings, which only fields far outside the
        chart have, are floored at the dtype's smallest normal number before the logarithm.
        """
        coarse = g[:, :, :: self.refine, :: self.refine]
        dx = torch.diff(coarse[:, 0], dim=-1)  # (B, R+1, R): x-segments along each coarse row
        dy = torch.diff(coarse[:, 1], dim=-2).transpose(-1, -2)  # (B, R+1, R): y-segments along each coarse column
        # Undo the knots' map to [-1, 1] (segment = 2·width) and the width floor, leaving the softmax's output.
        soft = (torch.stack([dx, dy], dim=1) / 2 - self.min_width / self.cells) / (1 - self.min_width)
        logits = torch.log(soft.clamp_min(torch.finfo(g.dtype).tiny)) / self.temperature
        return logits - logits.mean(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ inversion
    def _invert(self, g: torch.Tensor) -> torch.Tensor:
        """The inverse fields ``(B, 2, N, N)`` of validated elements ``g: (B, 2, N, N)``.

        Exact at the nodes (closed-form preimages, see ``_preimages``), then one Newton step that is
        differentiable in ``g``: the residual is ~0, so the value does not move, but the step carries the
        implicit-function gradient ``dp/dg = -J⁻¹ ∂g(p)/∂g`` to the solution.
        """
        b, n = g.shape[0], self.nodes
        target = _lattice_points(n, n, device=g.device, dtype=g.dtype).expand(b, n, n, 2).reshape(-1, 2)
        batch = torch.arange(b, device=g.device).repeat_interleave(n * n)
        with torch.no_grad():
            field = g.detach()
            p, value, jac, err = _node_preimages(field, batch, target)
            if err > self._solve_tol(g.dtype) and g.dtype == torch.float32:
                # Strongly folded float32 fields can leave a node on a cell edge that rounding moves out of every
                # candidate cell (seen once in 256 warps with |z| ~ 3 and 26% of the cells folded); float64
                # resolves it, and costs nothing on the usual path.
                p = _node_preimages(field.double(), batch, target.double())[0].float()
                value, jac = _bilinear_eval(field, batch, p.nan_to_num(0.0))
                err = node_residual(p, value, target, jac, complete=True)
            if err > self._solve_tol(g.dtype):
                raise ConvergenceError(
                    f"MonotoneScaling.inverse: expected every lattice node to have a preimage under g, got a max "
                    f"residual of {err:.3g} at the nodes (tolerance {self._solve_tol(g.dtype):.3g}); the field may "
                    f"be degenerate or not onto the square"
                )
        value, _ = _bilinear_eval(g, batch, p, jacobian=False)
        p = p - _solve2x2(jac, value - target)
        return p.view(b, n, n, 2).permute(0, 3, 1, 2).contiguous()

    def _refine_grid(self, g: torch.Tensor, inv: torch.Tensor, height: int, width: int,
                     tol: float) -> torch.Tensor:
        """The grid of [`inverse_grid`][equican_groups.monotone.MonotoneScaling.inverse_grid]: ``inv`` interpolated, re-solved
        in the cells where it misses by ``tol`` px.

        Args:
            g: validated elements ``(B, 2, N, N)``.
            inv: their inverse fields ``(B, 2, N, N)`` (from ``_invert``).
            height, width: the image size.
            tol: the accepted miss, in pixels.

        Returns:
            The grid ``(B, height, width, 2)`` for [`equican.sampling.grid_sample`][equican.sampling.grid_sample].
        """
        n = self.nodes
        grid = upsample_field(inv, height, width)
        with torch.no_grad():
            field = g.detach()
            coef, lo, hi = _cell_pieces(field)
            flag = _poor_cells(coef, inv.detach(), height, width, tol=tol)
        if not bool(flag.any()):
            return grid.permute(0, 2, 3, 1)
        if grid is inv:  # an image the size of the lattice: upsample_field returned inv itself, which must not change
            grid = grid.clone()
        with torch.no_grad():
            pixels = _OwnedPixels(flag, height, width)
            batch = pixels.batch
            # The re-solved values are written into the channels-first grid in place (two flat indices per pixel),
            # which spares a channels-last copy of the whole grid. The solve runs in node-index units.
            at_x = pixels.index + batch * (height * width)
            at_y = at_x + height * width
            flat = grid.detach().view(-1)
            to_node = (n - 1) / 2
            px = (flat.index_select(0, at_x) + 1) * to_node
            py = (flat.index_select(0, at_y) + 1) * to_node
            tx = pixels.col.to(g.dtype) * ((n - 1) / (width - 1))
            ty = pixels.row.to(g.dtype) * ((n - 1) / (height - 1))
            # Where the warp folds, a pixel has several preimages and the closed-form search over candidate cells
            # picks one by the rule of _preimages. Elsewhere the preimage is unique, and Newton from the
            # interpolated value converges in a few steps; pixels where it does not join the search.
            search = _folded_area(field, lo, hi).reshape(-1)[pixels.lattice]
            tol_node = _NEWTON_TOL * to_node * torch.finfo(g.dtype).eps
            if bool(search.any()):
                smooth = torch.nonzero(~search).squeeze(1)
                qx, qy, done = _newton(coef, batch[smooth], px[smooth], py[smooth], tx[smooth], ty[smooth], n,
                                       tol=tol_node)
                px[smooth], py[smooth] = qx, qy
                search[smooth[~done]] = True
            else:
                px, py, done = _newton(coef, batch, px, py, tx, ty, n, tol=tol_node)
                search = ~done
            p = torch.stack([px, py], dim=1) / to_node - 1
            if bool(search.any()):
                candidates = _pixel_candidates(coef, lo, hi, field.shape, pixels, search)
                found, cell, s, t = _preimages(*candidates, pixels.index.numel())
                # A pixel no cell claims would mean the field is not onto near it: it keeps the interpolated value.
                p[found] = _cell_point(cell, s, t, n, n)
        if g.requires_grad and torch.is_grad_enabled():
            # The differentiable Newton step of _invert, at the re-solved pixels (a no-op in value: they are roots).
            target = torch.stack([tx, ty], dim=1) / to_node - 1
            value, jac = _bilinear_eval(g, batch, p)
            p = p - _solve2x2(jac.detach(), value - target)
        flat = grid.view(-1)
        flat.index_put_((at_x,), p[:, 0])
        flat.index_put_((at_y,), p[:, 1])
        return grid.permute(0, 2, 3, 1)


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


def _bilinear_eval(field: torch.Tensor, batch: torch.Tensor, points: torch.Tensor, *,
                   jacobian: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Value and Jacobian of the piecewise-bilinear maps ``field`` at scattered points, differentiable in both.

    Args:
        field: ``(B, 2, N, M)`` node values.
        batch: ``(K,)`` long, the element each point belongs to.
        points: ``(K, 2)`` normalized coordinates ``(x, y)``; outside ``[-1, 1]²`` the border cells are extended.
        jacobian: also return the Jacobian (None otherwise).

    Returns:
        ``(value, jac)``: ``value: (K, 2)``; ``jac: (K, 2, 2)``, ``jac[:, a, b] = ∂value_a/∂u_b``, one-sided within
        the cell that holds the point, so exact for its bilinear piece.
    """
    n, m = field.shape[-2:]
    sx, sy = (m - 1) / 2, (n - 1) / 2  # normalized -> node-index units
    coef = _cell_pieces(field)[0]
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

    def miss(points: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
        # points: (B, 2, P, Q) interpolated preimages of the lattice points (j + dx, i + dy).
        p, q_ = points.shape[-2:]
        batch = torch.arange(b, device=inv.device).repeat_interleave(p * q_)
        vx, vy = _piece_eval(coef, *_locate(points[:, 0].reshape(-1), points[:, 1].reshape(-1), batch, n, m),
                             jacobian=False)
        tx = torch.arange(q_, device=inv.device, dtype=inv.dtype) + dx
        ty = torch.arange(p, device=inv.device, dtype=inv.dtype)[:, None] + dy
        ex = (vx.view(b, p, q_) - tx).abs() * px_per_node[0]
        ey = (vy.view(b, p, q_) - ty).abs() * px_per_node[1]
        return torch.maximum(ex, ey)

    across = miss((q[..., :, :-1] + q[..., :, 1:]) / 2, 0.5, 0.0)  # (B, N, M-1): midpoints of horizontal edges
    down = miss((q[..., :-1, :] + q[..., 1:, :]) / 2, 0.0, 0.5)  # (B, N-1, M): midpoints of vertical edges
    centre = miss((q[..., :-1, :-1] + q[..., :-1, 1:] + q[..., 1:, :-1] + q[..., 1:, 1:]) / 4, 0.5, 0.5)
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


def _node_candidates(field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate (cell, node) pairs for inverting ``field: (B, 2, N, M)`` at its own lattice nodes.

    Returns:
        ``(coef, cell, col, row)``: the cells' pieces (see ``_cell_pieces``) and, per candidate ``(T,)``, the
        cell and the target node's column and row.
    """
    coef, lo, hi = _cell_pieces(field)
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


def _node_preimages(field: torch.Tensor, batch: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Preimages of the lattice nodes under ``field: (B, 2, N, N)``, with the field's value and Jacobian there.

    Returns:
        ``(p, value, jac, err)``: ``p (B·N·N, 2)`` (NaN for a node no cell claims), the field and its Jacobian at
        ``p`` (see ``_bilinear_eval``), and the largest node residual (inf when a node is unclaimed).
    """
    b, n = field.shape[0], field.shape[-1]
    coef, cell, col, row = _node_candidates(field)
    slot = (torch.div(cell, (n - 1) ** 2, rounding_mode="floor") * n + row) * n + col
    index, cell, s, t = _preimages(coef, cell, col, row, slot, b * n * n)
    p = torch.full((b * n * n, 2), float("nan"), device=field.device, dtype=field.dtype)
    p[index] = _cell_point(cell, s, t, n, n)
    # A node no cell claimed (NaN) can only come from a field that is not onto the square.
    value, jac = _bilinear_eval(field, batch, p.nan_to_num(0.0))
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
