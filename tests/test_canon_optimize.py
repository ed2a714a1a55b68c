"""The optimization canonicalizer: descent on the energy, unrolled gradients match finite differences."""

from __future__ import annotations

import pytest
import torch
from _canon_helpers import finite_difference_gradient
from test_canon_deq import MomentUpdate, blobs

from equican import make_group
from equican.canon import DEQCanonicalizer, DEQConfig, OptimizationCanonicalizer, OptimizationConfig, SolverSettings
from equican.canon.nets import FixedPointEnergy
from equican.errors import ConfigError, ShapeError


def moment_energy() -> FixedPointEnergy:
    return FixedPointEnergy(MomentUpdate(), make_group("scale"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_descends_the_energy(optimizer):
    canon = OptimizationCanonicalizer(make_group("scale"), moment_energy(),
                                      OptimizationConfig(steps=8, lr=1.0 if optimizer == "sgd" else 0.05,
                                                         optimizer=optimizer)).double().eval()
    res = canon(blobs(torch.tensor([-1.5, -0.9])))
    energy = res.info["energy"]
    assert energy.shape == (2, 8)
    assert bool((energy[:, -1] < 0.5 * energy[:, 0]).all()), energy


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_unrolled_gradient_matches_finite_differences(optimizer):
    torch.manual_seed(0)
    cfg = OptimizationConfig(steps=3, lr=1.0 if optimizer == "sgd" else 0.05, optimizer=optimizer, unroll=3)
    canon = OptimizationCanonicalizer(make_group("scale"), moment_energy(), cfg).double()
    x = blobs(torch.tensor([-1.4, -1.0]))
    w = torch.randn(2, 1, 24, 24, dtype=torch.float64)

    def loss() -> torch.Tensor:
        res = canon(x)
        return (res.x * w).sum() + (res.g ** 2).sum()

    canon.train()
    canon.zero_grad()
    loss().backward()  # second derivatives of the energy through the actions: needs twice_differentiable()
    analytic = torch.cat([p.grad.flatten() for p in canon.parameters()])
    numeric = finite_difference_gradient(loss, canon.parameters())
    assert float(numeric.abs().max()) > 1e-2
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-7), (analytic, numeric)


def test_eval_mode_does_not_unroll_and_energy_shape_is_checked():
    canon = OptimizationCanonicalizer(make_group("scale"), moment_energy(),
                                      OptimizationConfig(steps=2, eval_steps=4)).double().eval()
    x = blobs(torch.tensor([-1.4]))
    res = canon(x)
    assert res.info["energy"].shape == (1, 4)
    assert not res.g.requires_grad
    bad = OptimizationCanonicalizer(make_group("scale"), lambda y: y.sum(), OptimizationConfig(steps=1))
    with pytest.raises(ShapeError, match=r"expected the energy to return shape \(1,\)"):
        bad(x.float())


def test_fixed_point_energy_vanishes_at_the_deq_fixed_point():
    net = MomentUpdate().double()
    energy = FixedPointEnergy(net, make_group("scale"))
    settings = SolverSettings(solver="fixed_point_iter", max_iter=60, tol=1e-9)
    deq = DEQCanonicalizer(make_group("scale"), net, DEQConfig(train=settings, eval=settings)).double().eval()
    x = blobs(torch.tensor([-1.4, -1.0]))
    with torch.no_grad():
        assert float(energy(deq(x).x).max()) < 1e-15
        assert float(energy(x).min()) > 1e-3  # and not elsewhere


class RowOffset(torch.nn.Module):
    """An update adding ``offset`` to every logit of a (monotone) chart: a correction that changes no element."""

    def __init__(self, shape, offset):
        super().__init__()
        self.shape, self.offset = shape, offset

    def forward(self, y):
        base = y.mean(dim=(1, 2, 3))[:, None, None, None] * torch.linspace(-1, 1, self.shape[-1], dtype=y.dtype)
        return base.expand(-1, *self.shape) + self.offset


def test_fixed_point_energy_ignores_corrections_that_change_no_element():
    # Monotone logits are a softmax per row: adding a constant to a row changes no element, and a DEQ fixed point
    # z = P(z) + Δ does not need that part of Δ to vanish; the energy must not count it either.
    group = make_group("monotone")
    x = blobs(torch.tensor([-1.4, -1.0]))
    plain = FixedPointEnergy(RowOffset(group.unconstrained_shape, 0.0), group)(x)
    shifted = FixedPointEnergy(RowOffset(group.unconstrained_shape, 0.7), group)(x)
    assert float(plain.min()) > 1e-3
    assert torch.allclose(plain, shifted, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError, match="expected group"):
        FixedPointEnergy(MomentUpdate(), "scale")
