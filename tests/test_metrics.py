"""Metrics on hand-computable cases, with negative controls: each metric must be able to report an error."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from equican import Group, make_group
from equican.data import LocalScaleMNIST
from equican.errors import ConfigError, DTypeError, ShapeError
from equican.metrics import accuracy, equivariance_error, invariance_error, local_scale_error, paper_invariance_group

# softmax((log 3, 0)) = (3/4, 1/4) and softmax((0, 0)) = (1/2, 1/2): the two distributions of the hand-computed cases.
LOG3 = math.log(3.0)


class HorizontalFlip(Group):
    """The group {e, flip} acting by mirroring the width; ``sample`` always returns the flip (a hand-computable g).

    Not registered (no ``name=``), so the registry-driven tests elsewhere never see it.
    """

    exact = True
    discrete = True

    @property
    def param_shape(self):
        return (1,)

    def identity(self, batch, *, device=None, dtype=None):
        return torch.ones(batch, 1, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return -torch.ones(batch, 1, device=device, dtype=dtype)

    def compose(self, g, h):
        return g * h

    def inverse(self, g):
        return g.clone()

    def act(self, g, x):
        return torch.where(g[:, :, None, None] < 0, x.flip(-1), x)


def first_pixel_model(x: torch.Tensor) -> torch.Tensor:
    """Logits ``(log 3 · x[0, 0, 0], 0)``: a model that reads one pixel (neither invariant nor equivariant)."""
    return torch.stack([LOG3 * x[:, 0, 0, 0], torch.zeros_like(x[:, 0, 0, 0])], dim=1)


def constant_model(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([[0.3, -1.0, 2.0]], dtype=x.dtype).expand(x.shape[0], 3)


def ink_model(x: torch.Tensor) -> torch.Tensor:
    """Logits from the mean ink and the first row's ink: changes whenever a digit grows, shrinks or moves."""
    return torch.stack([x.flatten(1).mean(dim=1) * 50, x[:, 0, 0, :].mean(dim=1) * 50], dim=1)


@pytest.fixture(scope="module")
def composites():
    ds = LocalScaleMNIST("test", limit=8)
    return ds, ds.tensors()


# ---------------------------------------------------------------------------------------------- accuracy
def test_accuracy_of_given_logits_is_counted_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.5]])
    labels = torch.tensor([0, 1, 0, 2])
    value, per = accuracy(lambda x: x, (logits, labels), batch_size=3, per_sample=True)
    assert value == 0.5 and per.tolist() == [True, True, False, False]


def test_an_oracle_has_accuracy_one_and_a_shifted_oracle_zero(composites):
    ds, (x, y) = composites
    table = {image.numpy().tobytes(): int(label) for image, label in zip(x, y)}

    def oracle(batch: torch.Tensor, shift: int = 0) -> torch.Tensor:
        labels = torch.tensor([(table[image.numpy().tobytes()] + shift) % 1000 for image in batch])
        return nn.functional.one_hot(labels, 1000).float()

    assert accuracy(oracle, (x, y)) == 1.0
    assert accuracy(oracle, DataLoader(ds, batch_size=3)) == 1.0  # the (x, y) batches of the Dataset itself
    assert accuracy(lambda b: oracle(b, shift=1), (x, y)) == 0.0


def test_accuracy_restores_the_training_flags_and_uses_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(p=0.9), nn.Linear(4, 3))
    model.train()
    model[2].eval()  # a mixed state must come back as it was
    x, y = torch.randn(64, 1, 2, 2), torch.randint(3, (64,))
    first = accuracy(model, (x, y))
    assert first == accuracy(model, (x, y))  # dropout off: deterministic
    assert model.training and model[1].training and not model[2].training


@pytest.mark.parametrize(("data", "error", "match"), [
    ((torch.zeros(4, 3), torch.zeros(4)), DTypeError, "expected integer labels, got torch.float32"),
    ((torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long)), ShapeError, r"expected labels of shape \(4,\)"),
    ((torch.zeros(4, 3), torch.full((4,), 3)), ShapeError, r"expected labels in \[0, 3\)"),
    ((torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)), ShapeError, "one common first"),
    ((torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), ShapeError, "expected at least one sample"),
    ((torch.zeros(4, 3),), ShapeError, r"expected batches of at least 2 tensors \(x, y\)"),
    ("data", DTypeError, "expected data to be a tensor"),
    ([("x", "y")], DTypeError, "expected each batch to be a tensor or a tuple/list of tensors"),
])
def test_accuracy_validates_its_inputs(data, error, match):
    with pytest.raises(error, match=match):
        accuracy(lambda x: x, data)


def test_logits_of_the_wrong_shape_are_rejected():
    with pytest.raises(ShapeError, match=r"expected the model to return logits of shape \(4, K\)"):
        accuracy(lambda x: x[:, 0], (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ConfigError, match="expected batch_size to be an int >= 1, got 0"):
        accuracy(lambda x: x, (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), batch_size=0)


# ---------------------------------------------------------------------------------------------- invariance error
def test_invariance_error_is_computed_by_hand_for_a_flip():
    # Pixel (0, 0) is 1 and its mirror (0, W-1) is 0: f(x) gives (3/4, 1/4), f(flip x) gives (1/2, 1/2), and the
    # distance between them is √((1/4)² + (1/4)²) = √2/4.
    x = torch.zeros(5, 1, 4, 4)
    x[:, 0, 0, 0] = 1
    value, per = invariance_error(first_pixel_model, x, HorizontalFlip(), per_sample=True)
    assert per.shape == (5,) and torch.allclose(per, torch.full((5,), math.sqrt(2) / 4))
    assert value == pytest.approx(math.sqrt(2) / 4, rel=1e-6)
    symmetric = torch.ones(5, 1, 4, 4)  # the flip leaves it unchanged: no error even for this model
    assert invariance_error(first_pixel_model, symmetric, HorizontalFlip()) == 0.0


def test_a_constant_model_has_no_invariance_error(composites):
    _, (x, _) = composites
    assert invariance_error(constant_model, x, paper_invariance_group()) == 0.0


def test_a_pixel_reading_model_has_positive_invariance_error(composites):
    _, (x, _) = composites
    # The first pixel of the composites is background, so read the centre of the middle cell instead.
    def centre_model(batch):
        return first_pixel_model(batch[:, :, 95:, 95:])

    value, per = invariance_error(centre_model, x, paper_invariance_group(), per_sample=True)
    assert value > 0.01 and per.shape == (8,)
    assert float(per.min()) >= 0 and float(per.max()) <= math.sqrt(2)


def test_pooling_is_invariant_to_rot90_but_not_to_monotone_warps():
    pooled = lambda b: torch.stack([b.mean(dim=(1, 2, 3)), b.std(dim=(1, 2, 3))], 1) * 4  # noqa: E731
    x = torch.rand(6, 1, 16, 16, dtype=torch.float64)
    x[:, :, :6, :6] += 1  # a bright corner, whose area a local rescaling changes
    assert invariance_error(pooled, x, make_group("cyclic", n=4)) < 1e-12
    assert invariance_error(pooled, x, make_group("monotone", strength=1.0)) > 1e-3


def test_invariance_error_does_not_depend_on_batching(composites):
    ds, (x, y) = composites
    group = make_group("rotation")
    whole = invariance_error(ink_model, (x, y), group, batch_size=8)
    assert invariance_error(ink_model, (x, y), group, batch_size=3) == pytest.approx(whole, abs=1e-6)
    assert invariance_error(ink_model, DataLoader(ds, batch_size=5), group) == pytest.approx(whole, abs=1e-6)
    assert invariance_error(ink_model, x, group, seed=1) != pytest.approx(whole, abs=1e-6)


def test_invariance_error_validates_group_and_seed():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="expected group to be an equican.Group .*got str"):
        invariance_error(constant_model, x, "rotation")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected seed to be an int >= 0, got -1"):
        invariance_error(constant_model, x, HorizontalFlip(), seed=-1)
    with pytest.raises(ShapeError, match=r"expected x of shape \(B, C, H, W\)"):
        invariance_error(constant_model, torch.zeros(2, 4, 4), HorizontalFlip())


def test_the_paper_group():
    group = paper_invariance_group()
    assert group == make_group("monotone", cells=8, strength=0.25)


# ---------------------------------------------------------------------------------------------- local-scale error
def test_local_scale_error_is_computed_by_hand():
    # p_ref = (3/4, 1/4), p_s = (1/2, 1/2): ‖p_ref − p_s‖ / ‖p_ref‖ = (√2/4) / (√10/4) = 1/√5.
    reference = torch.zeros(3, 1, 4, 4)
    reference[:, 0, 0, 0] = 1
    rescaled = torch.zeros(3, 2, 1, 4, 4)
    rescaled[:, 0] = reference  # one rescaling leaves the read pixel alone, the other clears it
    value, per = local_scale_error(first_pixel_model, (reference, rescaled), per_sample=True)
    assert per.shape == (3, 2)
    assert torch.allclose(per[:, 0], torch.zeros(3)) and torch.allclose(per[:, 1], torch.full((3,), 5 ** -0.5))
    assert value == pytest.approx(0.5 / math.sqrt(5), rel=1e-6)


def test_local_scale_error_on_locally_scaled_mnist(composites):
    ds, _ = composites
    pairs = ds.rescaling_pairs(3)
    reference, rescaled, labels = pairs.tensors()
    assert local_scale_error(constant_model, (reference, rescaled)) == 0.0
    value, per = local_scale_error(ink_model, (reference, rescaled, labels), batch_size=3, per_sample=True)
    assert value > 0.05 and per.shape == (8, 3) and bool((per > 0).all())  # the ink changes with every rescaling
    assert local_scale_error(ink_model, DataLoader(pairs, batch_size=5)) == pytest.approx(value, abs=1e-6)


def test_local_scale_error_validates_shapes():
    reference = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ShapeError, match=r"expected rescaled of shape \(2, k, 1, 4, 4\)"):
        local_scale_error(constant_model, (reference, torch.zeros(2, 1, 4, 4)))
    with pytest.raises(ShapeError, match=r"expected rescaled of shape \(2, k, 1, 4, 4\)"):
        local_scale_error(constant_model, (reference, torch.zeros(2, 3, 1, 5, 4)))
    with pytest.raises(ShapeError, match=r"expected batches of at least 2 tensors \(reference, rescaled\)"):
        local_scale_error(constant_model, reference)


# ---------------------------------------------------------------------------------------------- equivariance error
def _conv(kernel: list[list[float]]):
    weight = torch.tensor(kernel, dtype=torch.float64)[None, None]
    return lambda x: nn.functional.conv2d(x, weight, padding=1)


ISOTROPIC = _conv([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])  # invariant under rot90 and flips
GRADIENT = _conv([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # a horizontal derivative: not


def test_equivariant_functions_have_no_error_on_the_exact_cyclic_group():
    x = torch.rand(16, 1, 12, 12, dtype=torch.float64)
    c4 = make_group("cyclic", n=4)
    assert c4.exact
    assert equivariance_error(lambda t: t, x, c4) == 0.0
    assert equivariance_error(lambda t: t.square() + 1, x, c4) == 0.0
    assert equivariance_error(ISOTROPIC, x, c4) < 1e-14


def test_non_equivariant_functions_have_positive_error():
    # Negative controls: a horizontal derivative turns into a vertical one under rot90, and a mirror anticommutes
    # with rot90 (flip∘rot = rot⁻¹∘flip), so both miss by about their own size for k = 1, 3.
    x = torch.rand(16, 1, 12, 12, dtype=torch.float64)
    c4 = make_group("cyclic", n=4)
    value, per = equivariance_error(GRADIENT, x, c4, per_sample=True)
    assert value > 0.3 and per.shape == (16,)
    assert equivariance_error(lambda t: t.flip(-1), x, c4) > 0.3
    # The flip is equivariant for its own group: the checker tells the two apart.
    assert equivariance_error(lambda t: t.flip(-1), x, HorizontalFlip()) == 0.0


def test_equivariance_error_normalization_and_border():
    # f(x) = x + an offset that is not mirror-symmetric, under the flip: a hand-computed relative error.
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = 3.0
    offset = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    offset[0, 0, 1, 0] = 4.0  # not mirror-symmetric

    def shifted(t):
        return t + offset

    # f(flip x) = flip x + offset; flip f(x) = flip x + flip offset; difference = offset - flip(offset), norm 4√2.
    # flip f(x) has entries 3 and 4 in different pixels: norm 5. Relative error 4√2 / 5.
    assert equivariance_error(shifted, x, HorizontalFlip()) == pytest.approx(4 * math.sqrt(2) / 5, rel=1e-12)
    # With a 1-pixel border only the central 2×2 remains, where both outputs are 0: 0 / eps clamp = 0.
    assert equivariance_error(shifted, x, HorizontalFlip(), border=1) == 0.0
    assert equivariance_error(lambda t: torch.zeros_like(t), x, HorizontalFlip()) == 0.0
    with pytest.raises(ConfigError, match=r"expected border < half the output size \(4, 4\), got 2"):
        equivariance_error(shifted, x, HorizontalFlip(), border=2)
    with pytest.raises(ConfigError, match="expected eps > 0, got 0"):
        equivariance_error(shifted, x, HorizontalFlip(), eps=0)


def test_equivariance_error_rejects_non_dense_outputs():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ShapeError, match=r"expected the model's output f\(x\) of shape \(2, C, H, W\)"):
        equivariance_error(constant_model, x, HorizontalFlip())
    with pytest.raises(ShapeError, match=r"expected f\(act\(g, x\)\) of the shape of f\(x\)"):
        calls = iter([torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 3, 3)])
        equivariance_error(lambda t: next(calls), x, HorizontalFlip())


def test_equivariance_error_batches_and_module_device():
    model = nn.Conv2d(1, 2, 3, padding=1, dtype=torch.float64)
    x = torch.rand(10, 1, 8, 8, dtype=torch.float64)
    group = make_group("rotation")
    whole = equivariance_error(model, x, group, batch_size=10, border=2)
    assert equivariance_error(model, DataLoader(TensorDataset(x), batch_size=4), group, border=2) == \
        pytest.approx(whole, rel=1e-12)
    assert whole > 0.05  # a random convolution is not rotation-equivariant
