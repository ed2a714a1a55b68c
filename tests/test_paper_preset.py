"""The paper preset (equican.canon.paper): the reference implementation's DEC, its update rule and its numbers.

Parity with the reference itself (same weights, same inputs) was measured once, outside the test suite, because
the reference cannot ship with the project: see docs/results/paper_preset.md.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from equican import make_group
from equican.canon import DEQCanonicalizer
from equican.canon.paper import (PaperDEQCanonicalizer, PaperResidualBlock, PaperUpdateNet, paper_deq_config,
                                 preset_canonicalizer)
from equican.config import MethodConfig
from equican.errors import ConfigError, ConvergenceWarning, ShapeError
from equican.methods import build_objective


@pytest.fixture(autouse=True)
def _quiet():
    # The reference's tolerance (1e-6) is not met in 5 iterations: the warning is expected on every solve.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _group(cells: int = 3):
    return make_group("monotone", cells=cells, min_width=0.0)


def _images(batch: int = 2, side: int = 40) -> torch.Tensor:
    """Fixed smooth RGB images in [0, 1]: ``(batch, 3, side, side)``."""
    u = torch.linspace(0, 1, side, dtype=torch.float64)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    chans = [0.5 + 0.5 * torch.sin(2 * math.pi * (k * xx + (3 - k) * yy) + k) for k in range(3 * batch)]
    return torch.stack(chans).view(batch, 3, side, side).float()


def _small(group=None, **kwargs) -> PaperDEQCanonicalizer:
    """A cheap preset: narrow network, inputs resized to 32."""
    group = _group() if group is None else group
    net = PaperUpdateNet(3, group.unconstrained_shape, channels=(4, 8))
    return PaperDEQCanonicalizer(group, net, resize=32, **kwargs)


def test_shapes_and_range():
    group = _group()
    net = PaperUpdateNet(3, group.unconstrained_shape)
    phi = net(torch.rand(2, 3, 50, 50))
    assert phi.shape == (2, 2, 4, 3)  # R = 3 segments, R + 1 = 4 coarse rows (the reference's (B, 4, 3) per axis)
    assert bool((phi > 0).all() and (phi < 1).all())
    assert PaperResidualBlock(3, 8, pool=2)(torch.rand(1, 3, 10, 12)).shape == (1, 8, 5, 6)
    assert isinstance(PaperResidualBlock(8, 8).proj, nn.Identity)
    result = _small()(_images())
    assert result.x.shape == (2, 3, 40, 40) and result.g.shape == (2, *group.param_shape)
    assert result.info["residual"].shape == (2, 3)  # 5 Anderson evaluations, two of them the start


def test_invalid_arguments():
    with pytest.raises(ConfigError, match=r"expected out_shape \(2, R\+1, R\)"):
        PaperUpdateNet(3, (6,))
    with pytest.raises(ConfigError, match="odd kernel_size"):
        PaperResidualBlock(3, 8, kernel_size=4)
    with pytest.raises(ConfigError, match="normalize to be a bool"):
        _small(normalize=1)
    with pytest.raises(ShapeError, match=r"expected x of shape \(B, 3, H, W\)"):
        group = _group()
        PaperDEQCanonicalizer(group, PaperUpdateNet(1, group.unconstrained_shape), normalize=True)(
            torch.rand(1, 1, 16, 16))
    with pytest.raises(ConfigError, match="expected preset in"):
        preset_canonicalizer("equican", _group(), 3)


def test_update_replaces_the_estimate():
    """``f(z) = H(act(h(z), x))``: z enters only through the warp, and nothing of z is added back."""
    canon = _small()
    x = canon.update_input(_images())
    z = torch.rand(2, *canon.group.unconstrained_shape)
    expected = canon.net(canon.group.act(canon.group.from_unconstrained(z), x))
    torch.testing.assert_close(canon.step(z, x), expected)
    # Adding a constant to a row of logits leaves the element, hence the update, unchanged.
    torch.testing.assert_close(canon.step(z + 0.7, x), canon.step(z, x))

    class Constant(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2, 4, 3), 0.25)

    # A network that ignores its input makes the update constant in z; the residual form P(z) + Δ would not be.
    const = PaperDEQCanonicalizer(_group(), Constant(), resize=32)
    for zz in (z, 3 * z, -z):
        torch.testing.assert_close(const.step(zz, x), torch.full_like(z, 0.25))


def test_identity_start_and_constant_outputs():
    group = _group()
    canon = _small(group)
    x = _images()
    identity = group.identity(2)
    start = canon.zeros(x)
    assert bool((start == 1).all())  # the reference's torch.ones initialization
    torch.testing.assert_close(group.from_unconstrained(start), identity)
    torch.testing.assert_close(group.from_unconstrained(torch.zeros_like(start)), identity)
    # With the head's norm scaled to 0 every output is the constant sigmoid(bias): the identity, the input unchanged.
    with torch.no_grad():
        canon.net.head_norm.weight.zero_()
    result = canon.eval()(x)
    torch.testing.assert_close(result.g, identity, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.x, x, atol=1e-5, rtol=0)


def test_evaluation_applies_the_update_once_more():
    canon = _small().eval()
    x = _images()
    z_best, _ = DEQCanonicalizer.solve(canon, x)
    z, _ = canon.solve(x)
    torch.testing.assert_close(z, canon.step(z_best, canon.update_input(x)))
    canon.final_update = False
    torch.testing.assert_close(canon.solve(x)[0], z_best)


def test_training_mode_matches_evaluation_and_trains():
    canon = _small()
    x = _images()
    z_train, _ = canon.train().solve(x)
    z_eval, _ = canon.eval().solve(x)
    torch.testing.assert_close(z_train.detach(), z_eval)  # the reference has one path for both modes
    canon.train()
    canon(x).x.square().mean().backward()  # the phantom step carries the gradient to the network
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in canon.net.parameters())


def test_update_input_is_torchvision_resize_and_imagenet_normalize():
    tv = pytest.importorskip("torchvision.transforms.functional")
    group = _group()
    canon = PaperDEQCanonicalizer(group, PaperUpdateNet(3, group.unconstrained_shape), normalize=True)
    x = torch.rand(2, 3, 70, 70)
    expected = tv.normalize(tv.resize(x, [224, 224], antialias=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(canon.update_input(x), expected)
    shrink = torch.rand(1, 3, 300, 300)
    expected = tv.normalize(tv.resize(shrink, [224, 224], antialias=True), [0.485, 0.456, 0.406],
                            [0.229, 0.224, 0.225])
    torch.testing.assert_close(canon.update_input(shrink), expected)


def test_golden_forward():
    """Seeded weights, fixed input, the preset as the dec method builds it (224 resize, ImageNet normalization).

    The numbers were produced once by this preset (torch 2.13, CPU, one thread) after it matched the reference
    implementation's DEMAdapter to 1.1e-5 in φ on shared weights (docs/results/paper_preset.md), with
    ``torch.manual_seed(0); preset_canonicalizer("paper", make_group("monotone", cells=3, min_width=0.0), 3)``,
    evaluation mode, and ``z, info = canon.solve(_images())``.
    """
    torch.manual_seed(0)
    canon = preset_canonicalizer("paper", _group(), 3).eval()
    z, info = canon.solve(_images())
    assert z.shape == (2, 2, 4, 3)
    torch.testing.assert_close(z[0, 0], torch.tensor([[0.595660, 0.331171, 0.541710],
                                                      [0.447763, 0.407687, 0.570734],
                                                      [0.352279, 0.640392, 0.445157],
                                                      [0.424911, 0.555976, 0.620734]]), atol=2e-5, rtol=0)
    torch.testing.assert_close(z[1, 1], torch.tensor([[0.442466, 0.491708, 0.460147],
                                                      [0.492976, 0.446951, 0.491198],
                                                      [0.536471, 0.488211, 0.489337],
                                                      [0.557150, 0.571158, 0.527672]]), atol=2e-5, rtol=0)
    torch.testing.assert_close(info["residual_best"], torch.tensor([0.112661, 0.007318]), atol=2e-5, rtol=0)


def test_dec_method_builds_the_preset():
    config = MethodConfig(name="dec", group_options={"cells": 3, "min_width": 0.0},
                          options={"preset": "paper", "channels": (4, 8), "train_iter": 4})
    objective = build_objective(config, nn.Flatten(), in_channels=1)
    canon = objective.model.canonicalizer
    assert isinstance(canon, PaperDEQCanonicalizer) and not canon.normalize  # 1 channel: no ImageNet statistics
    assert canon.config == paper_deq_config(4) and canon.group.unconstrained_shape == (2, 4, 3)
    assert build_objective(config, nn.Flatten(), in_channels=3).model.canonicalizer.normalize
    with pytest.raises(ConfigError, match="expected preset in"):
        build_objective(MethodConfig(name="dec", options={"preset": "papr"}), nn.Flatten(), in_channels=1)
