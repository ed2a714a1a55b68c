"""Issue 22, items 10-14: crashes and hangs inside the library, each with its regression test and, where a check
could pass vacuously, a negative control.

10. The DEQ's Jacobian penalty and implicit gradient over discrete groups (an autograd RuntimeError before).
11. Group members called unchecked under bfloat16 autocast (the monotone inverse's Newton step raised).
12. Bounded iteration caps, and solvers whose cost follows the steps taken, not the cap.
13. A registered builder that returns something other than a Canonicalizer.
14. Public entry points that call ``Group.unchecked`` members validate what they are given.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from equican import make_group
from equican.canon import Canonicalizer, make_canonicalizer, register_canonicalizer
from equican.canon import registry
from equican.canon.deq import MAX_ITER, DEQCanonicalizer, DEQConfig, SolverSettings
from equican.canon.objective import CanonicalizationLoss, ElementDistribution, canonicalization_loss
from equican.errors import (ConfigError, ConvergenceWarning, DTypeError, EquicanError, InvalidElementError,
                            NonFiniteError, RegistrationError, ShapeError)

ROOT = Path(__file__).resolve().parents[1]


def images(b: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- 10: discrete groups
@pytest.mark.parametrize("name", ["cyclic", "dihedral"])
@pytest.mark.parametrize("gradient", ["phantom", "implicit"])
def test_dec_trains_over_discrete_groups_with_jacobian_weight(name, gradient):
    torch.manual_seed(0)
    canon = make_canonicalizer("dec", make_group(name), 1, {"channels": [8], "jacobian_weight": 1.0,
                                                            "gradient": gradient}).train()
    result = quiet(canon, images())
    assert float(result.info["jacobian"]) == 0.0  # ∂f/∂z = 0: the update sees z through an argmax
    loss = result.x.pow(2).mean() + canon.regularizer(result.info)
    loss.backward()  # raised "the differentiated Tensor ... appears to not have been used in the graph"
    grads = [p.grad for p in canon.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_implicit_gradient_over_a_discrete_group_is_the_one_step_phantom_gradient():
    group, x = make_group("cyclic"), images()

    def grads(gradient: str) -> torch.Tensor:
        torch.manual_seed(0)
        canon = make_canonicalizer("dec", group, 1, {"channels": [8], "gradient": gradient}).train()
        with torch.no_grad():
            for p in canon.parameters():
                p.add_(0.1 * torch.randn_like(p))
        result = quiet(canon, x)
        (result.x.pow(2).mean() + result.g.pow(2).sum()).backward()
        return torch.cat([p.grad.flatten() for p in canon.parameters() if p.grad is not None])

    torch.testing.assert_close(grads("implicit"), grads("phantom"), rtol=0, atol=0)


def test_jacobian_penalty_of_a_continuous_group_is_torchdeqs_estimate():
    # Negative control: the penalty is zeroed for discrete groups only; elsewhere it is torchdeq's jac_reg.
    from torchdeq.loss import jac_reg

    torch.manual_seed(0)
    canon = make_canonicalizer("dec", make_group("rotation"), 1, {"channels": [8], "jacobian_weight": 1.0}).train()
    with torch.no_grad():
        for p in canon.parameters():
            p.add_(0.1 * torch.randn_like(p))
    features = canon.update_input(images())
    z = 0.3 * torch.randn(4, *canon.group.unconstrained_shape)
    torch.manual_seed(1)
    ours = canon._jacobian_penalty(z, features)
    torch.manual_seed(1)
    z0 = z.clone().requires_grad_()
    theirs = jac_reg(canon.step(z0, features), z0, vecs=1, create_graph=True)
    assert float(ours.detach()) > 0
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in canon.parameters())


# ---------------------------------------------------------------------------------------------- 11: autocast
class _FixedWarp(Canonicalizer):
    """Predicts the same moderate monotone warp for every call (one under which the inverse takes its Newton step)."""

    def solve(self, x):
        z = 0.5 * torch.randn(x.shape[0], *self.group.unconstrained_shape, generator=torch.Generator().manual_seed(0))
        return z.to(x.dtype), {}


def _monotone():
    return make_group("monotone", cells=3, min_width=0.0)  # the paper preset's group


def test_unchecked_monotone_inverse_under_bfloat16_autocast_is_the_float32_result():
    group = _monotone()
    g = group.from_unconstrained(
        0.5 * torch.randn(4, *group.unconstrained_shape, generator=torch.Generator().manual_seed(0)))
    x = images(4, 48)
    reference = group.act_inverse(g, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # Negative control: autocast is really on here (a matmul runs in bfloat16), so the test can see it.
        assert (x[0, 0] @ x[0, 0]).dtype == torch.bfloat16
        out = group.unchecked.act_inverse(g, x)  # raised "Index put requires ... BFloat16 ... Float"
        h = group.unchecked.inverse(g)
    assert out.dtype == torch.float32 and h.dtype == torch.float32
    assert torch.equal(out, reference) and torch.equal(h, group.inverse(g))
    # A bfloat16 image through the public inverse: acted on in float32, rounded once on the way out.
    low = group.act_inverse(g, x.bfloat16())
    assert low.dtype == torch.bfloat16
    assert (low.float() - group.act_inverse(g, x.bfloat16().float())).abs().max() <= 2.0 ** -8


def test_canonicalization_loss_under_bfloat16_autocast():
    group = _monotone()
    canon = _FixedWarp(group)
    x = images(4, 24, seed=1)
    k = group.sample(4, generator=torch.Generator().manual_seed(2))
    config = CanonicalizationLoss(guard=1.0)  # the guard's round trip is the monotone inverse the crash was in
    reference = canonicalization_loss(canon, x, k, config).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = canonicalization_loss(canon, x, k, config)
    assert terms.loss.dtype == torch.float32 and torch.isfinite(terms.loss).all()
    torch.testing.assert_close(terms.loss, reference, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- 12: iteration caps
def test_solver_settings_bound_their_caps():
    assert SolverSettings(max_iter=MAX_ITER).max_iter == MAX_ITER == 10_000  # negative control: the bound itself
    with pytest.raises(ConfigError, match=r"SolverSettings: expected max_iter to be an int in \[1, 10000\], "
                                          r"got 1000000000000000000"):
        SolverSettings(max_iter=10**18)
    with pytest.raises(ConfigError, match=r"expected max_iter .* got 10001"):
        SolverSettings(max_iter=MAX_ITER + 1)
    DEQConfig(backward_max_iter=MAX_ITER, phantom_steps=MAX_ITER)
    for key in ("backward_max_iter", "phantom_steps"):
        with pytest.raises(ConfigError, match=rf"DEQConfig: expected {key} to be an int in \[1, 10000\], "
                                              r"got 1000000000000000000"):
            DEQConfig(**{key: 10**18})


@pytest.mark.parametrize("option", ["train_iter", "eval_iter"])
@pytest.mark.parametrize("preset", ["equican", "paper"])
def test_dec_options_bound_their_caps_by_name(option, preset):
    group = make_group("monotone", cells=3, min_width=0.0) if preset == "paper" else make_group("rotation")
    options = {"channels": [4], "preset": preset}
    with pytest.raises(ConfigError, match=rf"canonicalizer 'dec': expected {option} to be an int in \[1, 10000\], "
                                          r"got 1000000000000000000"):
        make_canonicalizer("dec", group, 1, {**options, option: 10**18})
    # Negative control: the bound itself builds.
    canon = make_canonicalizer("dec", group, 1, {**options, option: MAX_ITER})
    assert isinstance(canon, DEQCanonicalizer)


def test_a_saved_model_with_an_unbounded_cap_is_refused(tmp_path):
    canon = make_canonicalizer("dec", make_group("rotation"), 1, {"channels": [4]})
    canon.save_pretrained(str(tmp_path / "model"))
    assert isinstance(Canonicalizer.from_pretrained(str(tmp_path / "model")), DEQCanonicalizer)  # negative control
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    config["canonicalizer"]["options"]["eval_iter"] = 10**18
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"expected eval_iter to be an int in \[1, 10000\], got 1000000000000000000"):
        Canonicalizer.from_pretrained(str(tmp_path / "model"))


def test_the_command_line_refuses_an_unbounded_cap(capsys, tmp_path):
    from equican.cli import main

    status = main(["train", "--config", "demo", "--method", "dec", "--group", "rotation", "--epochs", "1",
                   "--set", "method.options.train_iter=1000000000000000000", "--no-progress",
                   "--out", str(tmp_path / "run")])
    assert status != 0
    assert "expected train_iter to be an int in [1, 10000], got 1000000000000000000" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _contraction(dtype, scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = (scale * torch.randn(3, 6, 6, generator=gen) / 6 ** 0.5).to(dtype)
    b = torch.randn(3, 6, 1, generator=gen).to(dtype)
    return lambda z: torch.tanh(w @ z + b), torch.zeros(3, 6, 1, dtype=dtype)


def test_a_converged_solve_stops_evaluating_at_the_bound():
    # torchdeq stops calling the update map once every input converged, whatever the cap (it pads only its trace).
    from torchdeq.solver import get_solver

    for name in ("anderson", "broyden", "fixed_point_iter"):
        for tol, converges in ((1e-6, True), (0.0, False)):
            f, z0 = _contraction(torch.float64, 0.3)
            calls = []

            def counted(z, f=f):
                calls.append(1)
                return f(z)

            get_solver(name)(counted, z0, max_iter=200, tol=tol)
            # Negative control: a tolerance no residual can meet (0) runs to the cap.
            assert (len(calls) < 60) == converges, (name, tol, len(calls))
    # Through the canonicalizer: an untrained DEC is at its fixed point at once, whatever the cap.
    group = make_group("rotation")
    for solver in ("anderson", "broyden", "fixed_point_iter"):
        s = SolverSettings(solver=solver, max_iter=MAX_ITER)
        canon = make_canonicalizer("dec", group, 1, {"channels": [4], "config": DEQConfig(train=s, eval=s)}).eval()
        with torch.no_grad():
            result = canon(images())
        assert bool(result.info["converged"].all()) and int(result.info["steps"].max()) <= 3, solver


# ---------------------------------------------------------------------------------------------- 13: plugin builders
@pytest.fixture
def scratch_registry(monkeypatch):
    registry.list_canonicalizers()
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


@pytest.mark.parametrize("returned", [None, [1, 2], nn.Linear(2, 2), "a canonicalizer"])
def test_a_builder_returning_no_canonicalizer_is_named(scratch_registry, returned):
    @register_canonicalizer("broken_plugin")
    def build_broken(group, in_channels, opts):
        return returned

    with pytest.raises(RegistrationError) as info:
        make_canonicalizer("broken_plugin", make_group("rotation"), 1)
    message = str(info.value)
    assert "canonicalizer 'broken_plugin'" in message and "build_broken" in message
    assert "expected its builder" in message and type(returned).__qualname__ in message


def test_a_builder_returning_a_canonicalizer_builds(scratch_registry):
    # Negative control: the same registration with a proper builder works.
    from equican.canon.base import IdentityCanonicalizer

    @register_canonicalizer("fine_plugin")
    def build_fine(group, in_channels, opts):
        return IdentityCanonicalizer(group)

    canon = make_canonicalizer("fine_plugin", make_group("rotation"), 1)
    assert isinstance(canon, IdentityCanonicalizer) and canon.canonicalizer_config["kind"] == "fine_plugin"


# ---------------------------------------------------------------------------------------------- 14: unchecked
def _bad_elements(group):
    shape = (2, *group.param_shape)
    yield [0.0, 0.0], (DTypeError, ShapeError)  # canonicalization_loss reads a non-tensor k as the wrong shape
    yield torch.tensor(1.0), ShapeError
    yield torch.zeros(2, *group.param_shape, 3), ShapeError
    yield torch.zeros(shape, dtype=torch.long), DTypeError
    yield torch.zeros(shape, dtype=torch.bfloat16), DTypeError


@pytest.mark.parametrize("name", ["cyclic", "dihedral", "monotone", "affine", "rotation"])
def test_public_entry_points_that_run_unchecked_validate_first(name):
    group = make_group(name)
    canon = make_canonicalizer("direct", group, 1, {"channels": [4]})
    x, dist = images(2, 12), ElementDistribution(strengths=(0.5,))
    k = group.sample(2, generator=torch.Generator().manual_seed(0))
    for value, error in _bad_elements(group):
        for call, argument in ((lambda v: canonicalization_loss(canon, x, v), "k"),
                               (lambda v: dist.scale(v, group), "k"), (lambda v: canon.prior_loss(v), "g")):
            with pytest.raises(error, match=f"expected {argument}"):
                call(value)
    nan = torch.full_like(k, float("nan"))
    for call in (lambda v: canonicalization_loss(canon, x, v), lambda v: dist.scale(v, group)):
        with pytest.raises(NonFiniteError, match="expected finite values in k"):
            call(nan)
    with pytest.raises(ConfigError, match="expected canonicalizer to be an equican Canonicalizer"):
        canonicalization_loss(nn.Identity(), x, k)
    with pytest.raises(ConfigError, match="expected config to be a CanonicalizationLoss"):
        canonicalization_loss(canon, x, k, {"guard": 1})
    with pytest.raises(ConfigError, match="expected step"):
        dist.scale(k, group, step=-1)
    # Negative control: valid arguments pass.
    assert torch.isfinite(canonicalization_loss(canon, x, k).loss).all()
    assert dist.scale(k, group).shape == k.shape and canon.prior_loss(k).shape == (2,)


def test_an_invalid_element_is_refused_before_it_runs_unchecked():
    group = make_group("affine")
    canon = make_canonicalizer("direct", group, 1, {"channels": [4]})
    flipped = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 2)  # det < 0: not in GL⁺(2)
    with pytest.raises(InvalidElementError, match="canonicalization_loss: expected k to be valid elements"):
        canonicalization_loss(canon, images(2, 12), flipped)
    with pytest.raises(InvalidElementError, match="ElementDistribution.scale: expected k"):
        ElementDistribution().scale(flipped, group)


def test_unchecked_members_raise_untyped_errors_on_what_the_entry_points_refuse():
    # Negative control for the test above: the checks are what turn these inputs into typed errors. The unchecked
    # member itself raises torch's own error (or returns garbage), as its docstring says.
    group = make_group("dihedral")
    nan = torch.full((2, *group.param_shape), float("nan"))
    with pytest.raises(Exception) as info:
        group.unchecked.to_unconstrained(nan)
    assert not isinstance(info.value, EquicanError)
    with pytest.raises(NonFiniteError):
        group.to_unconstrained(nan)


# Every function of the package that calls Group.unchecked members, and why its arguments are trusted. A new use
# fails this test until it is reviewed and listed here (and the entry point validates its input if it is public).
UNCHECKED_CALLERS = {
    "equican/canon/base.py": {"elements": "z from the solver (non-finite rows replaced before the call)",
                              "chart_identity": "zeros built here",
                              "canonical_input": "z, h from elements(), x validated by canonicalize",
                              "prior_loss": "check_shape; values are the canonicalizer's (finite)"},
    "equican/canon/direct.py": {"correction": "z from the solver via elements(), x validated by canonicalize"},
    "equican/canon/paper.py": {"correction": "as UpdateCanonicalizer.correction"},
    "equican/canon/objective.py": {"scale_draws": "the group's own samples (sample, keyed_elements) or checked k "
                                                  "(scale)",
                                   "canonicalization_loss": "x and k checked in full; h from the canonicalizer"},
    "equican/canon/prior.py": {"identity_index": "a discrete group checked first; one-hot scores and the identity "
                                                 "built here"},
}


def test_every_unchecked_caller_is_reviewed():
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "equican").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                uses = any(isinstance(n, ast.Attribute) and n.attr == "unchecked" for n in ast.walk(node))
                nested = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not node
                             and any(isinstance(m, ast.Attribute) and m.attr == "unchecked" for m in ast.walk(n))
                             for n in ast.walk(node))
                if uses and not nested:
                    found.setdefault(str(path.relative_to(ROOT)), set()).add(node.name)
    found.pop("equican/group.py", None)  # the property itself
    assert found == {path: set(names) for path, names in UNCHECKED_CALLERS.items()}
