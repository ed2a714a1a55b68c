"""The DEQ canonicalizer's solver: convergence, implicit gradients, train/eval settings, non-convergence policy."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from equican import make_group
from equican.canon import (ConvergenceWarning, DEQCanonicalizer, DEQConfig, DirectCanonicalizer, SolverSettings,
                           UpdateNet)
from equican.errors import ConfigError, EquicanWarning

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
        # three solver steps, one differentiated phantom step, one measuring the returned iterate's true residual
        assert net.calls == 3 + 1 + 1
        assert res.info["residual"].shape[1] == 3
        canon.eval()
        assert not canon.train_core.training and not canon.eval_core.training
        net.calls = 0
        res = canon(x)
        assert net.calls == 7 + 1 and res.info["residual"].shape[1] == 7
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


def test_non_finite_update_falls_back_to_the_identity():
    # Issue 13 D1: a NaN update is held at the identity inside the solve and reported, never raised or returned.
    canon = deq(Drift(float("nan"))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = canon(blobs(torch.tensor([-1.0])))
    assert torch.isfinite(res.x).all()
    assert res.info["fallback"].all() and not res.info["converged"].any()
    assert torch.equal(res.h, canon.group.identity(1, dtype=res.h.dtype))


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


# ---------------------------------------------------------------------------------------------- issue 13: D1, D2, D9
def _wild_net(group, std: float, seed: int = 0) -> UpdateNet:
    torch.manual_seed(seed)
    net = UpdateNet(1, group.unconstrained_shape, channels=(8, 16))
    nn.init.normal_(net.head.weight, std=std)
    nn.init.normal_(net.head.bias, std=std)
    return net


@pytest.mark.parametrize("name, std", [("scale", 1.0), ("affine", 1.0), ("rotation", 100.0), ("monotone", 30.0)])
def test_wild_updates_fall_back_per_input_instead_of_raising(name, std):
    # D1: the group's validation used to raise mid-solve (NonFiniteError, "det A <= 0"), and Anderson's singular
    # least-squares step raised an untyped LinAlgError for the whole batch.
    group = make_group(name)
    canon = DEQCanonicalizer(group, _wild_net(group, std)).eval()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = canon(x)
    assert torch.isfinite(res.x).all() and torch.isfinite(res.h).all()
    assert res.info["converged"].shape == (4,) and res.info["fallback"].shape == (4,)
    # An input that falls back gets exactly the identity.
    back = res.info["fallback"]
    if back.any():
        torch.testing.assert_close(res.x[back], x[back], atol=1e-5, rtol=0)


def test_singular_anderson_step_retries_with_plain_iteration():
    # Negative control for the retry: Anderson itself raises on this batch (so the fallback path is exercised).
    from torchdeq.solver import get_solver

    group = make_group("affine")
    canon = DEQCanonicalizer(group, _wild_net(group, 1.0)).eval()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    features = canon.update_input(x)
    with torch.no_grad(), pytest.raises(torch.linalg.LinAlgError):
        get_solver("anderson")(lambda z: canon.step(z, features), canon.zeros(x), max_iter=10, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = canon(x)
    assert torch.isfinite(res.x).all()


def test_convergence_is_judged_on_the_true_residual():
    # D2: iterates at ~4e8 rad absorbed the update in float32, so the residual read 0 and "converged" was True.
    group = make_group("rotation")
    s = SolverSettings(solver="broyden", max_iter=6)
    canon = DEQCanonicalizer(group, _wild_net(group, 1.0), DEQConfig(train=s, eval=s)).eval()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        z, info = canon.solve(x)
        projected, dz = canon.correction(z, x)
    true = ((projected.double() - z.double()) + dz.double()).flatten(1).norm(dim=1)
    assert not info["converged"].any()
    assert (true > s.tol).all()
    # The reported residual is that true residual (for inputs that kept their iterate).
    kept = ~info["fallback"]
    torch.testing.assert_close(info["residual_true"][kept].double(), true[kept], rtol=1e-4, atol=1e-6)


def test_residual_is_not_absorbed_at_large_iterates():
    # The float64 formation (P(z) − z) + Δ sees a unit update at z = 4e8 that a float32 f(z) − z reads as 0.
    class Constant(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1), -9.0, dtype=x.dtype)

    canon = DEQCanonicalizer(make_group("scale"), Constant()).eval()
    x = torch.rand(2, 1, 8, 8)
    z = torch.full((2, 1), 4e8)
    assert float((canon.step(z, x) - z).abs().max()) == 0.0  # float32 absorbs the update: the trap itself
    residual, _, _ = canon._true_residual(z, x)
    torch.testing.assert_close(residual, torch.full((2,), 9.0))


def test_diverging_implicit_backward_is_reported_not_nan():
    # D9: the implicit gradient's adjoint solve diverged and returned NaN gradients silently.
    group = make_group("rotation")
    canon = DEQCanonicalizer(group, _wild_net(group, 100.0), DEQConfig(gradient="implicit")).train()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = canon(x)
        (res.x.sum() + canon.prior_loss(res.h).sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in canon.parameters() if p.grad is not None)
    assert any("backward pass produced a non-finite gradient" in str(w.message) for w in caught)


def test_empty_batch():
    group = make_group("scale")
    res = DEQCanonicalizer(group, UpdateNet(1, (1,), channels=(4,))).eval()(torch.rand(0, 1, 8, 8))
    assert res.x.shape == (0, 1, 8, 8) and res.info["converged"].shape == (0,)


def test_residual_and_jacobian_regularizers():
    group = make_group("scale")
    torch.manual_seed(0)
    plain = DEQCanonicalizer(group, UpdateNet(1, (1,), channels=(4,))).train()
    x = torch.rand(3, 1, 12, 12)
    assert plain.regularizer(plain(x).info) == 0.0
    cfg = DEQConfig(residual_weight=2.0, jacobian_weight=0.5)
    canon = DEQCanonicalizer(group, _wild_net(group, 0.3), cfg).train()
    res = canon(x)
    reg = canon.regularizer(res.info)
    expected = 2.0 * res.info["residual_loss"] + 0.5 * res.info["jacobian"]
    torch.testing.assert_close(reg, expected)
    reg.backward()
    assert canon.net.head.weight.grad is not None and canon.net.head.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="residual_weight"):
        DEQConfig(residual_weight=-1.0)


class _Push(nn.Module):
    """An update that always asks for more of every chart coordinate: ``f(z) = P(z) + c``, with no fixed point."""

    def __init__(self, shape: tuple[int, ...], c: float = 0.7) -> None:
        super().__init__()
        self.shape, self.c = shape, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *self.shape), self.c, dtype=x.dtype, device=x.device)


@pytest.mark.parametrize("group_name", ["scale", "affine"])
def test_bound_gives_a_runaway_update_a_fixed_point_inside_the_box(group_name):
    group = make_group(group_name)
    x = torch.rand(3, 1, 16, 16)
    settings = SolverSettings(max_iter=30, tol=1e-4)

    def solve(bound):
        canon = DEQCanonicalizer(group, _Push(group.unconstrained_shape),
                                 DEQConfig(train=settings, eval=settings, bound=bound)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return canon.solve(x)

    z, info = solve(3.0)
    assert bool(info["converged"].all()) and float(z.abs().max()) < 3.0
    # Negative control: unbounded, the iterate runs away and no input converges.
    _, info = solve(None)
    assert not bool(info["converged"].any())


def test_bound_is_validated():
    for bad in (0, -1.0, float("inf"), "3", True):
        with pytest.raises(ConfigError, match="bound"):
            DEQConfig(bound=bad)
    assert DEQConfig(bound=2).bound == 2
