"""The optimization canonicalizer: descent on the energy, unrolled gradients match finite differences."""

from __future__ import annotations

import pytest
import torch
from test_canon_deq import MomentUpdate, blobs

from equican import make_group
from equican.canon import OptimizationCanonicalizer, OptimizationConfig
from equican.canon.nets import FixedPointEnergy
from equican.errors import ShapeError


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_descends_the_energy(optimizer):
    canon = OptimizationCanonicalizer(make_group("scale"), FixedPointEnergy(MomentUpdate()),
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
    canon = OptimizationCanonicalizer(make_group("scale"), FixedPointEnergy(MomentUpdate()), cfg).double()
    x = blobs(torch.tensor([-1.4, -1.0]))
    w = torch.randn(2, 1, 24, 24, dtype=torch.float64)

    def loss() -> torch.Tensor:
        res = canon(x)
        return (res.x * w).sum() + (res.g ** 2).sum()

    canon.train()
    canon.zero_grad()
    loss().backward()  # second derivatives of the energy through the actions: needs twice_differentiable()
    analytic = torch.cat([p.grad.flatten() for p in canon.parameters()])
    numeric = []
    eps = 1e-6
    with torch.no_grad():
        for p in canon.parameters():
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = loss().item()
                p.view(-1)[i] = old - eps
                down = loss().item()
                p.view(-1)[i] = old
                numeric.append((up - down) / (2 * eps))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    assert float(numeric.abs().max()) > 1e-2
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-7), (analytic, numeric)


def test_eval_mode_does_not_unroll_and_energy_shape_is_checked():
    canon = OptimizationCanonicalizer(make_group("scale"), FixedPointEnergy(MomentUpdate()),
                                      OptimizationConfig(steps=2, eval_steps=4)).double().eval()
    x = blobs(torch.tensor([-1.4]))
    res = canon(x)
    assert res.info["energy"].shape == (1, 4)
    assert not res.g.requires_grad
    bad = OptimizationCanonicalizer(make_group("scale"), lambda y: y.sum(), OptimizationConfig(steps=1))
    with pytest.raises(ShapeError, match=r"expected the energy to return shape \(1,\)"):
        bad(x.float())
