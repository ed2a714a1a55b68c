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
# The inversion numerics live beside the group (one job per module); the group's methods call them on validated
# fields.
from ._monotone_inverse import (_NEWTON_TOL, _OwnedPixels, _bilinear_eval, _cell_pieces, _cell_point,
                                _corner_jacobians, _folded_area, _lattice_points, _newton, _node_preimages,
                                _pixel_candidates, _poor_cells, _preimages, _solve2x2)


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

    @property
    def chart_transposed(self) -> tuple[int, ...]:
        """``(1,)``: the y-warp logits ``z[1, j, s]`` belong to coarse column ``j``, segment ``s`` down it."""
        return (1,)

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
        # g was validated by this call's wrapper: inverse_grid's own check would repeat it. The cell pieces of g
        # serve both the node inverse and the per-pixel refinement.
        with torch.no_grad():
            pieces = _cell_pieces(g.detach())
        inv = self._invert(g, pieces)
        return grid_sample(x, self._refine_grid(g, inv, x.shape[-2], x.shape[-1], 0.5, pieces))

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
        with torch.no_grad():
            pieces = _cell_pieces(g.detach())
        return self._refine_grid(g, self._invert(g, pieces), height, width, float(pixel_tol), pieces)

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
        if g.shape[0] == 0:
            return None
        # Both maxima read back with one host sync; the bounds are compared as g's dtype represents them (what a
        # tensor-scalar comparison does), so the decision is the elementwise test's.
        border_tol, outer_tol = _validity_bounds(g.dtype)
        border = torch.stack([g[:, 0, :, 0] + 1, g[:, 0, :, -1] - 1, g[:, 1, 0, :] + 1, g[:, 1, -1, :] - 1])
        deviation, largest = torch.stack([border.abs().amax(), g.abs().amax()]).tolist()
        if deviation > border_tol:
            return f"a field that does not fix the square's border (largest deviation {deviation:.3g})"
        if largest > outer_tol:
            return f"coordinates outside [-1, 1] (largest |value| {largest:.6g})"
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
    def _invert(self, g: torch.Tensor, pieces: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The inverse fields ``(B, 2, N, N)`` of validated elements ``g: (B, 2, N, N)``.

        Exact at the nodes (closed-form preimages, see ``_preimages``), then one Newton step that is
        differentiable in ``g``: the residual is ~0, so the value does not move, but the step carries the
        implicit-function gradient ``dp/dg = -J⁻¹ ∂g(p)/∂g`` to the solution. ``pieces``: ``_cell_pieces`` of
        ``g.detach()`` when the caller already has them (act_inverse shares them with ``_refine_grid``).
        """
        b, n = g.shape[0], self.nodes
        target = _lattice_points(n, n, device=g.device, dtype=g.dtype).expand(b, n, n, 2).reshape(-1, 2)
        batch = torch.arange(b, device=g.device).repeat_interleave(n * n)
        with torch.no_grad():
            field = g.detach()
            p, value, jac, err = _node_preimages(field, batch, target, pieces)
            if err > self._solve_tol(g.dtype) and g.dtype == torch.float32:
                # Strongly folded float32 fields can leave a node on a cell edge that rounding moves out of every
                # candidate cell (seen once in 256 warps with |z| ~ 3 and 26% of the cells folded); float64
                # resolves it, and costs nothing on the usual path.
                p = _node_preimages(field.double(), batch, target.double())[0].float()
                coef = None if pieces is None else pieces[0]
                value, jac = _bilinear_eval(field, batch, p.nan_to_num(0.0), coef=coef)
                err = node_residual(p, value, target, jac, complete=True)
            if err > self._solve_tol(g.dtype):
                raise ConvergenceError(
                    f"MonotoneScaling.inverse: expected every lattice node to have a preimage under g, got a max "
                    f"residual of {err:.3g} at the nodes (tolerance {self._solve_tol(g.dtype):.3g}); the field may "
                    f"be degenerate or not onto the square"
                )
        if g.requires_grad and torch.is_grad_enabled():
            value, _ = _bilinear_eval(g, batch, p, jacobian=False)
        # Without a gradient to carry, the value at p is the one the solve computed (the same numbers): the step
        # only polishes p.
        p = p - _solve2x2(jac, value - target)
        return p.view(b, n, n, 2).permute(0, 3, 1, 2).contiguous()

    def _refine_grid(self, g: torch.Tensor, inv: torch.Tensor, height: int, width: int, tol: float,
                     pieces: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
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
            coef, lo, hi = _cell_pieces(field) if pieces is None else pieces
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


_BOUNDS: dict[torch.dtype, tuple[float, float]] = {}


def _validity_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """``(tol, 1 + tol)`` with ``tol = 1e3·eps``, each rounded to ``dtype`` (as a Python float): the bounds of
    [`invalid_reason`][equican_groups.monotone.MonotoneScaling.invalid_reason]'s border and range tests."""
    if dtype not in _BOUNDS:
        tol = 1e3 * torch.finfo(dtype).eps
        _BOUNDS[dtype] = tuple(torch.tensor([tol, 1 + tol], dtype=dtype).tolist())
    return _BOUNDS[dtype]
