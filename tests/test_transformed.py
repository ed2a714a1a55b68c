"""Transformed MNIST: every registered group (through conftest's ``group`` parametrization), configs, determinism."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from equican import make_group
from equican.data import TransformedConfig, TransformedMNIST, load_mnist, transformed_mnist
from equican.errors import ConfigError, DataError, UnknownNameError

N = 12


@pytest.fixture(scope="module")
def digits():
    return load_mnist("test", limit=N)


def outer_ring(images: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The largest value in the outer ``width`` pixels of each image, shape ``(B,)``."""
    ring = images.clone()
    ring[..., width:-width, width:-width] = 0
    return ring.flatten(1).amax(dim=1)


# ---------------------------------------------------------------------------------------------- every group
def test_items_for_every_registered_group(group, digits):
    ds = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group))
    assert len(ds) == N and ds.group is group
    x, y = ds[3]
    assert x.shape == (1, 56, 56) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y) == int(digits[1][3])
    # The item is the group's own action on the padded digit, with the element drawn for that index.
    g = ds.element(3)
    assert g.shape == (1, *group.param_shape)
    assert torch.equal(x, group.act(g, ds.untransformed(3)[None])[0])


def test_the_transform_does_not_cut_the_digit(group, digits):
    images, labels = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group)).tensors()
    assert images.shape == (N, 1, 56, 56) and torch.equal(labels, digits[1])
    assert float(outer_ring(images).max()) < 1e-3  # nothing reaches the canvas's border
    assert float(images.min()) >= -1e-6 and float(images.max()) <= 1 + 1e-6


def test_without_padding_the_check_above_fails(digits):
    # Negative control for the border check: rotating the bare 28×28 digits carries ink to the border.
    ds = TransformedMNIST.from_tensors(*digits, config=TransformedConfig("rotation", canvas=28))
    assert float(outer_ring(ds.tensors()[0]).max()) > 0.3


def test_same_seed_same_items_different_seed_different_items(group, digits):
    a = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group, seed=5))
    b = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group, seed=5))
    c = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group, seed=6))
    backward = [b[i][0] for i in reversed(range(N))][::-1]
    assert all(torch.equal(a[i][0], backward[i]) for i in range(N))
    assert any(not torch.equal(a.element(i), c.element(i)) for i in range(N))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(N))


def test_digits_are_really_transformed(group, digits):
    ds = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group))
    moved = [float((ds[i][0] - ds.untransformed(i)).abs().max()) for i in range(N)]
    assert sum(m > 0.2 for m in moved) >= N // 2


def test_batched_tensors_equal_the_items(group, digits):
    ds = TransformedMNIST.from_tensors(*digits, config=TransformedConfig(group))
    images, labels = ds.tensors(batch_size=5)
    for i in range(N):
        assert torch.allclose(images[i], ds[i][0], atol=1e-6)
    some, _ = ds.tensors([7, 2])
    assert torch.allclose(some, images[[7, 2]], atol=1e-6)


# ---------------------------------------------------------------------------------------------- strength, config
def test_strength_comes_from_the_groups_constructor_arguments(digits):
    none = TransformedMNIST.from_tensors(*digits, config=TransformedConfig("rotation", group_args={"max_angle": 0.0}))
    for i in range(4):
        assert torch.allclose(none[i][0], none.untransformed(i), atol=1e-4)  # the identity, up to grid rounding

    def rotated(max_angle: float) -> tuple[float, float]:
        """The largest |angle| drawn and the mean pixel change, at the given strength."""
        ds = TransformedMNIST.from_tensors(*digits, config=TransformedConfig("rotation",
                                                                           group_args={"max_angle": max_angle}))
        angle = max(float(ds.element(i).abs()) for i in range(N))
        return angle, sum(float((ds[i][0] - ds.untransformed(i)).abs().mean()) for i in range(N)) / N

    (a1, c1), (a2, c2), (a3, c3) = rotated(0.1), rotated(0.5), rotated(1.5)
    assert a1 <= 0.1 < a2 <= 0.5 < a3 <= 1.5
    assert c1 < c2 < c3


def test_config_resolves_a_name_through_the_registry():
    config = TransformedConfig("monotone", group_args={"cells": 8, "strength": 0.25})
    assert config.group == make_group("monotone", cells=8, strength=0.25)
    assert dict(config.group_args) == {"cells": 8, "strength": 0.25}
    with pytest.raises(TypeError):
        config.group_args["cells"] = 2  # type: ignore[index]  # read-only
    instance = make_group("scale", max_log_scale=0.1)
    assert TransformedConfig(instance).group is instance
    hash(config)  # usable as a key, like every frozen config


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"group": "rotatoin"}, UnknownNameError, "did you mean 'rotation'"),
    ({"group": "rotation", "group_args": {"strength": 1}}, ConfigError, "accepted arguments: max_angle"),
    ({"group": "rotation", "group_args": {"max_angle": 10}}, ConfigError, "Rotation2d: expected max_angle"),
    ({"group": 3}, ConfigError, "expected group to be a registered name or an equican.Group, got int"),
    ({"group": "rotation", "group_args": [1]}, ConfigError, "expected group_args to be a mapping"),
    ({"group": "rotation", "canvas": 1}, ConfigError, "expected canvas to be an int >= 2, got 1"),
    ({"group": "rotation", "seed": -2}, ConfigError, "expected seed to be an int >= 0, got -2"),
])
def test_invalid_configs_are_rejected_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        TransformedConfig(**kwargs)


def test_group_args_with_an_instance_are_ambiguous():
    with pytest.raises(ConfigError, match="expected no group_args with a Group instance"):
        TransformedConfig(make_group("rotation"), group_args={"max_angle": 1.0})


def test_canvas_smaller_than_the_digits_is_rejected(digits):
    with pytest.raises(ConfigError, match="expected canvas >= the digit size 28, got 20"):
        TransformedMNIST.from_tensors(*digits, config=TransformedConfig("rotation", canvas=20))


# ---------------------------------------------------------------------------------------------- sources
def test_tensor_function_and_dataloader_agree():
    config = TransformedConfig("affine", seed=2)
    x, y = transformed_mnist("train", config=config, limit=6)
    ds = TransformedMNIST("train", config=config, limit=6)
    assert x.shape == (6, 1, 56, 56) and y.tolist() == [5, 0, 4, 1, 9, 2]
    batch_x, batch_y = next(iter(DataLoader(ds, batch_size=6)))
    assert torch.allclose(batch_x, x, atol=1e-6) and torch.equal(batch_y, y)


def test_a_missing_source_directory_is_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "none")):
        TransformedMNIST("test", config=TransformedConfig("rotation"), root=tmp_path / "none")
