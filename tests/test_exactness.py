"""Exact answers where they exist: the groups against closed forms and independent implementations.

The laws (test_laws.py) only check structure; a group that acts by the wrong convention (clockwise instead of
counter-clockwise, say) satisfies them all (see test_negative_controls.py). These tests pin the conventions.

Orientation convention: images are shown with row 0 at the top (y points down the rows). A positive angle rotates
the content counter-clockwise *as seen on screen*, which is ``torch.rot90(x, 1, dims=(-2, -1))``: the top-right
corner moves to the top-left.

Float precision: grid_sample maps normalized coordinates back to pixel indices, ``(u + 1)/2·(W - 1)``, which rounds
unless the coordinates are exactly representable; the rounding grows with the index, so comparisons that go through
an interpolating sampler allow ``4·size·eps``. Where the lattice coordinates are dyadic (``size - 1`` a power of
two) the identity warp reproduces the input bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch
from kornia.geometry.transform import warp_affine

from equican import make_group
from equican.testing import white_noise_images


def noise(batch, size, dtype=torch.float64, device="cpu", width=None, seed=0):
    x = white_noise_images(batch, 2, max(size, width or 0), generator=torch.Generator().manual_seed(seed),
                           dtype=dtype, device=device)
    return x[..., :size, :width or size]


def precision(dtype, size):
    return 4 * size * torch.finfo(dtype).eps


def angles(values, dtype, device="cpu"):
    return torch.tensor(values, dtype=dtype, device=device)[:, None]


# ---------------------------------------------------------------------------------------------- rotations
def test_c4_quarter_turns_are_rot90(device, dtype):
    c4 = make_group("cyclic")
    x = noise(4, 16, dtype, device)
    quarters = [0, 1, 2, -1]  # -1 is three quarter turns: angles are wrapped to [-π, π)
    out = c4.act(angles([q * math.pi / 2 for q in quarters], dtype, device), x)
    for b, q in enumerate(quarters):
        assert torch.equal(out[b], torch.rot90(x[b], q, dims=(-2, -1))), f"{q} quarter turn(s)"


def test_positive_angles_rotate_counter_clockwise_on_screen():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 0, 4] = 1.0  # top-right corner (row 0 is the top of the screen)
    for name in ("cyclic", "rotation"):
        out = make_group(name).act(angles([math.pi / 2], torch.float64), x)
        assert out[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-12), name  # now top-left
        assert out.sum() == pytest.approx(1.0, abs=1e-12), name


def test_continuous_rotation_by_quarter_turns_matches_rot90(device, dtype):
    rotation = make_group("rotation")
    x = noise(3, 32, dtype, device)
    quarters = [1, 2, -1]
    out = rotation.act(angles([q * math.pi / 2 for q in quarters], dtype, device), x)
    for b, q in enumerate(quarters):
        expected = torch.rot90(x[b], q, dims=(-2, -1))
        assert (out[b] - expected).abs().max() <= precision(dtype, 32), f"{q} quarter turn(s)"


def test_rotation_is_rigid_in_pixels_on_non_square_images():
    """A quarter turn on a 9×13 image moves the pixel at offset (dy, dx) from the centre to offset (-dx, dy)."""
    rotation = make_group("rotation")
    x = noise(1, 9, width=13)
    out = rotation.act(angles([math.pi / 2], torch.float64), x)
    cy, cx = 4, 6
    expected = torch.zeros_like(x)
    for i in range(9):
        for j in range(13):
            si, sj = cy + (j - cx), cx - (i - cy)  # act(g, x)(p) = x(g⁻¹·p): g⁻¹ turns clockwise on screen
            if 0 <= si < 9 and 0 <= sj < 13:
                expected[..., i, j] = x[..., si, sj]
    assert (out - expected).abs().max() <= precision(torch.float64, 13)


# ---------------------------------------------------------------------------------------------- affine
def pixel_matrix(g, height, width):
    """The pixel-coordinate form ``D g D⁻¹`` of an element ``g: (B, 2, 3)`` (D: normalized -> pixel indices)."""
    d = torch.tensor([[(width - 1) / 2, 0, (width - 1) / 2], [0, (height - 1) / 2, (height - 1) / 2], [0, 0, 1]],
                     dtype=g.dtype, device=g.device)
    last = torch.tensor([[0, 0, 1]], dtype=g.dtype, device=g.device).expand(g.shape[0], 1, 3)
    return (d @ torch.cat([g, last], dim=1) @ torch.linalg.inv(d))[:, :2]


def test_affine_matches_kornia_warp_affine(device, dtype):
    """kornia's warp_affine takes the forward map in pixel coordinates: ``out(p) = x(M⁻¹ p)``, our convention."""
    affine = make_group("affine")
    g = affine.sample(4, generator=torch.Generator().manual_seed(5), dtype=dtype, device=device)
    x = noise(4, 15, dtype, device, width=21)
    expected = warp_affine(x, pixel_matrix(g, 15, 21), (15, 21), mode="bilinear", padding_mode="zeros",
                           align_corners=True)
    assert (affine.act(g, x) - expected).abs().max() <= precision(dtype, 21)


def test_affine_subpixel_translation_by_hand():
    """Translating by (1/4, 1/3) pixel: out[i, j] = x(i - 1/3, j - 1/4), a bilinear mix of four neighbours."""
    affine = make_group("affine")
    h = w = 9
    x = noise(1, h)
    g = torch.tensor([[[1.0, 0.0, 0.25 * 2 / (w - 1)], [0.0, 1.0, (1 / 3) * 2 / (h - 1)]]], dtype=torch.float64)
    out = affine.act(g, x)
    for i, j in [(4, 4), (1, 7), (8, 1)]:
        expected = ((2 / 3) * (3 / 4) * x[..., i, j] + (2 / 3) * (1 / 4) * x[..., i, j - 1]
                    + (1 / 3) * (3 / 4) * x[..., i - 1, j] + (1 / 3) * (1 / 4) * x[..., i - 1, j - 1])
        assert torch.allclose(out[..., i, j], expected, atol=1e-12, rtol=0), (i, j)
    # At the top-left corner three of the four neighbours are outside the image and read 0 (zero padding).
    assert torch.allclose(out[..., 0, 0], 0.5 * x[..., 0, 0], atol=1e-12, rtol=0)


def test_affine_chart_rotation_agrees_with_the_rotation_group(dtype):
    affine, rotation = make_group("affine"), make_group("rotation")
    theta = angles([0.3, -1.2, 2.5], dtype)
    z = torch.cat([theta, torch.zeros(3, 5, dtype=dtype)], dim=1)
    x = noise(3, 16, dtype)
    difference = affine.act(affine.from_unconstrained(z), x) - rotation.act(theta, x)
    assert difference.abs().max() <= precision(dtype, 16)


# ---------------------------------------------------------------------------------------------- monotone
@pytest.mark.parametrize("size", [17, 33, 65])
def test_monotone_identity_is_bit_exact_on_dyadic_lattices(size, dtype):
    monotone = make_group("monotone")
    x = noise(2, size, dtype)
    assert torch.equal(monotone.act(monotone.identity(2, dtype=dtype), x), x)


@pytest.mark.parametrize("size", [16, 32, 50])
def test_monotone_identity_is_exact_to_float_precision(size, dtype):
    monotone = make_group("monotone")
    x = noise(2, size, dtype)
    assert (monotone.act(monotone.identity(2, dtype=dtype), x) - x).abs().max() <= precision(dtype, size)


def test_monotone_chart_with_known_logits_places_the_knots():
    """Segment widths (0.1, 0.2, 0.3, 0.4) put the x-knots at -1, -0.8, -0.4, 0.2, 1; widths in reverse order put
    the y-knots at -1, -0.2, 0.4, 0.8, 1; between knots the lattice is linear."""
    monotone = make_group("monotone", min_width=0.0)  # the paper's chart (no floor), 4 segments, temperature 3
    widths = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    z = torch.empty(1, 2, 5, 4, dtype=torch.float64)
    z[0, 0] = torch.log(widths) / monotone.temperature  # softmax(3·z) = widths on every coarse row
    z[0, 1] = torch.log(widths.flip(0)) / monotone.temperature  # and reversed on every coarse column
    g = monotone.from_unconstrained(z)
    x_knots = torch.tensor([-1.0, -0.8, -0.4, 0.2, 1.0], dtype=torch.float64)
    y_knots = torch.tensor([-1.0, -0.2, 0.4, 0.8, 1.0], dtype=torch.float64)
    r = monotone.refine
    for row in range(monotone.nodes):  # the x-warp is the same on every row, the y-warp on every column
        assert torch.allclose(g[0, 0, row, ::r], x_knots, atol=1e-15)
        assert torch.allclose(g[0, 1, ::r, row], y_knots, atol=1e-15)
    between = torch.lerp(x_knots[1], x_knots[2], torch.arange(r + 1, dtype=torch.float64) / r)
    assert torch.allclose(g[0, 0, 3, r:2 * r + 1], between, atol=1e-15)
    # act samples x at the field: on the ramps x(u) = u_x and x(u) = u_y it returns the field itself, since
    # bilinear interpolation reproduces linear functions.
    lin = torch.linspace(-1, 1, monotone.nodes, dtype=torch.float64)
    ramps = torch.stack([lin.expand(monotone.nodes, -1), lin[:, None].expand(-1, monotone.nodes)])[None]
    assert (monotone.act(g, ramps) - g).abs().max() <= 1e-14


def test_monotone_width_floor_keeps_every_segment_and_the_identity():
    """With min_width m, widths are (1 - m)·softmax + m/R: constant logits still give the identity, extreme logits
    leave every segment at least m/R wide, and the chart's round trip stays exact."""
    monotone = make_group("monotone", min_width=0.2)
    zero = torch.zeros(1, *monotone.unconstrained_shape, dtype=torch.float64)
    assert (monotone.from_unconstrained(zero) - monotone.identity(1, dtype=torch.float64)).abs().max() <= 1e-15
    z = torch.zeros(1, 2, 5, 4, dtype=torch.float64)
    z[0, :, :, 0] = 50.0  # softmax puts all width on the first segment of every row and column
    g = monotone.from_unconstrained(z)
    knots = g[0, 0, 0, ::monotone.refine]
    widths = torch.diff(knots) / 2
    expected = torch.tensor([0.8 + 0.05, 0.05, 0.05, 0.05], dtype=torch.float64)
    assert torch.allclose(widths, expected, atol=1e-12)
    assert (monotone.from_unconstrained(monotone.to_unconstrained(g)) - g).abs().max() <= 1e-12


def test_monotone_inverse_of_large_float32_logits():
    """Regression: logits of |z| ~ 1-10 (what a trained canonicalizer reaches) used to underflow a width in float32
    and make inverse raise; the floor and the float64 retry on strongly folded fields keep them invertible."""
    monotone = make_group("monotone")
    for scale in (1.0, 3.0, 10.0):
        z = torch.randn(256, *monotone.unconstrained_shape, generator=torch.Generator().manual_seed(0)) * scale
        g = monotone.from_unconstrained(z)
        inv = monotone.inverse(g)
        assert torch.isfinite(inv).all()
        # A right inverse at the nodes: g's sampling map evaluated at inv's node values gives the lattice.
        residual = monotone.compose(inv, g) - monotone.identity(256)
        assert residual.abs().max() <= 1e-3, scale


# ---------------------------------------------------------------------------------------------- scale
def test_scale_by_two_by_hand(dtype):
    """On a 33×33 image (centre pixel 16): doubling shows x at half the offset from the centre, halving at twice."""
    scale = make_group("scale")
    x = noise(1, 33, dtype)
    c, tol = 16, precision(dtype, 33)
    magnified = scale.act(torch.full((1, 1), math.log(2.0), dtype=dtype), x)
    for a, b in [(0, 0), (3, -5), (-8, 7)]:
        assert (magnified[..., c + 2 * a, c + 2 * b] - x[..., c + a, c + b]).abs().max() <= tol
        midpoint = (x[..., c + a, c + b] + x[..., c + a + 1, c + b]) / 2  # odd offsets fall between two pixels
        assert (magnified[..., c + 2 * a + 1, c + 2 * b] - midpoint).abs().max() <= tol
    shrunk = scale.act(torch.full((1, 1), -math.log(2.0), dtype=dtype), x)
    for a, b in [(0, 0), (4, -8), (-7, 2)]:
        assert (shrunk[..., c + a, c + b] - x[..., c + 2 * a, c + 2 * b]).abs().max() <= tol
    assert shrunk[..., 0, 0].abs().max() == 0 and shrunk[..., c, 0].abs().max() == 0  # beyond the image: padding
