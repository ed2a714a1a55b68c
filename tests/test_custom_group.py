"""A user-defined group is law-tested with no new test code.

This module defines :class:`HorizontalShear` the way a user would, registering it with ``name="shear_x"``. Nothing
else is needed: ``conftest.py`` parametrizes every test taking ``group`` over the registry when a module is
collected, and pytest collects test files alphabetically, so ``test_laws.py`` (and every other registry-driven
module after this one) runs its contract tests on ``shear_x`` as well. The last test below checks that those
tests really were collected. ``TestHorizontalShearContract`` shows the other route, for a user's own test suite:
subclass :class:`~equican.testing.GroupContract`.
"""

from __future__ import annotations

import pytest
import torch

from equican import Group, Tolerance, group_class, list_groups
from equican.errors import ConfigError
from equican.sampling import affine_sample
from equican.testing import LAWS, GroupContract, check_group_laws


class HorizontalShear(Group, name="shear_x"):
    """Horizontal shears ``u ↦ (u_x + a·u_y, u_y)`` of the image plane.

    Convention:
        An element is the shear factor ``a``, shape ``(B, 1)``; every real value is valid. Composition adds factors
        (shears along one axis commute). ``act(a, x)(u) = x(u_x - a·u_y, u_y)`` in normalized coordinates; samples
        leaving the image read 0.

    Args:
        max_shear: :meth:`sample` draws ``a`` uniformly from ``[-max_shear, max_shear)``.
    """

    def __init__(self, max_shear: float = 0.3) -> None:
        if not (isinstance(max_shear, (int, float)) and 0 <= max_shear <= 1):
            raise ConfigError(f"HorizontalShear: expected max_shear in [0, 1], got {max_shear!r}")
        self.max_shear = float(max_shear)

    @property
    def param_shape(self) -> tuple[int, ...]:
        return (1,)

    def identity(self, batch, *, device=None, dtype=None):
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return self.uniform((batch, 1), -self.max_shear, self.max_shear, generator=generator, device=device,
                             dtype=dtype)

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def act(self, g, x):
        one, zero = torch.ones_like(g[:, 0]), torch.zeros_like(g[:, 0])
        matrix = torch.stack([torch.stack([one, -g[:, 0], zero], -1), torch.stack([zero, one, zero], -1)], 1)
        return affine_sample(x, matrix)

    def tolerance(self, dtype):
        # Measured with equican.testing.measure_law_errors (seeds 0-1999, batch 4, 32×32 band-limited images,
        # interior crop). element: largest error 0.5 eps (float64) / 1 eps (float32), associativity; bound 2 eps,
        # two roundings of sums below 1 on each side. action: largest error 0.0220 (float64) / 0.0202 (float32),
        # inverse action (homomorphism 0.0182 / 0.0192); bound 0.033, 1.5x.
        return Tolerance(element=2 * torch.finfo(dtype).eps, action=0.033)


def test_the_new_group_is_registered():
    assert "shear_x" in list_groups()
    assert group_class("shear_x") is HorizontalShear


def test_check_group_laws_passes_for_the_new_group(dtype):
    check_group_laws(HorizontalShear(), dtype=dtype, gradcheck=True).raise_if_failed()


def test_registry_driven_contract_tests_include_the_new_group(request):
    """Every law test in test_laws.py was collected for ``shear_x`` too, without a line of test code for it."""
    items = request.session.items
    law_items = [item for item in items if item.path.name == "test_laws.py"]
    if not law_items:
        pytest.skip("tests/test_laws.py is not part of this run")
    if items.index(law_items[0]) < items.index(request.node):
        pytest.skip("tests/test_laws.py was collected before this module registered shear_x (files given out of "
                    "alphabetical order on the command line)")
    shear_items = [item for item in law_items
                   if isinstance(getattr(item, "callspec", None) and item.callspec.params.get("group"),
                                 HorizontalShear)]
    laws_tested = {item.callspec.params["law"] for item in shear_items if "law" in item.callspec.params}
    assert laws_tested == set(LAWS) - {"gradcheck"}, f"laws collected for shear_x: {sorted(laws_tested)}"
    assert any(item.originalname == "test_gradcheck" for item in shear_items)


class TestHorizontalShearContract(GroupContract):
    """How a user law-tests their group in their own suite: one hypothesis-driven test per law."""

    group = HorizontalShear(max_shear=0.2)
