"""Training methods: every registered method trains around a tiny backbone; options, names and random elements."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equican.canon import Canonicalized
from equican.config import MethodConfig
from equican.errors import ConfigError, ConvergenceWarning, UnknownNameError
from equican.latent import LatentCanonicalized
from equican.canon import list_canonicalizers
from equican.methods import METHODS, Objective, build_objective, list_methods, method_group
from equican.models import build_model

SIZE = 16
CLASSES = 10
CANON_METHODS = ("dec", "direct", "optimization", "escnn", "identity")
# Small update networks: the methods' defaults are MNIST-sized.
TINY_OPTIONS = {"dec": {"channels": [4, 8]}, "direct": {"channels": [4, 8]}, "optimization": {"channels": [4, 8]},
                "escnn": {"channels": [2], "kernel_size": 3}, "latent": {"channels": [4, 8]}}


def tiny_backbone() -> nn.Module:
    return build_model("cnn", in_channels=1, num_classes=CLASSES, image_size=SIZE, options={"channels": [4, 8]})


def needs(name: str) -> None:
    if name == "escnn":
        pytest.importorskip("escnn")


def tiny_objective(name: str, *, seed: int = 0, backbone: nn.Module | None = None, **config) -> Objective:
    needs(name)
    torch.manual_seed(0)
    config.setdefault("options", TINY_OPTIONS.get(name, {}))
    if name == "escnn":
        config.setdefault("group", "cyclic")  # the exact canonicalizer needs a rotation group
    return build_objective(MethodConfig(name=name, **config), backbone or tiny_backbone(), in_channels=1, seed=seed)


def batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    return x, y, torch.arange(100, 100 + n)


def train_steps(objective: nn.Module, steps: int) -> list[str]:
    """Names of the parameters that ``steps`` AdamW steps (no weight decay) left exactly unchanged."""
    before = {n: p.detach().clone() for n, p in objective.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x, y, index = batch(8)
    objective.train()
    for step in range(steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            loss, _ = objective(x, y, index, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [n for n, p in objective.named_parameters() if p.requires_grad and torch.equal(p, before[n])]


# ---------------------------------------------------------------------------------------------- every method
def test_registry_lists_the_documented_methods():
    assert list_methods() == [*METHODS, *list_canonicalizers()]
    assert set(list_methods()) == {"plain", "augment", "invariance", "dec", "direct", "optimization", "escnn",
                                   "latent", "identity"}


@pytest.mark.parametrize("name", list_methods())
def test_one_step_gives_a_finite_loss_and_gradients_everywhere(name):
    objective = tiny_objective(name)
    assert isinstance(objective, Objective)
    x, y, index = batch()
    objective.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loss, stats = objective(x, y, index, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert stats["loss"] == pytest.approx(float(loss.detach()))
    loss.backward()
    params = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    assert params
    no_grad = [n for n, p in params if p.grad is None]
    assert not no_grad, f"{name}: no gradient reached {no_grad}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    logits = objective.eval().model(x)
    assert logits.shape == (x.shape[0], CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_methods())
def test_a_few_steps_train_every_parameter(name):
    """Every trainable parameter moves under the method's own loss, the canonicalizer's included.

    A zero-initialized head gives zero gradients to the layers below it on the first step only; from the second step
    on, they must learn, or the canonicalizer is stuck at the identity for good.
    """
    stuck = train_steps(tiny_objective(name), steps=3)
    assert not stuck, f"{name}: training never changed {stuck}"


def test_a_few_steps_train_every_parameter_detects_a_stuck_parameter():
    """Negative control: a parameter the loss does not reach is reported as unchanged."""
    backbone = tiny_backbone()
    backbone.unused = nn.Parameter(torch.ones(3))
    stuck = train_steps(tiny_objective("plain", backbone=backbone), steps=2)
    assert stuck == ["model.unused"]


@pytest.mark.parametrize("name", list_methods())
def test_canonicalization_methods_wrap_the_backbone(name):
    backbone = tiny_backbone()
    objective = tiny_objective(name, backbone=backbone)
    if name in CANON_METHODS:
        assert isinstance(objective.model, Canonicalized)
        assert objective.model.model is backbone
    elif name == "latent":
        assert isinstance(objective.model, LatentCanonicalized)
        assert objective.model.model is backbone
    else:
        assert objective.model is backbone


def test_prior_weight_adds_the_prior_to_the_loss():
    objective = tiny_objective("direct", options={"channels": [4, 8], "prior_weight": 0.5})
    x, y, index = batch()
    loss, stats = objective(x, y, index, 0)
    assert "prior" in stats
    expected = stats["ce"] + stats["canon"] + 0.5 * stats["prior"]  # canon_weight 1 by default
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    _, no_prior = tiny_objective("direct")(x, y, index, 0)
    assert "prior" not in no_prior


def test_dec_reports_solver_statistics():
    objective = tiny_objective("dec")
    x, y, index = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, stats = objective(x, y, index, 0)
    assert 0 <= stats["converged"] <= 1 and stats["steps"] >= 1


# ---------------------------------------------------------------------------------------------- groups
def test_method_group_uses_the_default_the_named_group_and_its_options():
    assert method_group(MethodConfig(name="plain")) is None
    assert type(method_group(MethodConfig(name="augment"))).__name__ == "MonotoneScaling"
    rotation = method_group(MethodConfig(name="augment", group="rotation"))
    assert type(rotation).__name__ == "Rotation2d"
    monotone = method_group(MethodConfig(name="dec", group_options={"cells": 3}))
    assert monotone.param_shape != method_group(MethodConfig(name="dec")).param_shape


def test_escnn_defaults_to_the_cyclic_group():
    objective = tiny_objective("escnn")
    assert objective.model.canonicalizer.group.discrete


def test_escnn_with_monotone_group_is_a_config_error():
    needs("escnn")
    with pytest.raises(ConfigError, match="discrete"):
        build_objective(MethodConfig(name="escnn", group="monotone"), tiny_backbone(), in_channels=1)


def test_unknown_group_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError, match="monotonic"):
        build_objective(MethodConfig(name="augment", group="monotonic"), tiny_backbone(), in_channels=1)


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_method_has_a_close_match_hint():
    with pytest.raises(UnknownNameError, match=r"unknown method 'dek': .*; did you mean 'dec'\?") as info:
        build_objective(MethodConfig(name="dek"), tiny_backbone(), in_channels=1)
    for name in list_methods():
        assert name in str(info.value)


def test_unknown_method_without_a_close_match_has_no_hint():
    with pytest.raises(UnknownNameError) as info:
        build_objective(MethodConfig(name="zzzzzz"), tiny_backbone(), in_channels=1)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("name, option, accepted", [
    ("dec", "chanels", ["channels", "prior_weight", "solver", "train_iter"]),
    ("invariance", "wieght", ["weight"]),
    ("plain", "weight", []),
    ("optimization", "step", ["steps", "lr", "unroll"]),
])
def test_unknown_option_lists_the_accepted(name, option, accepted):
    with pytest.raises(ConfigError, match=f"method '{name}': unknown option '{option}'") as info:
        build_objective(MethodConfig(name=name, options={option: 1}), tiny_backbone(), in_channels=1)
    for key in accepted:
        assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("name, option, value", [
    ("dec", "prior_weight", -0.1), ("direct", "prior_weight", float("inf")), ("optimization", "prior_weight", True),
    ("invariance", "weight", -1.0), ("invariance", "weight", "1"),
])
def test_invalid_weights_are_config_errors(name, option, value):
    with pytest.raises(ConfigError, match=option):
        build_objective(MethodConfig(name=name, options={option: value}), tiny_backbone(), in_channels=1)


def test_zero_weights_are_accepted():
    """Negative control for the test above: the boundary value 0 is valid."""
    objective = tiny_objective("invariance", options={"weight": 0})
    x, y, index = batch()
    loss, stats = objective(x, y, index, 0)
    assert float(loss.detach()) == pytest.approx(stats["ce"])


def test_build_objective_wants_a_method_config():
    with pytest.raises(ConfigError, match="MethodConfig"):
        build_objective({"name": "plain"}, tiny_backbone(), in_channels=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- random elements
def test_augment_elements_do_not_depend_on_batch_composition():
    objective = tiny_objective("augment")
    x, _, index = batch(6)
    full = objective.transformed(x, index, epoch=2)
    order = torch.tensor([4, 1, 5])
    part = objective.transformed(x[order], index[order], epoch=2)
    torch.testing.assert_close(part, full[order], rtol=0, atol=1e-6)
    # The same sample index in the same epoch gets the same element whatever else is in the batch.
    alone = objective.transformed(x[:1], index[:1], epoch=2)
    torch.testing.assert_close(alone, full[:1], rtol=0, atol=1e-6)


def test_augment_elements_change_with_the_epoch_and_the_index():
    objective = tiny_objective("augment")
    x, _, index = batch(6)
    epoch2 = objective.transformed(x, index, epoch=2)
    epoch3 = objective.transformed(x, index, epoch=3)
    assert (epoch2 - epoch3).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample gets a new element
    shifted = objective.transformed(x, index + 1, epoch=2)
    assert (epoch2 - shifted).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    assert (epoch2 - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # the elements are not the identity


def test_augment_elements_depend_on_the_seed():
    """Negative control: the batch-composition test above would also pass if the seed were ignored; it is not."""
    x, _, index = batch(6)
    a = tiny_objective("augment", seed=0).transformed(x, index, epoch=2)
    b = tiny_objective("augment", seed=1).transformed(x, index, epoch=2)
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    same = tiny_objective("augment", seed=0).transformed(x, index, epoch=2)
    assert torch.equal(a, same)


def test_augment_and_invariance_draw_unrelated_elements():
    x, _, index = batch(6)
    a = tiny_objective("augment").transformed(x, index, epoch=0)
    b = tiny_objective("invariance").transformed(x, index, epoch=0)
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_augment_loss_is_cross_entropy_on_the_transformed_batch():
    objective = tiny_objective("augment")
    x, y, index = batch(6)
    loss, _ = objective(x, y, index, 1)
    expected = F.cross_entropy(objective.model(objective.transformed(x, index, 1)), y)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(objective.model(x), y))  # it is not the plain loss


# ---------------------------------------------------------------------------------------------- invariance loss
def test_invariance_loss_is_cross_entropy_plus_weighted_kl():
    weight = 2.5
    objective = tiny_objective("invariance", options={"weight": weight}).double()
    x, y, index = batch(6)
    x = x.double()
    loss, stats = objective(x, y, index, 4)
    model = objective.model
    with torch.no_grad():
        gx = objective.transformed(x, index, 4)
        p = torch.softmax(model(x), dim=1)
        q = torch.softmax(model(gx), dim=1)
    ce = -torch.log(p[torch.arange(len(y)), y]).mean()
    kl = (p * (p.log() - q.log())).sum(dim=1).mean()  # KL(p(x) ‖ p(act(g, x))), averaged over the batch
    torch.testing.assert_close(loss.detach(), ce + weight * kl, rtol=1e-10, atol=1e-12)
    assert stats["ce"] == pytest.approx(float(ce)) and stats["kl"] == pytest.approx(float(kl))
    assert float(kl) > 1e-6  # the views differ, so the check above sees the KL term
    # Negative control: the reverse KL(q ‖ p) is a different number, so the direction is checked too.
    reverse = (q * (q.log() - p.log())).sum(dim=1).mean()
    assert not torch.allclose(ce + weight * reverse, loss.detach(), rtol=1e-10, atol=1e-12)


def _canonicalizer_grad_norm(task_gradient: bool, canon_weight: float) -> float:
    objective = tiny_objective("direct", options={**TINY_OPTIONS["direct"], "canon_weight": canon_weight,
                                                  "canon_task_gradient": task_gradient})
    x, y, index = batch()
    objective.train()
    # Move the zero-initialized head off zero so that the task loss has a path into the canonicalizer's layers.
    with torch.no_grad():
        for p in objective.model.canonicalizer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, _ = objective(x, y, index, 0)
    loss.backward()
    grads = [p.grad for p in objective.model.canonicalizer.parameters() if p.grad is not None]
    return float(sum(g.norm() ** 2 for g in grads)) ** 0.5 if grads else 0.0


def test_canon_task_gradient_false_keeps_the_task_loss_out_of_the_canonicalizer():
    # With the canonicalization loss off, the task loss is the only source: detached, nothing reaches the
    # canonicalizer; the default (the negative control) lets it through.
    assert _canonicalizer_grad_norm(task_gradient=False, canon_weight=0.0) == 0.0
    assert _canonicalizer_grad_norm(task_gradient=True, canon_weight=0.0) > 0.0
    # The canonicalization loss still trains it.
    assert _canonicalizer_grad_norm(task_gradient=False, canon_weight=1.0) > 0.0


def test_latent_refuses_canon_task_gradient_false():
    from equican.objectives import CanonicalizationSchedule, LatentObjective

    with pytest.raises(ConfigError, match="canon_task_gradient"):
        LatentObjective(torch.nn.Linear(1, 1), schedule=CanonicalizationSchedule(task_gradient=False))
