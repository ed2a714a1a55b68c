"""Issue 21: a canonicalization loss whose terms do not depend on the choice of frame, a guard that sees shrinks,
training elements sized to the data, pairs from the data's own nuisance, and the metrics that report collapse."""

from __future__ import annotations

import pytest
import torch

from equican import make_group, metrics
from equican.canon import Canonicalizer, DirectCanonicalizer, IdentityCanonicalizer, UpdateNet
from equican.canon.objective import CanonicalizationLoss, ElementDistribution, canonicalization_loss
from equican.data import load_mnist
from equican.errors import ConfigError, ShapeError

from _canon_helpers import mnist_digits as digits


class Fixed(Canonicalizer):
    """Predicts given chart parameters ``z`` for input ``i`` (the batch is split into halves sharing them), then
    composes a constant element ``c`` on the left: the canonicalizing elements ``c·h``."""

    def __init__(self, group, z, c=None):
        super().__init__(group)
        self.z, self.c = z, c

    def solve(self, x):
        z = self.z.repeat(x.shape[0] // self.z.shape[0], *([1] * (self.z.ndim - 1))).to(x.dtype)
        if self.c is None:
            return z, {}
        u = self.group.unchecked
        h = u.compose(self.c.expand(x.shape[0], *self.c.shape[1:]).to(x.dtype), u.from_unconstrained(z))
        return u.to_unconstrained(h), {}


def _affine_case():
    group = make_group("affine")
    gen = torch.Generator().manual_seed(0)
    z = 0.3 * torch.randn(6, *group.unconstrained_shape, generator=gen, dtype=torch.float64)
    k = group.sample(6, generator=gen, dtype=torch.float64)
    shrink = torch.zeros(1, *group.unconstrained_shape, dtype=torch.float64)
    shrink_element = group.from_unconstrained(shrink)
    shrink_element[:, :2, :2] *= 0.5  # c = 0.5·I: a constant shrink about the centre
    return group, z, k, shrink_element


def test_element_target_is_left_invariant_and_the_old_distance_is_not():
    group, z, k, c = _affine_case()
    x = digits(6).double()
    # The chart represents c·h exactly, so the two canonicalizers differ by the constant c alone.
    u = group.unchecked
    ch = u.compose(c.expand(6, -1, -1), u.from_unconstrained(z))
    torch.testing.assert_close(u.from_unconstrained(u.to_unconstrained(ch)), ch)
    cfg = CanonicalizationLoss(target="element", guard=0.0, ink=0.0)
    plain = canonicalization_loss(Fixed(group, z), x, k, cfg)
    shifted = canonicalization_loss(Fixed(group, z, c), x, k, cfg)
    torch.testing.assert_close(shifted.equivariance, plain.equivariance)
    assert plain.equivariance.mean() > 0.01  # a real difference to be invariant about
    # Negative control: the distance the loss used before issue 21, ‖h(kx)·k − h(x)‖, shrinks with c (by c² ~ 1/4):
    # a canonicalizer lowers it by shrinking everything.
    def old(canon):
        both = canon(torch.cat([x, u.act(k, x)]))
        return u.distance(u.compose(both.h[6:], k), both.h[:6]).pow(2)
    assert old(Fixed(group, z, c)).mean() < 0.5 * old(Fixed(group, z)).mean()


def test_ink_term_prices_a_constant_shrink_but_not_per_input_normalization():
    group = make_group("scale")
    x = digits(8)
    k = torch.zeros(8, 1)
    cfg = CanonicalizationLoss(guard=0.0)

    def ink(log_scales):
        with torch.no_grad():
            return float(canonicalization_loss(Fixed(group, torch.tensor(log_scales)[:, None]), x, k, cfg).ink)

    assert ink([0.0] * 8) < 1e-10
    # Half the inputs enlarged by 1.25, half shrunk by 1/1.25: normalization, which the term must leave alone...
    normalize = ink([0.223, -0.223] * 4)
    # ...against every input shrunk by 1/1.25, which it must price (5 log² s ~ 0.25 for this s).
    shrink = ink([-0.223] * 8)
    assert shrink > 0.15 and normalize < 0.02 * shrink


def test_collapse_is_priced_by_the_ink_term_and_seen_by_the_ink_metrics():
    group = make_group("scale")
    x = digits(6)
    collapse = Fixed(group, torch.full((6, 1), -1.5))  # every input shrunk by e^-1.5 ~ 0.22
    identity = IdentityCanonicalizer(group)
    with torch.no_grad():
        terms = canonicalization_loss(collapse, x, torch.zeros(6, 1))
        base = canonicalization_loss(identity, x, torch.zeros(6, 1))
    assert terms.ink > 5 and float(base.ink) < 1e-10
    assert terms.loss.mean() > base.loss.mean() + 5
    # The metrics: the shrink makes a good-looking error but its ink and radius are s² and s.
    ink = metrics.canonical_ink(collapse, (x,))
    assert ink["ink"] < 0.1 and 0.15 < ink["radius"] < 0.3
    assert metrics.canonical_ink(identity, (x,)) == pytest.approx({"ink": 1.0, "radius": 1.0}, abs=1e-6)


def test_ink_moments_scale_as_mass_and_radius():
    x = torch.zeros(2, 1, 64, 64)
    x[0, 0, 24:40, 24:40] = 1.0
    x[1, 0, 28:36, 28:36] = 1.0  # the same square at half the side
    mass, radius = metrics.ink_moments(x)
    assert float(mass[1] / mass[0]) == pytest.approx(0.25)
    assert float(radius[1] / radius[0]) == pytest.approx(0.5, rel=0.02)
    # Signed features have ink too, and a blank image has none.
    assert float(metrics.ink_moments(-x)[0][0]) == pytest.approx(float(mass[0]))
    blank = metrics.ink_moments(torch.zeros(1, 1, 8, 8))
    assert float(blank[0]) == 0 and float(blank[1]) == 0


def test_element_distribution_rescales_the_chart():
    group = make_group("scale")
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    k = group.sample(6, generator=gen())
    u = group.unchecked
    assert torch.equal(ElementDistribution().sample(group, 6, generator=gen()), k)
    torch.testing.assert_close(u.to_unconstrained(ElementDistribution((2.5,)).sample(group, 6, generator=gen())),
                               2.5 * u.to_unconstrained(k))
    mixture = u.to_unconstrained(ElementDistribution((1.0, 0.0)).sample(group, 6, generator=gen()))
    torch.testing.assert_close(mixture[0::2], u.to_unconstrained(k)[0::2])
    assert torch.equal(mixture[1::2], torch.zeros(3, 1))
    ramp = ElementDistribution((2.0,), warmup=4)
    torch.testing.assert_close(u.to_unconstrained(ramp.scale(k, group, step=1)), 0.5 * u.to_unconstrained(k))
    torch.testing.assert_close(u.to_unconstrained(ramp.scale(k, group, step=9)), 2.0 * u.to_unconstrained(k))
    # The monotone sampler at 4x: its logit ranges grow 4x.
    mono = make_group("monotone")
    z = mono.to_unconstrained(mono.sample(4, generator=gen()))
    z4 = mono.to_unconstrained(ElementDistribution((4.0,)).sample(mono, 4, generator=gen()))
    torch.testing.assert_close(z4, 4 * z, atol=1e-4, rtol=1e-4)
    for bad in ((), (-1.0,), (float("inf"),), ("a",)):
        with pytest.raises(ConfigError, match="strength"):
            ElementDistribution(bad)
    with pytest.raises(ConfigError, match="warmup"):
        ElementDistribution(warmup=-1)


def test_pair_target_equals_the_input_target_on_the_same_views_and_refuses_what_it_cannot_do():
    group = make_group("scale")
    x = digits(4)
    k = group.sample(4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = UpdateNet.for_group(group, 1, channels=(4,))
    torch.nn.init.normal_(net.head.weight, std=0.3)
    canon = DirectCanonicalizer(group, net)
    with torch.no_grad():
        by_k = canonicalization_loss(canon, x, k)
        by_pair = canonicalization_loss(canon, x, pair=group.act(k, x))
    torch.testing.assert_close(by_pair.loss, by_k.loss)
    with pytest.raises(ConfigError, match="exactly one"):
        canonicalization_loss(canon, x)
    with pytest.raises(ConfigError, match="exactly one"):
        canonicalization_loss(canon, x, k, pair=x)
    with pytest.raises(ConfigError, match="target 'input'"):
        canonicalization_loss(canon, x, config=CanonicalizationLoss(target="element"), pair=x)
    with pytest.raises(ShapeError, match="pair of the shape"):
        canonicalization_loss(canon, x, pair=x[:, :, :-1])


def test_pair_ratio_is_one_for_the_identity_and_zero_for_an_exact_canonicalizer():
    pytest.importorskip("escnn")
    from equican.canon.equivariant import EquivariantCanonicalizer

    x = digits(6, 33).double()
    pairs = (x, torch.rot90(x, 1, dims=(-2, -1)))  # the nuisance: a quarter turn
    torch.manual_seed(0)
    exact = EquivariantCanonicalizer(make_group("cyclic"), 1, channels=(4,), kernel_size=3).double().eval()
    assert metrics.pair_ratio(IdentityCanonicalizer(make_group("cyclic")), pairs) == pytest.approx(1.0)
    assert metrics.pair_ratio(exact, pairs) < 1e-12
    ratio, per_pair = metrics.pair_ratio(exact, pairs, per_sample=True)
    assert per_pair.shape == (6,)
    with pytest.raises(ShapeError, match="one shape"):
        metrics.pair_ratio(exact, (x, x[..., :-1, :]))


def test_rescaling_alone_is_the_jth_of_the_rescalings():
    from equican.data import LocalScaleMNIST
    from equican.data.local_scale import LocalScaleConfig

    images, labels = load_mnist(split="test", limit=4)
    data = LocalScaleMNIST.from_tensors(images, labels, LocalScaleConfig(digits=2, cell=28, canvas=56))
    assert torch.equal(data.rescaling(3, 2), data.rescalings(3, 4)[2])
    assert not torch.equal(data.rescaling(3, 0), data.rescaling(3, 1))


def _tiny_run(tmp_path, *extra):
    import json

    from equican.config import TrainConfig, apply_overrides
    from equican.train import train

    config = apply_overrides(TrainConfig(), [
        "data.options.digits=1", "data.options.cell=32", "data.options.canvas=32", "data.train_limit=16",
        "data.test_limit=8", "eval.limit=8", "eval.rescalings=2", "optim.epochs=2", "optim.batch_size=8",
        "method.name=direct", "method.group=scale", "method.options.channels=[4,8]", "progress=false",
        f"out={json.dumps(str(tmp_path))}", *extra])
    train(config)
    return json.loads((tmp_path / "metrics.json").read_text())


def test_training_on_the_datas_own_pairs_reports_the_collapse_checks(tmp_path, monkeypatch):
    # canon_pairs: the loss's second view is the composite at its epoch-th rescaling, rendered by the dataset.
    import equican.canon.objective as objective_module

    seen = []
    original = objective_module.canonicalization_loss

    def spy(canon, x, k=None, config=None, *, pair=None):
        seen.append((k, pair))
        return original(canon, x, k, config, pair=pair)

    monkeypatch.setattr("equican.objectives.canonicalization_loss", spy)
    saved = _tiny_run(tmp_path, "method.options.canon_pairs=true", "method.options.canon_epochs=1")
    assert seen and all(k is None and p is not None and p.shape[-1] == 32 for k, p in seen)
    evaluation = saved["eval"]
    assert 0 < evaluation["canon_pair_ratio"] < 2 and 0.3 < evaluation["canon_ink"] < 3
    assert 0.3 < evaluation["canon_radius"] < 3
    # The default draws k from the group instead.
    seen.clear()
    _tiny_run(tmp_path / "k")
    assert seen and all(k is not None and p is None for k, p in seen)


def test_pairs_need_a_dataset_that_renders_its_nuisance(tmp_path):
    with pytest.raises(ConfigError, match="canon_pairs"):
        _tiny_run(tmp_path, "data.dataset=\"mnist\"", "data.options={}", "method.options.canon_pairs=true")


def test_latent_method_refuses_pairs():
    from equican.objectives import CanonicalizationSchedule, LatentObjective

    with pytest.raises(ConfigError, match="canon_pairs"):
        LatentObjective(torch.nn.Linear(1, 1), schedule=CanonicalizationSchedule(pairs=True))
