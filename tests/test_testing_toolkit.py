"""The testing toolkit itself: test images, reports, strategies, checkers and the tightness of the tolerances."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings

from equican import make_group
from equican.testing import (DEFAULT_LAWS, LAWS, NOISE_PERIOD, VERDICT_LAWS, WINDOW_RADIUS, GroupContract,
                             LawReport, LawResult, assert_equivariant, assert_invariant, band_limited_images,
                             check_group_laws, elements, elements_and_images, images, interior, measure_law_errors,
                             radial_window, run_law, white_noise_images)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- images
def test_band_limited_images_shape_dtype_device_and_range(device, dtype):
    x = band_limited_images(3, 2, 32, generator=torch.Generator(device).manual_seed(0), dtype=dtype, device=device)
    assert x.shape == (3, 2, 32, 32) and x.dtype == dtype and x.device.type == device
    assert -0.15 <= float(x.min()) and float(x.max()) <= 1.15  # bicubic overshoot of [0, 1) noise stays small
    assert float(x.std()) > 0.1  # and there is content


def test_band_limited_images_are_reproducible_and_dtype_independent():
    a = band_limited_images(2, 1, 24, generator=gen(7))
    assert torch.equal(a, band_limited_images(2, 1, 24, generator=gen(7)))
    assert not torch.equal(a, band_limited_images(2, 1, 24, generator=gen(8)))
    single = band_limited_images(2, 1, 24, generator=gen(7), dtype=torch.float32)
    assert torch.equal(single, a.float())


def test_band_limited_images_vanish_outside_the_window():
    size = 32
    x = band_limited_images(4, 1, size, generator=gen(1))
    u = torch.linspace(-1, 1, size, dtype=torch.float64)
    r = torch.sqrt(u[None, :] ** 2 + u[:, None] ** 2)
    assert x[..., r >= WINDOW_RADIUS].abs().max() == 0
    assert x[..., r < WINDOW_RADIUS / 2].abs().max() > 0.3
    window = radial_window(size)
    assert window[r >= WINDOW_RADIUS].abs().max() == 0 and float(window.max()) == pytest.approx(1, abs=0.01)


def test_band_limited_images_are_band_limited_and_white_noise_is_not():
    """Fraction of spectral energy above 1/NOISE_PERIOD cycles per pixel: small for the smooth images."""

    def high_frequency_fraction(x):
        spectrum = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
        f = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64).abs()
        high = (f[None, :] > 1 / NOISE_PERIOD) | (f[:, None] > 1 / NOISE_PERIOD)
        return float(spectrum[..., high].sum() / spectrum.sum())

    assert high_frequency_fraction(band_limited_images(8, 1, 64, generator=gen(2))) < 0.02
    assert high_frequency_fraction(white_noise_images(8, 1, 64, generator=gen(2))) > 0.5


def test_interior_crops_an_eighth_from_each_side():
    t = torch.arange(2 * 32 * 40, dtype=torch.float64).view(2, 32, 40)
    assert torch.equal(interior(t), t[:, 4:28, 5:35])


# ---------------------------------------------------------------------------------------------- results and reports
def test_law_result_passes_only_within_tolerance():
    assert LawResult("x", 0.5, 0.5).passed
    assert not LawResult("x", 0.6, 0.5).passed
    assert not LawResult("x", math.nan, 1.0).passed  # a NaN error never passes
    assert "FAILED" in str(LawResult("x", math.inf, 1.0, "raised"))


def test_report_table_and_failure_message():
    rotation = make_group("rotation")
    results = (LawResult("identity_left", 0.0, 1e-15), LawResult("homomorphism", 0.25, 0.04),
               LawResult("shapes_dtypes", 1.0, 0.0, "act: expected (4, 2, 32, 32), got (4, 1, 32, 32)"))
    report = LawReport(rotation, torch.float64, results)
    assert not report.passed and [r.law for r in report.failures] == ["homomorphism", "shapes_dtypes"]
    assert report["homomorphism"].error == 0.25
    with pytest.raises(KeyError, match="it has identity_left, homomorphism"):
        report["associativity"]
    table = str(report)
    assert "Rotation2d" in table and "float64" in table
    for law in ("identity_left", "homomorphism", "0.25", "0.04", "FAILED", "ok"):
        assert law in table
    with pytest.raises(AssertionError) as info:
        report.raise_if_failed()
    message = str(info.value)
    assert message.startswith("2 law(s) failed")
    assert "homomorphism: error 0.25, tolerance 0.04: FAILED" in message
    assert "act: expected (4, 2, 32, 32)" in message
    LawReport(rotation, torch.float64, results[:1]).raise_if_failed()  # all passed: no error


def test_check_group_laws_is_deterministic_and_seeded():
    monotone = make_group("monotone")
    first, again = (check_group_laws(monotone, seed=3) for _ in range(2))
    assert [r.error for r in first.results] == [r.error for r in again.results]
    other = check_group_laws(monotone, seed=4)
    assert first["homomorphism"].error != other["homomorphism"].error
    assert first.setup.seed == 3 and "seed 3, batch 4, size 32" in str(first)


def test_check_group_laws_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    check_group_laws(make_group("affine"), gradcheck=True)
    assert torch.equal(state, torch.get_rng_state())


def test_run_law_runs_just_that_law():
    report = run_law("inverse", make_group("scale"), seed=1, batch=2, dtype=torch.float32)
    assert [r.law for r in report.results] == ["inverse_left", "inverse_right"]
    assert report.setup.batch == 2 and report.dtype == torch.float32


def test_law_registry_names():
    assert list(LAWS)[:3] == ["identity", "inverse", "associativity"]
    assert "gradcheck" in LAWS and "gradcheck" not in DEFAULT_LAWS
    assert {"shapes_dtypes", "gradcheck_g"} <= VERDICT_LAWS


def test_measure_law_errors_reports_maxima_of_measured_laws():
    rotation = make_group("rotation")
    worst = measure_law_errors(rotation, seeds=3)
    assert not set(worst) & VERDICT_LAWS
    per_seed = [check_group_laws(rotation, seed=s)["homomorphism"].error for s in range(3)]
    assert worst["homomorphism"] == max(per_seed)


# ---------------------------------------------------------------------------------------------- tolerances
def test_action_tolerance_is_tight(group, dtype):
    """The action tolerance is within 2.5× of the largest error over 10 seeds (it is set at ~1.5× the maximum over
    hundreds): a tolerance far above what the group needs would let real errors through."""
    if group.exact:
        pytest.skip("exact groups are held to their rounding error on white noise")
    worst = max(run_law(law, group, seed=seed, dtype=dtype).results[0].error
                for law in ("homomorphism", "inverse_action") for seed in range(10))
    assert worst <= group.tolerance(dtype).action <= 2.5 * worst


# ---------------------------------------------------------------------------------------------- strategies
@settings(max_examples=5)
@given(g=elements(make_group("affine"), max_batch=3, dtype=torch.float32))
def test_elements_strategy_draws_valid_batches(g):
    affine = make_group("affine")
    assert 1 <= g.shape[0] <= 3 and g.shape[1:] == (2, 3) and g.dtype == torch.float32
    affine.check(g)


@settings(max_examples=5)
@given(x=images(channels=3, size=20, band_limited=False))
def test_images_strategy_draws_image_batches(x):
    assert 1 <= x.shape[0] <= 4 and x.shape[1:] == (3, 20, 20)
    assert 0 <= float(x.min()) and float(x.max()) < 1


@settings(max_examples=5)
@given(pair=elements_and_images(make_group("monotone"), max_batch=2, size=24))
def test_elements_and_images_share_the_batch(pair):
    g, x = pair
    assert g.shape[0] == x.shape[0] and x.shape[-2:] == (24, 24)
    assert x[..., 0, 0].abs().max() == 0  # band-limited (zero in the corners) for an approximate group


def test_group_contract_has_one_test_per_law():
    for law in LAWS:
        method = getattr(GroupContract, f"test_{law}")
        assert method.__name__ == f"test_{law}" and law in method.__doc__


def test_group_contract_requires_a_group():
    class Unset(GroupContract):
        pass

    with pytest.raises(Exception, match="expected the class attribute group to be an equican.Group"):
        Unset().test_identity()


# ---------------------------------------------------------------------------------------------- checkers
def test_linear_maps_are_equivariant_under_every_group(group, dtype):
    """Scaling intensities commutes with any resampling exactly; the checker reports the error and tolerance."""
    x = (white_noise_images if group.exact else band_limited_images)(3, 2, 32, generator=gen(5), dtype=dtype)
    g = group.sample(3, generator=gen(6), dtype=dtype)
    result = assert_equivariant(lambda t: 3.0 * t, group, x, g=g)
    eps = torch.finfo(dtype).eps
    assert result.passed and result.law == "equivariance" and result.error <= 16 * eps
    rhs = group.act(g, 3.0 * x)
    assert result.tolerance == pytest.approx(group.tolerance(dtype).action + 1e3 * eps * float(rhs.abs().max()))


def test_checkers_default_to_a_seeded_sample():
    rotation = make_group("rotation")
    x = band_limited_images(2, 1, 32, generator=gen(9))
    shift = lambda t: torch.roll(t, 3, dims=-1)  # noqa: E731 - one-line functions under test
    default = assert_invariant(lambda t: t.sum(), rotation, x, atol=10.0)
    seeded = assert_invariant(lambda t: t.sum(), rotation, x, atol=10.0, generator=gen(0))
    assert default.error == seeded.error  # None means torch.Generator(x.device).manual_seed(0)
    # With the identity element anything is equivariant and invariant, even a shift or a single row.
    c4 = make_group("cyclic")
    noise = white_noise_images(2, 1, 16, generator=gen(1))
    identity = c4.identity(2, dtype=torch.float64)
    assert assert_equivariant(shift, c4, noise, g=identity, atol=0, rtol=0).error == 0
    assert assert_invariant(lambda t: t[..., 0, :], c4, noise, g=identity, atol=0, rtol=0).error == 0


def test_margin_excludes_border_effects():
    c4 = make_group("cyclic")
    noise = white_noise_images(2, 1, 16, generator=gen(0))
    quarter = torch.full((2, 1), math.pi / 2, dtype=torch.float64)

    def zero_left_column(t):  # equivariant except on the border, which rot90 moves around
        out = t.clone()
        out[..., :, 0] = 0
        return out

    with pytest.raises(AssertionError):
        assert_equivariant(zero_left_column, c4, noise, g=quarter)
    assert assert_equivariant(zero_left_column, c4, noise, g=quarter, margin=1).passed
