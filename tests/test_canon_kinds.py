"""Every canonicalizer kind on every registered group: shapes, dtypes, round trip, gradients, input validation."""

from __future__ import annotations

import warnings

import pytest
import torch
from _canon_helpers import KINDS, make_kind, smooth_images

from equican import list_groups, make_group
from equican.canon import (Canonicalized, Canonicalizer, CanonResult, ConvergenceWarning, DEQConfig,
                           IdentityCanonicalizer, OptimizationConfig, SolverSettings)
from equican.errors import ConfigError, DTypeError, NonFiniteError, ShapeError

SIZE = 16


def _run(canon, x):
    with warnings.catch_warnings():
        # Random (untrained) update networks are not contractive; non-convergence is tested in test_canon_deq.py.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return canon(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group_name", list_groups())
def test_shapes_dtypes_round_trip(group_name, kind, dtype):
    group = make_group(group_name)
    canon = make_kind(kind, group, 2).to(dtype)
    x = smooth_images(3, 2, SIZE, seed=1, dtype=dtype)
    res = _run(canon, x)
    assert isinstance(res, CanonResult)
    assert res.x.shape == x.shape and res.x.dtype == dtype
    assert res.g.shape == (3, *group.param_shape) and res.g.dtype == dtype
    group.check(res.g)
    # The random heads move g away from the identity for the learned kinds, so the round trip is not trivial.
    if kind != "identity" and not group.discrete:
        assert float(group.distance(res.g, group.identity_like(res.g)).detach().max()) > 1e-3
    # act(g, canonical x) = x: compared on the central half, which no element used here moves out of the image.
    back = group.act(res.g, res.x)
    q = SIZE // 4
    err = float((back - x)[..., q:-q, q:-q].detach().abs().max())
    assert err <= group.tolerance(dtype).action + 1e-6, err


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "identity"])
@pytest.mark.parametrize("group_name", list_groups())
def test_gradients_reach_parameters(group_name, kind):
    group = make_group(group_name)
    canon = make_kind(kind, group, 1).train()
    x = smooth_images(2, 1, SIZE, seed=2)
    res = _run(canon, x)
    target = smooth_images(2, 1, SIZE, seed=3)
    loss = (res.x - target).square().mean() + canon.prior_loss(res.g).mean()
    loss.backward()
    grads = [p.grad for p in canon.parameters()]
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_identity_canonicalizer_is_the_identity():
    group = make_group("monotone")
    x = smooth_images(2, 1, SIZE, seed=0)
    res = IdentityCanonicalizer(group)(x)
    assert torch.allclose(res.x, x, atol=1e-6)
    assert float(group.distance(res.g, group.identity_like(res.g)).max()) < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_inputs_raise(kind):
    canon = make_kind(kind, make_group("rotation"), 1)
    x = smooth_images(2, 1, SIZE, seed=0)
    bad = x.clone()
    bad[1, 0, 3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="expected finite values in x"):
        canon(bad)
    with pytest.raises(ShapeError, match=r"expected x of shape \(B, C, H, W\)"):
        canon(x[0])
    with pytest.raises(DTypeError):
        canon(x.to(torch.int64))
    if kind != "identity":
        with pytest.raises(DTypeError, match="parameters' dtype"):
            canon(x.double())


@pytest.mark.parametrize("kind", KINDS)
def test_no_state_between_calls(kind):
    canon = make_kind(kind, make_group("affine"), 1).eval()
    x1, x2 = smooth_images(2, 1, SIZE, seed=4), smooth_images(2, 1, SIZE, seed=5)
    before = {k: v.clone() for k, v in canon.state_dict().items()}
    attrs = set(vars(canon))
    a = _run(canon, x1)
    _run(canon, x2)
    b = _run(canon, x1)
    assert torch.equal(a.x, b.x) and torch.equal(a.g, b.g)
    assert set(vars(canon)) == attrs
    assert all(torch.equal(before[k], v) for k, v in canon.state_dict().items())


@pytest.mark.parametrize("group_name", list_groups())
def test_prior_loss(group_name):
    group = make_group(group_name)
    canon = IdentityCanonicalizer(group)
    e = group.identity(3).requires_grad_()
    loss = canon.prior_loss(e)
    assert loss.shape == (3,) and float(loss.detach().abs().max()) < 1e-10
    loss.sum().backward()
    # Exactly 0 at the identity (the loss's minimum), where every solve starts: in particular not NaN, which a
    # distance written with a square root (monotone's RMS) gives unless it guards its derivative at 0.
    assert float(e.grad.abs().max()) == 0
    g = group.sample(64, generator=torch.Generator().manual_seed(0))
    assert float(canon.prior_loss(g).max()) > 0


def test_configs_are_validated():
    with pytest.raises(ConfigError, match="solver"):
        SolverSettings(solver="newton")
    with pytest.raises(ConfigError, match="max_iter >= 3"):
        SolverSettings(solver="anderson", max_iter=2)
    with pytest.raises(ConfigError, match="tol"):
        SolverSettings(tol=0.0)
    with pytest.raises(ConfigError, match="gradient"):
        DEQConfig(gradient="backprop")
    with pytest.raises(ConfigError, match="on_nonconvergence"):
        DEQConfig(on_nonconvergence="nan")
    with pytest.raises(ConfigError, match="train"):
        DEQConfig(train={"max_iter": 3})
    with pytest.raises(ConfigError, match="unroll"):
        OptimizationConfig(steps=2, unroll=3)
    with pytest.raises(ConfigError, match="optimizer"):
        OptimizationConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="expected group"):
        IdentityCanonicalizer("monotone")
    with pytest.raises(dataclasses_frozen_error()):
        DEQConfig().gradient = "implicit"


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_canonicalized_wrapper():
    group = make_group("cyclic")
    canon = make_kind("direct", group, 1)
    x = smooth_images(4, 1, SIZE, seed=6)
    pointwise = torch.nn.Conv2d(1, 3, 1)
    # A pointwise model commutes with every rot90, so the equivariant wrapper must reproduce it exactly.
    y = Canonicalized(pointwise, canon, output="equivariant")(x)
    assert torch.allclose(y, pointwise(x), atol=1e-6)
    # Invariant: the model sees the canonical input.
    pooled = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 5))
    inv = Canonicalized(pooled, canon)(x)
    assert torch.allclose(inv, pooled(canon(x).x), atol=1e-6)
    with pytest.raises(ShapeError, match="equivariant model output"):
        Canonicalized(pooled, canon, output="equivariant")(x)
    with pytest.raises(ConfigError, match="output"):
        Canonicalized(pooled, canon, output="covariant")


class FixedChart(Canonicalizer):
    """Canonicalizes with given chart parameters ``z`` (the same for every call): a known, possibly strong, warp."""

    def __init__(self, group, z):
        super().__init__(group)
        self.z = z

    def solve(self, x):
        return self.z.to(x.dtype), {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strength", [0.25, 1.0])
def test_equivariant_outputs_map_back_through_act_inverse(strength, dtype):
    # A pointwise model commutes with every warp, so the equivariant wrapper should return model(x) itself; what
    # it misses is the error of mapping back. act_inverse(h, ·) solves monotone's inverse per pixel where the
    # lattice is too coarse, act(g, ·) interpolates g = inverse(h) between nodes: at the default strength no cell
    # needs solving and the two agree; at strength 1 (folded warps) the per-pixel solve is measured 6-7x more
    # accurate (max error 0.0036 vs 0.0246 in float32, 0.011 vs 0.074 in float64).
    group = make_group("monotone", strength=strength)
    z = torch.rand(6, *group.unconstrained_shape, generator=torch.Generator().manual_seed(0)) * strength
    canon = FixedChart(group, z)
    x = smooth_images(6, 1, 48, seed=3, dtype=dtype)
    model = torch.nn.Conv2d(1, 2, 1).to(dtype)
    with torch.no_grad():
        res = canon(x)
        assert torch.equal(res.x, group.act(res.h, x))
        y = Canonicalized(model, canon, output="equivariant")(x)
        assert torch.equal(y, canon.uncanonicalize(res, model(res.x)))
        crop = (slice(None), slice(None), slice(6, -6), slice(6, -6))
        new = float((y - model(x))[crop].abs().max())
        old = float((group.act(res.g, model(res.x)) - model(x))[crop].abs().max())
        without_h = CanonResult(x=res.x, g=res.g, info=res.info)
        assert torch.equal(canon.uncanonicalize(without_h, model(res.x)), group.act(res.g, model(res.x)))
    assert new <= old + 1e-7, (new, old)
    assert new <= group.tolerance(dtype).action, new
    if strength == 1.0:
        assert float(group.folded_fraction(res.h).max()) > 0  # the regime where interpolating g is off
        assert new < 0.5 * old, (new, old)


def test_channel_reduction_before_the_solve_equals_a_first_layer():
    """act(h, R x) = R act(h, x) for a bias-free 1×1 convolution R, so reducing once before the solve is the same
    update map as an UpdateNet whose first layer is R; with a bias, zero padding breaks it (negative control)."""
    from torch import nn

    from equican import make_group
    from equican.canon import DirectCanonicalizer, UpdateNet

    torch.manual_seed(0)
    group = make_group("rotation")
    x = torch.rand(4, 16, 20, 20, dtype=torch.float64)
    net = UpdateNet(4, group.unconstrained_shape, channels=(4,)).double()
    nn.init.normal_(net.head.weight, std=0.5)
    for bias, same in ((False, True), (True, False)):
        reduce = nn.Conv2d(16, 4, 1, bias=bias).double()
        if bias:
            nn.init.constant_(reduce.bias, 1.0)
        first = DirectCanonicalizer(group, net, reduce)
        layered = DirectCanonicalizer(group, nn.Sequential(reduce, net))
        z = torch.full((4, 1), 0.7, dtype=torch.float64)  # a rotation that moves zero padding into the corners
        a = first.step(z, first.update_input(x))
        b = layered.step(z, layered.update_input(x))
        assert torch.allclose(a, b, atol=1e-10) == same


@pytest.mark.parametrize("group_name", ["monotone", "affine", "scale"])
def test_canonicalize_applies_the_element_of_x_to_another_target(group_name):
    # The latent wrapper's image input: the element is found on the image and acts on features of another size.
    group = make_group(group_name)
    canon = make_kind("direct", group, channels=1).eval()
    x = smooth_images(3, 1, SIZE, seed=0)
    features = torch.rand(3, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = canon(x)
        result = canon.canonicalize(x, features)
    assert result.x.shape == features.shape
    assert torch.equal(result.h, own.h)  # the element depends on x alone
    torch.testing.assert_close(result.x, group.act(result.h, features))
    # Negative control: the same element applied to x is not the features' canonical form.
    assert not torch.allclose(result.x, group.act(result.h, torch.rand_like(features)))
    with pytest.raises(ShapeError, match="target"):
        canon.canonicalize(x, features[:2])
