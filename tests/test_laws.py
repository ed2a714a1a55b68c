"""Contract tests: every group law, for every registered group × device × dtype (parametrized in conftest.py).

The laws are the functions of :data:`equican.testing.LAWS`, the same ones :func:`~equican.testing.check_group_laws`
and :class:`~equican.testing.GroupContract` run; hypothesis draws the seeds and batch sizes, the group samples its
own elements from the seeded generator. Tolerances are each group's measured ``tolerance(dtype)``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from equican.testing import LAWS, check_group_laws, run_law
from equican.testing.strategies import batch_sizes, seeds

# Every law but the gradcheck, which runs in float64 only (below) whatever the parametrized dtype.
PER_DTYPE_LAWS = [law for law in LAWS if law != "gradcheck"]


@pytest.mark.parametrize("law", PER_DTYPE_LAWS)
@given(seed=seeds(), batch=batch_sizes(4))
def test_law(group, device, dtype, law, seed, batch):
    run_law(law, group, seed=seed, batch=batch, dtype=dtype, device=device).raise_if_failed()


@given(seed=seeds())
def test_gradcheck(group, device, seed):
    """float64 gradcheck of ``act`` in ``x``, and in ``g`` through the chart (not for discrete groups)."""
    report = run_law("gradcheck", group, seed=seed, dtype=torch.float64, device=device)
    report.raise_if_failed()
    expected = {"gradcheck_x"} if group.discrete else {"gradcheck_x", "gradcheck_g"}
    assert {r.law for r in report.results} == expected


EXPECTED_RESULTS = ["identity_left", "identity_right", "inverse_left", "inverse_right", "associativity",
                    "act_identity", "homomorphism", "inverse_action", "act_inverse", "shapes_dtypes",
                    "inputs_unchanged", "randomness", "chart_identity", "chart_roundtrip", "chart_valid"]


def test_check_group_laws_reports_every_law(group, device, dtype):
    """The one-call entry point measures every law once, in order, and they all pass at seed 0."""
    report = check_group_laws(group, dtype=dtype, device=device, gradcheck=True)
    report.raise_if_failed()
    gradchecks = ["gradcheck_x"] if group.discrete else ["gradcheck_x", "gradcheck_g"]
    assert [r.law for r in report.results] == EXPECTED_RESULTS + gradchecks
    assert report.group is group and report.dtype == dtype


@pytest.mark.parametrize("size", [28, 96])
def test_an_image_is_acted_on_alike_in_any_batch(group, device, size):
    # A batch must not change an item's result (datasets render per item and per batch and must agree): fast paths
    # are chosen by the image size, never by the batch size. 5 × 28² points crosses the small-call threshold of the
    # affine grid, which 28² alone does not.
    gen = torch.Generator().manual_seed(0)
    g = group.sample(5, generator=gen, device=device)
    x = torch.rand(5, 2, size, size, generator=gen).to(device)
    for op in (group.act, group.act_inverse):
        batched = op(g, x)
        single = torch.cat([op(g[i:i + 1], x[i:i + 1]) for i in range(5)])
        assert torch.allclose(batched, single, rtol=0, atol=1e-6)
        # Negative control: the comparison sees a change of one item's element.
        other = torch.cat([op(g[(i + 1) % 5:(i + 1) % 5 + 1], x[i:i + 1]) for i in range(5)])
        assert not torch.allclose(batched, other, rtol=0, atol=1e-6)
