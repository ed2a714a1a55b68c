"""Negative controls: deliberately broken groups and functions must make the checkers fail, on the right law.

A checker that cannot fail proves nothing. Each broken group below is an unregistered subclass (no ``name=``) of a
correct one with a single defect, and each test asserts exactly which laws fail, so that the checkers are shown to
be both sensitive (the broken law fails) and specific (the laws the defect does not touch still pass).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from equican import Tolerance, list_groups, make_group
from equican.testing import (GroupContract, assert_equivariant, assert_invariant, band_limited_images,
                             check_group_laws, white_noise_images)
from equican_groups import Affine2d, CyclicRotation2d, Rotation2d
from equican_groups.rotation import wrap_angle

DTYPES = [torch.float32, torch.float64]


def failed_laws(group, dtype=torch.float64, **kwargs):
    return {r.law for r in check_group_laws(group, dtype=dtype, **kwargs).failures}


# ---------------------------------------------------------------------------------------------- broken groups
class WrongInverse(Rotation2d):
    """inverse returns g itself instead of -g."""

    def inverse(self, g):
        return wrap_angle(g)


class ReversedComposition(Affine2d):
    """compose(g, h) applies g first: the opposite group, still a group, but the action is no longer a homomorphism."""

    def compose(self, g, h):
        return super().compose(h, g)


class MirroredRotationInAction(Affine2d):
    """act rotates the wrong way: the element's rotation angle is negated before acting (a sign error)."""

    def act(self, g, x):
        z = self.to_unconstrained(g)
        flip = torch.tensor([-1.0, 1, 1, 1, 1, 1], dtype=z.dtype, device=z.device)
        return super().act(self.from_unconstrained(z * flip), x)


class NonAssociative(Rotation2d):
    """compose adds a term that keeps 0 the identity and -g the inverse of g but breaks associativity.

    ``F(g, h) = g + h + c·g·h·(g² - h²)`` vanishes for ``h = 0``, ``g = 0`` and ``h = -g``, while
    ``F(F(1, 1), 1) - F(1, F(1, 1))`` is nonzero already at fourth order.
    """

    def compose(self, g, h):
        return wrap_angle(g + h + 0.05 * g * h * (g * g - h * h))


class WrongIdentity(Rotation2d):
    """identity is a rotation by ``offset`` radians."""

    def __init__(self, offset: float = 0.1) -> None:
        super().__init__()
        self.offset = offset

    def identity(self, batch, *, device=None, dtype=None):
        return torch.full((batch, 1), self.offset, device=device, dtype=dtype)


class DropsChannels(Rotation2d):
    def act(self, g, x):
        return super().act(g, x)[:, :1]


class MutatesInput(Rotation2d):
    """inverse returns the right value but zeroes its argument in place."""

    def inverse(self, g):
        result = wrap_angle(-g)
        g.zero_()
        return result


class GlobalRandomness(Rotation2d):
    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return (torch.rand(batch, 1, dtype=dtype) * 2 - 1).to(device) * self.max_angle


class DetachedAction(Rotation2d):
    """act is correct in value but cuts the gradient with respect to g."""

    def act(self, g, x):
        return super().act(g.detach(), x)


class DoubledGradient(Rotation2d):
    """act is correct in value but its gradient with respect to g is twice the true one."""

    def act(self, g, x):
        return super().act(g + (g - g.detach()), x)


class ShiftedChart(Rotation2d):
    def from_unconstrained(self, z):
        return wrap_angle(z + 0.2)

    def to_unconstrained(self, g):
        return wrap_angle(g - 0.2)


class FalselyExact(Rotation2d):
    """Claims ``exact`` for an interpolated rotation: the laws then use white noise and rounding-level tolerances."""

    exact = True

    def tolerance(self, dtype):
        return Tolerance(element=8 * math.pi * torch.finfo(dtype).eps, action=1e3 * torch.finfo(dtype).eps)


class SlightlyWrongInverse(Rotation2d):
    """inverse is off by 1° (0.0175 rad): small, but far above the element tolerance."""

    def inverse(self, g):
        return wrap_angle(-g + math.radians(1.0))


# ---------------------------------------------------------------------------------------------- group laws
@pytest.mark.parametrize("dtype", DTYPES)
def test_wrong_inverse_fails_the_inverse_laws_only(dtype):
    assert failed_laws(WrongInverse(), dtype) == {"inverse_left", "inverse_right", "inverse_action", "act_inverse"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_one_degree_inverse_error_is_caught(dtype):
    """The element laws catch a 1° error; the inverse-action law alone may not: 1° moves the test images' content
    by at most 0.2 pixel, which is within the tolerance that bilinear resampling needs."""
    report = check_group_laws(SlightlyWrongInverse(), dtype=dtype)
    assert {"inverse_left", "inverse_right"} <= {r.law for r in report.failures}
    assert {r.law for r in report.failures} <= {"inverse_left", "inverse_right", "inverse_action", "act_inverse"}
    assert report["inverse_left"].error == pytest.approx(math.radians(1.0), rel=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reversed_composition_order_fails_the_homomorphism_only(dtype):
    assert failed_laws(ReversedComposition(), dtype) == {"homomorphism"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_sign_error_in_the_action_fails_the_action_laws(dtype):
    assert failed_laws(MirroredRotationInAction(), dtype) == {"homomorphism", "inverse_action", "act_inverse"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_associative_composition_fails_associativity(dtype):
    # The action adds angles, so it cannot be a homomorphism for the distorted product either.
    assert failed_laws(NonAssociative(), dtype) == {"associativity", "homomorphism"}


ELEMENT_LAWS_WITH_IDENTITY = {"identity_left", "identity_right", "inverse_left", "inverse_right", "chart_identity"}


def test_wrong_identity_fails_every_element_law_that_uses_the_identity():
    """An identity off by 0.1 rad (5.7°) moves the test images' content by at most 1.2 pixels: the element laws see
    it, act(identity) = id does not reliably (its tolerance must admit two bilinear resamplings)."""
    failed = failed_laws(WrongIdentity(0.1))
    assert ELEMENT_LAWS_WITH_IDENTITY <= failed <= ELEMENT_LAWS_WITH_IDENTITY | {"act_identity"}


def test_a_visibly_wrong_identity_fails_the_action_law_too():
    assert failed_laws(WrongIdentity(0.5)) == ELEMENT_LAWS_WITH_IDENTITY | {"act_identity"}


def test_dropping_channels_fails_the_shape_law_and_is_not_hidden_by_broadcasting():
    report = check_group_laws(DropsChannels())
    # homomorphism compares two outputs of act, both with one channel: it cannot see the defect.
    assert {r.law for r in report.failures} == {"act_identity", "inverse_action", "act_inverse", "shapes_dtypes"}
    assert "act: expected (4, 2, 32, 32)" in report["shapes_dtypes"].detail
    assert "shapes differ" in report["act_identity"].detail


def test_modifying_an_argument_in_place_fails_inputs_unchanged():
    report = check_group_laws(MutatesInput())
    assert "inputs_unchanged" in {r.law for r in report.failures}
    assert report["inputs_unchanged"].detail == "g was modified in place"


def test_sampling_from_the_global_rng_fails_the_randomness_law():
    result = check_group_laws(GlobalRandomness())["randomness"]
    assert not result.passed
    assert "global CPU RNG" in result.detail and "same seed" in result.detail


@pytest.mark.parametrize("broken", [DetachedAction(), DoubledGradient()], ids=["detached", "doubled"])
def test_a_wrong_gradient_fails_gradcheck_in_g_only(broken):
    report = check_group_laws(broken, gradcheck=True)
    assert {r.law for r in report.failures} == {"gradcheck_g"}
    assert "Jacobians differ" in report["gradcheck_g"].detail


def test_a_chart_that_misses_the_identity_fails_chart_identity():
    assert failed_laws(ShiftedChart()) == {"chart_identity"}


def test_claiming_exactness_for_an_interpolated_action_fails_on_white_noise():
    failed = failed_laws(FalselyExact())
    assert {"homomorphism", "inverse_action"} <= failed


def test_a_group_that_raises_is_reported_not_crashed():
    class Raises(Rotation2d):
        def inverse(self, g):
            raise RuntimeError("boom")

    report = check_group_laws(Raises())
    raised = [r for r in report.failures if "RuntimeError: boom" in r.detail]
    assert {r.law for r in raised} >= {"inverse", "inverse_action"}
    with pytest.raises(AssertionError, match="boom"):
        report.raise_if_failed()


def test_broken_groups_stay_out_of_the_registry():
    assert not {"wronginverse", "nonassociative"} & set(list_groups())
    assert WrongInverse.name == Rotation2d.name == "rotation"  # inherited attribute, not a registration


def test_group_contract_fails_for_a_broken_group():
    class BrokenContract(GroupContract):  # not collected: the name does not start with "Test"
        group = WrongInverse()

    with pytest.raises(AssertionError, match="inverse_left"):
        BrokenContract().test_inverse()
    BrokenContract().test_identity()  # the laws the defect does not touch still pass


def test_the_laws_cannot_see_an_orientation_flip_but_the_exactness_check_does():
    """Rotating clockwise instead of counter-clockwise is still a homomorphic action of the abelian SO(2): the
    laws pass. Conventions are pinned by the exactness tests against torch.rot90 (test_exactness.py)."""

    class Clockwise(Rotation2d):
        def act(self, g, x):
            return super().act(-g, x)

    check_group_laws(Clockwise()).raise_if_failed()
    x = white_noise_images(1, 1, 16, generator=torch.Generator().manual_seed(0))
    quarter = torch.full((1, 1), math.pi / 2, dtype=torch.float64)
    assert (Clockwise().act(quarter, x) - torch.rot90(x, 1, dims=(-2, -1))).abs().max() > 0.1
    assert (Rotation2d().act(quarter, x) - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 1e-12


# ---------------------------------------------------------------------------------------------- equivariance
def conv(kernel):
    weight = torch.tensor(kernel, dtype=torch.float64)[None, None]

    def fn(x):
        return F.conv2d(x, weight.to(x.dtype).expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])

    fn.__qualname__ = f"conv{tuple(map(tuple, kernel))}"
    return fn


LAPLACIAN = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]  # C4-symmetric: equivariant under rot90
SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]  # a horizontal derivative: not equivariant


@pytest.mark.parametrize("dtype", DTYPES)
def test_assert_equivariant_separates_symmetric_from_oriented_kernels(dtype):
    c4 = CyclicRotation2d(4)
    x = white_noise_images(4, 2, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
    g = torch.tensor([[math.pi / 2]], dtype=dtype).expand(4, 1)
    passed = assert_equivariant(conv(LAPLACIAN), c4, x, g=g)
    assert passed.passed and passed.law == "equivariance"
    with pytest.raises(AssertionError, match=r"max \|difference\| = .* above the tolerance"):
        assert_equivariant(conv(SOBEL_X), c4, x, g=g)


def test_assert_equivariant_fails_with_the_wrong_output_action():
    rotation = make_group("rotation")
    x = band_limited_images(4, 1, 32, generator=torch.Generator().manual_seed(2))
    assert_equivariant(lambda t: 2 * t, rotation, x)
    with pytest.raises(AssertionError, match="act_out"):
        assert_equivariant(lambda t: 2 * t, rotation, x, act_out=lambda g, y: y)


def test_assert_equivariant_fails_for_a_shift():
    x = band_limited_images(4, 1, 32, generator=torch.Generator().manual_seed(3))
    shift = lambda t: torch.roll(t, 2, dims=-1)  # noqa: E731 - a one-line function under test
    with pytest.raises(AssertionError):
        assert_equivariant(shift, make_group("rotation"), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_assert_invariant_separates_invariant_from_non_invariant_features(dtype):
    c4 = CyclicRotation2d(4)
    x = white_noise_images(4, 2, 16, generator=torch.Generator().manual_seed(4), dtype=dtype)
    g = torch.tensor([[math.pi / 2]], dtype=dtype).expand(4, 1)
    total = assert_invariant(lambda t: t.sum(dim=(-2, -1)), c4, x, g=g)
    assert total.passed and total.law == "invariance"
    with pytest.raises(AssertionError, match="above the tolerance"):
        assert_invariant(lambda t: t[..., 0, :].sum(dim=-1), c4, x, g=g)  # the top row is not invariant
