"""The escnn canonicalizer (exact C_4 invariance) and the canonicalizer checkers, with negative controls."""

from __future__ import annotations

import pytest
import torch
from _canon_helpers import smooth_images

from equican import make_group
from equican.canon import Canonicalizer, IdentityCanonicalizer
from equican.errors import ConfigError
from equican.testing.canon import (assert_canonicalizer_invariant, assert_g_equivariant, assert_round_trip,
                                   canonicalizer_invariance_error)

pytest.importorskip("escnn")
from equican.canon import EquivariantCanonicalizer  # noqa: E402


@pytest.fixture(scope="module")
def c4_canon():
    torch.manual_seed(0)
    return EquivariantCanonicalizer(make_group("cyclic", n=4), in_channels=2, channels=(4,), kernel_size=3).eval()


@torch.no_grad()
def test_invariant_under_every_rot90(c4_canon):
    x = torch.rand(6, 2, 17, 17, generator=torch.Generator().manual_seed(1))
    ref = c4_canon(x)
    for k in range(4):
        res = c4_canon(torch.rot90(x, k, dims=(-2, -1)))
        assert float((res.x - ref.x).abs().max()) <= 1e-5
        # and the element follows the rotation: g(rot_k x) = rot_k g(x)
        group = c4_canon.group
        rot = group.from_unconstrained(torch.nn.functional.one_hot(torch.full((6,), k), 4).float())
        assert float(group.distance(res.g, group.compose(rot, ref.g)).max()) <= 1e-5


@torch.no_grad()
def test_scores_roll_with_rotations(c4_canon):
    x = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(2))
    s = c4_canon.scores(x)
    rolled = c4_canon.scores(torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.allclose(rolled, torch.roll(s, 1, dims=1), atol=1e-5)
    assert float((s - s.mean(1, keepdim=True)).abs().max()) > 1e-4  # scores that can tell the rotations apart


def test_gradients_through_straight_through(c4_canon):
    c4_canon.train()
    try:
        x = torch.rand(2, 2, 12, 12, generator=torch.Generator().manual_seed(3))
        c4_canon(x).x.square().sum().backward()
        assert sum(float(p.grad.abs().sum()) for p in c4_canon.parameters() if p.grad is not None) > 0
    finally:
        c4_canon.zero_grad()
        c4_canon.eval()


def test_requires_a_discrete_group():
    with pytest.raises(ConfigError, match="discrete"):
        EquivariantCanonicalizer(make_group("rotation"), in_channels=1)


class Scrambled(Canonicalizer):
    """Negative control: a random element per call, unrelated to the input."""

    def __init__(self, group, seed=0):
        super().__init__(group)
        self.gen = torch.Generator().manual_seed(seed)

    def solve(self, x):
        shape = (x.shape[0], *self.group.unconstrained_shape)
        return torch.randn(shape, generator=self.gen, dtype=x.dtype), {}


def test_checkers_pass_on_the_equivariant_canonicalizer(c4_canon):
    x = torch.rand(5, 2, 16, 16, generator=torch.Generator().manual_seed(4))
    assert_canonicalizer_invariant(c4_canon, x, atol=1e-5)
    assert_g_equivariant(c4_canon, x, atol=1e-5)
    assert_round_trip(c4_canon, x, atol=1e-6)


@pytest.mark.parametrize("group_name", ["cyclic", "monotone", "rotation"])
def test_checkers_fail_on_wrong_canonicalizers(group_name):
    group = make_group(group_name)
    x = smooth_images(4, 1, 16, seed=5)
    # The identity canonicalizer is not invariant and its g does not follow k; a scrambled one is neither.
    with pytest.raises(AssertionError, match="assert_canonicalizer_invariant"):
        assert_canonicalizer_invariant(IdentityCanonicalizer(group), x, atol=1e-3, crop=4)
    with pytest.raises(AssertionError, match="assert_g_equivariant"):
        assert_g_equivariant(IdentityCanonicalizer(group), x, atol=1e-3)
    with pytest.raises(AssertionError, match="assert_canonicalizer_invariant"):
        assert_canonicalizer_invariant(Scrambled(group), x, atol=1e-3, crop=4)
    with pytest.raises(AssertionError, match="assert_g_equivariant"):
        assert_g_equivariant(Scrambled(group), x, atol=1e-3)
    # The round trip holds for every canonicalizer of a group that acts invertibly on the crop, even a scrambled
    # one; a canonical input that is not act(g⁻¹, x) breaks it.
    assert_round_trip(IdentityCanonicalizer(group), x, atol=group.tolerance(x.dtype).action, crop=4)

    class Lying(IdentityCanonicalizer):
        def forward(self, x):
            res = super().forward(x)
            return type(res)(x=res.x.flip(-1), g=res.g, info=res.info)

    with pytest.raises(AssertionError, match="assert_round_trip"):
        assert_round_trip(Lying(group), x, atol=group.tolerance(x.dtype).action, crop=4)
    assert canonicalizer_invariance_error(IdentityCanonicalizer(group), x, crop=4).shape == (4,)
