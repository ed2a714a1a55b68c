"""The DEQ canonicalizer's solver: convergence, implicit gradients, train/eval settings, non-convergence policy."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from equican import make_group
from equican.canon import ConvergenceWarning, DEQCanonicalizer, DEQConfig, DirectCanonicalizer, SolverSettings
from equican.errors import EquicanWarning, NonFiniteError

from _canon_helpers import finite_difference_gradient

SIZE = 24


def blobs(log_sigma: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Centred Gaussian blobs of widths exp(log_sigma) (normalized units), shape (B, 1, SIZE, SIZE)."""
    u = torch.linspace(-1, 1, SIZE, dtype=dtype)
    r2 = u[None, :] ** 2 + u[:, None] ** 2
    return torch.exp(-r2 / (2 * torch.exp(2 * log_sigma.to(dtype))[:, None, None]))[:, None]


class MomentUpdate(nn.Module):
    """A tiny update network for the scale group: a linear map of (log second-moment width, mean intensity).

    ``Δ(y) = w · (log σ(y), mean(y)) + b``. With ``w ≈ (-α, 0)`` the DEQ map ``z ↦ z + Δ(act(z, x))`` contracts
    with rate ``1 - α`` (magnifying by e^z adds z to log σ), so its fixed point is the scale that brings the blob
    to the width ``exp(b/α)``.
    """

    def __init__(self, alpha: float = 0.5, target: float = -1.2) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-alpha, 0.01]]))
            self.linear.bias.fill_(alpha * target)
        self.calls = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        u = torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)
        r2 = u[None, :] ** 2 + u[:, None] ** 2
        mass = y.sum(dim=(1, 2, 3))
        log_sigma = 0.5 * torch.log((y[:, 0] * r2).sum(dim=(1, 2)) / (2 * mass))
        return self.linear(torch.stack([log_sigma, y.mean(dim=(1, 2, 3))], dim=1))


def deq(net, *, gradient="implicit", train=None, eval=None, policy="best"):
    train = train or SolverSettings(solver="fixed_point_iter", max_iter=60, tol=1e-9)
    eval = eval or SolverSettings(solver="fixed_point_iter", max_iter=60, tol=1e-9)
    cfg = DEQConfig(train=train, eval=eval, gradient=gradient, backward_max_iter=200, backward_tol=1e-12,
                    on_nonconvergence=policy)
    return DEQCanonicalizer(make_group("scale"), net, cfg).double()


@pytest.mark.parametrize("solver", ["anderson", "fixed_point_iter", "broyden"])
def test_contractive_update_converges_and_canonicalizes(solver):
    # tol 1e-5: Anderson's regularized mixing (torchdeq's λ = 1e-4) stalls near 3e-6 on this problem.
    canon = deq(MomentUpdate(), eval=SolverSettings(solver=solver, max_iter=40, tol=1e-5)).eval()
    x = blobs(torch.tensor([-1.35, -1.2, -1.05]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = canon(x)
    info = res.info
    assert bool(info["converged"].all()) and float(info["residual_best"].max()) < 1e-5
    assert info["residual"].shape[0] == 3 and info["steps"].dtype == torch.int64
    assert float(canon.step(canon.zeros(x), x).detach().abs().max()) > 5e-2  # the identity is far from the fixed point
    # The three widths are brought to one canonical width: the canonical blobs agree far better than the inputs
    # (not exactly: the moment is measured on a blob truncated by the image border, which biases it differently
    # for each width; measured ratio 0.14).
    canonical_spread = float((res.x - res.x[1:2])[..., 4:-4, 4:-4].abs().max())
    input_spread = float((x - x[1:2])[..., 4:-4, 4:-4].abs().max())
    assert canonical_spread < 0.2 * input_spread, (canonical_spread, input_spread)


def test_implicit_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = MomentUpdate().double()
    canon = deq(net, gradient="implicit")
    x = blobs(torch.tensor([-1.4, -1.0]))
    w = torch.randn(2, 1, SIZE, SIZE, dtype=torch.float64)

    def loss() -> torch.Tensor:
        res = canon(x)
        return (res.x * w).sum() + (res.g ** 2).sum()

    canon.train()
    canon.zero_grad()
    loss().backward()
    analytic = torch.cat([p.grad.flatten() for p in canon.parameters()])
    canon.eval()  # the fixed point itself, solved to 1e-9, for the differences
    numeric = finite_difference_gradient(loss, canon.parameters())
    assert float(numeric.abs().max()) > 1e-2  # a non-trivial gradient
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-7), (analytic, numeric)
    # Negative control: the one-step (Jacobian-free) phantom gradient is a different quantity here.
    phantom = deq(net, gradient="phantom")
    phantom.load_state_dict(canon.state_dict())
    phantom.train()
    phantom.zero_grad()
    res = phantom(x)
    ((res.x * w).sum() + (res.g ** 2).sum()).backward()
    approx = torch.cat([p.grad.flatten() for p in phantom.parameters()])
    assert not torch.allclose(approx, numeric, rtol=1e-3, atol=1e-5)


def test_eval_really_switches_solver_settings():
    net = MomentUpdate()
    train = SolverSettings(solver="fixed_point_iter", max_iter=3, tol=1e-30)
    eval = SolverSettings(solver="fixed_point_iter", max_iter=7, tol=1e-30)
    cfg = DEQConfig(train=train, eval=eval, gradient="phantom", phantom_steps=1)
    canon = DEQCanonicalizer(make_group("scale"), net, cfg).double()
    x = blobs(torch.tensor([-1.4]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        canon.train()
        net.calls = 0
        res = canon(x)
        assert net.calls == 3 + 1  # three solver steps, one differentiated phantom step
        assert res.info["residual"].shape[1] == 3
        canon.eval()
        assert not canon.train_core.training and not canon.eval_core.training
        net.calls = 0
        res = canon(x)
        assert net.calls == 7 and res.info["residual"].shape[1] == 7
        assert canon.settings is cfg.eval


class Drift(nn.Module):
    """An update that never settles: z grows by a constant every step (residual = |c| forever)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.c.expand(y.shape[0], 1) * 1


@pytest.mark.parametrize("policy", ["best", "identity"])
def test_nonconvergence_is_reported_once_and_handled(policy):
    settings = SolverSettings(solver="anderson", max_iter=6, tol=1e-4)
    canon = deq(Drift(0.05), eval=settings, policy=policy).eval()
    x = blobs(torch.tensor([-1.4, -1.0, -1.2]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = canon(x)
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1 and "tolerance 0.0001 within 6 iterations" in str(conv[0].message)
    assert f"the {policy} policy" in str(conv[0].message)
    assert issubclass(ConvergenceWarning, EquicanWarning) and issubclass(EquicanWarning, UserWarning)
    assert not bool(res.info["converged"].any())
    assert bool(torch.isfinite(res.g).all()) and bool(torch.isfinite(res.x).all())
    dist = canon.group.distance(res.g, canon.group.identity_like(res.g))
    if policy == "identity":
        assert bool(res.info["fallback"].all()) and float(dist.max()) == 0
    else:
        assert not bool(res.info["fallback"].any()) and float(dist.min()) > 0.05


def test_nonconvergence_warns_once_per_place_in_a_loop():
    # The message names the settings, not the batch, so Python's default filter ("once per message and place")
    # shows one warning for a loop of non-converging calls instead of one per step.
    canon = deq(Drift(0.05), eval=SolverSettings(solver="anderson", max_iter=6, tol=1e-4)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for c in (-1.4, -1.0, -1.2):
            assert not bool(canon(blobs(torch.tensor([c, c + 0.1]))).info["converged"].any())
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 1
    # Negative control: with "always" every call warns, so the count above is the filter's doing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for c in (-1.4, -1.0, -1.2):
            canon(blobs(torch.tensor([c, c + 0.1])))
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 3


def test_non_finite_update_raises():
    canon = deq(Drift(float("nan"))).eval()
    with pytest.raises(NonFiniteError):
        canon(blobs(torch.tensor([-1.0])))


def test_direct_is_one_step_of_the_deq_map():
    net = MomentUpdate()
    x = blobs(torch.tensor([-1.4, -1.0]))
    direct = DirectCanonicalizer(make_group("scale"), net).double()
    z, _ = direct.solve(x)
    assert torch.allclose(z, direct.step(torch.zeros_like(z), x))
    one = deq(net, eval=SolverSettings(solver="fixed_point_iter", max_iter=1, tol=1e-30)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert torch.allclose(one(x).g, direct(x).g)
