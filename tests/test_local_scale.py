"""Locally Scaled MNIST: configs, determinism, labels, layouts, scales, the k rescalings, sources and seeding."""

from __future__ import annotations

import gzip
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from equican.data import (BUNDLED_MNIST_DIR, LAYOUTS, LocalScaleConfig, LocalScaleMNIST, LocalScalePairs,
                          index_generator, load_mnist, local_scale_mnist)
from equican.errors import ConfigError, DataError, DTypeError, ShapeError

FULL_MNIST = Path(os.environ.get("EQUICAN_FULL_MNIST", Path(__file__).resolve().parents[2] / "shared/data/mnist"))


@pytest.fixture(scope="module")
def test_digits():
    return load_mnist("test", limit=40)


@pytest.fixture(scope="module")
def dataset(test_digits):
    return LocalScaleMNIST.from_tensors(*test_digits)


def square_digits(n: int, side: int = 20, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic digits: a centred ``side × side`` white square on a black ``size × size`` image."""
    images = torch.zeros(n, size, size, dtype=torch.uint8)
    lo = (size - side) // 2
    images[:, lo:lo + side, lo:lo + side] = 255
    return images, torch.arange(n) % 10


def ink_boxes(image: torch.Tensor, config: LocalScaleConfig, layout: str, threshold: float = 0.5):
    """Per cell (reading order): the ink's bounding-box height and width and its centroid (row, col) in the cell."""
    out = []
    for top, left in config.cell_origins(layout):
        cell = image[0, top:top + config.cell, left:left + config.cell]
        rows = (cell > threshold).any(dim=1).nonzero()[:, 0]
        cols = (cell > threshold).any(dim=0).nonzero()[:, 0]
        mass = cell.sum()
        r = torch.arange(config.cell, dtype=torch.float32)
        centroid = (float((cell.sum(1) * r).sum() / mass), float((cell.sum(0) * r).sum() / mass))
        out.append((int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1), centroid))
    return out


# ---------------------------------------------------------------------------------------------- config
def test_default_config_is_the_papers():
    config = LocalScaleConfig()
    assert (config.digits, config.cell, config.canvas) == (3, 70, 210)
    assert config.scale_range == (0.4, 2.0)
    assert config.layouts == ("horizontal", "vertical", "diagonal") == LAYOUTS
    assert config.num_classes == 1000


@pytest.mark.parametrize("kwargs", [
    {"digits": 0}, {"digits": 2.0}, {"digits": True}, {"digits": 19, "canvas": 19 * 70},
    {"cell": 0}, {"canvas": 209}, {"digits": 4},  # 4 cells of 70 do not fit on 210
    {"scale_range": (0.0, 2.0)}, {"scale_range": (2.0, 1.0)}, {"scale_range": (0.4,)}, {"scale_range": 1.0},
    {"scale_range": (0.4, math.inf)}, {"scale_range": (0.4, math.nan)},
    {"layouts": ()}, {"layouts": ("spiral",)}, {"layouts": ("vertical", "vertical")},
    {"stride": 0}, {"seed": -1}, {"seed": 1.5},
])
def test_invalid_config_is_rejected_at_construction(kwargs):
    with pytest.raises(ConfigError, match="LocalScaleConfig: expected"):
        LocalScaleConfig(**kwargs)


def test_config_normalizes_and_is_frozen():
    config = LocalScaleConfig(scale_range=[1, 2], layouts="diagonal")
    assert config.scale_range == (1.0, 2.0) and config.layouts == ("diagonal",)
    with pytest.raises(AttributeError):
        config.digits = 2  # type: ignore[misc]
    assert LocalScaleConfig(digits=2, canvas=140) == LocalScaleConfig(digits=2, canvas=140)


# ---------------------------------------------------------------------------------------------- items
def test_items_are_float_images_in_unit_range_with_int64_labels(dataset):
    assert len(dataset) == 40 and dataset.num_classes == 1000
    for i in (0, 17, 39):
        x, y = dataset[i]
        assert x.shape == (1, 210, 210) and x.dtype == torch.float32
        assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0.5
        assert y.dtype == torch.int64 and y.ndim == 0 and 0 <= int(y) < 1000


def test_labels_are_the_digits_read_as_a_base_10_number(test_digits):
    images, labels = test_digits
    ds = LocalScaleMNIST.from_tensors(images, labels)
    n = len(labels)
    for i in range(n):  # includes the wrap-around at the end: digits n-2, n-1, 0 and n-1, 0, 1
        a, b, c = (int(labels[(i + t) % n]) for t in range(3))
        assert int(ds[i][1]) == ds.label(i) == 100 * a + 10 * b + c
    # The start of MNIST's test set is 7, 2, 1, 0, 4: composites 721, 210, 104 (a leading zero is kept as a digit).
    assert [ds.label(i) for i in range(3)] == [721, 210, 104]
    two = LocalScaleMNIST.from_tensors(images, labels, LocalScaleConfig(digits=2, canvas=140))
    assert two.num_classes == 100 and two.label(0) == 72


def test_stride_gives_disjoint_windows(test_digits):
    ds = LocalScaleMNIST.from_tensors(*test_digits, LocalScaleConfig(stride=3))
    assert len(ds) == 14  # ceil(40 / 3)
    assert ds.digit_indices(1) == [3, 4, 5] and ds.digit_indices(13) == [39, 0, 1]


def test_negative_and_out_of_range_indices(dataset):
    assert torch.equal(dataset[-1][0], dataset[39][0])
    with pytest.raises(IndexError, match=r"expected an index in \[-40, 40\), got 40"):
        dataset[40]
    with pytest.raises(DTypeError, match="expected an int index, got float"):
        dataset[1.0]


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_data_in_any_access_order(test_digits):
    a = LocalScaleMNIST.from_tensors(*test_digits, LocalScaleConfig(seed=7))
    b = LocalScaleMNIST.from_tensors(*test_digits, LocalScaleConfig(seed=7))
    forward = [a[i][0] for i in range(10)]
    backward = [b[i][0] for i in reversed(range(10))][::-1]
    assert all(torch.equal(f, g) for f, g in zip(forward, backward))
    assert torch.equal(a[3][0], a[3][0])  # reading an item again does not advance any state
    assert torch.equal(a.rescalings(5, 3), b.rescalings(5, 3))


def test_different_seeds_give_different_data(test_digits):
    a = LocalScaleMNIST.from_tensors(*test_digits, LocalScaleConfig(seed=0))
    b = LocalScaleMNIST.from_tensors(*test_digits, LocalScaleConfig(seed=1))
    assert all(not torch.equal(a.scales(i), b.scales(i)) for i in range(10))
    assert sum(not torch.equal(a[i][0], b[i][0]) for i in range(10)) >= 9
    assert [a.label(i) for i in range(10)] == [b.label(i) for i in range(10)]  # the seed never changes the digits
    # Seeding item i with seed + i would make item i of seed 1 repeat item i + 1 of seed 0.
    assert not any(torch.equal(a.scales(i + 1), b.scales(i)) for i in range(10))


def test_composites_are_not_shifted_copies_of_each_other(dataset):
    # Every composite has its own draw (no two items share a scale vector, nor a shifted part of one).
    scales = torch.stack([dataset.scales(i) for i in range(40)])
    assert torch.unique(scales, dim=0).shape[0] == 40
    assert not torch.equal(scales[1:, :2], scales[:-1, 1:])


def test_tensor_function_equals_the_dataset():
    config = LocalScaleConfig(seed=3)
    x, y = local_scale_mnist("test", limit=6, config=config)
    ds = LocalScaleMNIST("test", limit=6, config=config)
    assert x.shape == (6, 1, 210, 210) and y.shape == (6,) and y.dtype == torch.int64
    for i in range(6):
        assert torch.equal(x[i], ds[i][0]) and int(y[i]) == int(ds[i][1])
    batch_x, batch_y = next(iter(DataLoader(ds, batch_size=6)))
    assert torch.equal(batch_x, x) and torch.equal(batch_y, y)


# ---------------------------------------------------------------------------------------------- layout and scale
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_puts_each_digit_centred_in_its_own_cell(layout):
    config = LocalScaleConfig(layouts=(layout,), scale_range=(0.6, 1.6))
    ds = LocalScaleMNIST.from_tensors(*square_digits(12), config)
    cells = {"horizontal": [(1, 0), (1, 1), (1, 2)], "vertical": [(0, 1), (1, 1), (2, 1)],
             "diagonal": [(0, 0), (1, 1), (2, 2)]}[layout]
    assert config.cell_origins(layout) == [(70 * r, 70 * c) for r, c in cells]
    for i in range(12):
        assert ds.layout(i) == layout
        image = ds[i][0]
        for (r, c), (_, _, (cy, cx)) in zip(cells, ink_boxes(image, config, layout)):
            # A square resampled to an even or odd size sits within half a pixel of the cell's centre, 34.5.
            assert abs(cy - 34.5) <= 0.501 and abs(cx - 34.5) <= 0.501
        outside = image.clone()
        for top, left in config.cell_origins(layout):
            outside[0, top:top + 70, left:left + 70] = 0
        assert float(outside.abs().max()) == 0  # nothing outside the layout's cells


def test_layout_with_real_digits_and_a_larger_canvas(test_digits):
    # 3 cells of 50 on a 200 canvas: the run of cells is centred (offset 25), the row/column centred across (75).
    config = LocalScaleConfig(cell=50, canvas=200, scale_range=(1.0, 1.0), layouts=("horizontal",))
    assert config.cell_origins("horizontal") == [(75, 25), (75, 75), (75, 125)]
    assert config.cell_origins("vertical") == [(25, 75), (75, 75), (125, 75)]
    assert config.cell_origins("diagonal") == [(25, 25), (75, 75), (125, 125)]
    ds = LocalScaleMNIST.from_tensors(*test_digits, config)
    images, _ = test_digits
    for i in range(5):
        image = ds[i][0]
        for source, (top, left) in zip(ds.digit_indices(i), config.cell_origins("horizontal")):
            # Scale 1: the source digit itself, centred at offset (50 - 28) // 2 = 11 in its cell.
            cell = image[0, top:top + 50, left:left + 50]
            assert torch.equal(cell[11:39, 11:39], images[source].float() / 255)
            assert float(cell.sum()) == pytest.approx(float(images[source].float().sum() / 255), rel=1e-5)


def test_layouts_are_all_drawn_by_default(dataset):
    assert {dataset.layout(i) for i in range(40)} == set(LAYOUTS)


def test_digit_sizes_follow_their_scale_factors():
    config = LocalScaleConfig()
    ds = LocalScaleMNIST.from_tensors(*square_digits(30), config)
    all_scales = []
    for i in range(30):
        scales = ds.scales(i)
        assert scales.shape == (3,) and scales.dtype == torch.float64
        all_scales.append(scales)
        for (h, w, _), s in zip(ink_boxes(ds[i][0], config, ds.layout(i)), scales.tolist()):
            # A 20-pixel square at scale s spans 20·s pixels, up to the rounding of the resampled size.
            assert abs(h - 20 * s) <= 1.5 and abs(w - 20 * s) <= 1.5, (i, s, h, w)
    flat = torch.cat(all_scales)
    assert float(flat.min()) >= 0.4 and float(flat.max()) < 2.0
    assert float(flat.min()) < 0.55 and float(flat.max()) > 1.85  # the draws cover the range


def test_real_digit_heights_scale_with_the_factor(test_digits):
    config = LocalScaleConfig(layouts=("horizontal",))
    ds = LocalScaleMNIST.from_tensors(*test_digits, config)
    for i in range(0, 40, 4):
        ref = ink_boxes(ds.reference(i), config, "horizontal", threshold=0.3)
        got = ink_boxes(ds[i][0], config, "horizontal", threshold=0.3)
        for (h1, _, _), (hs, _, _), s in zip(ref, got, ds.scales(i).tolist()):
            assert abs(hs - s * h1) <= 2.5, (i, s, h1, hs)


def test_a_digit_larger_than_its_cell_is_cropped_to_it():
    ones = torch.ones(3, 28, 28)
    config = LocalScaleConfig(cell=20, canvas=60, scale_range=(2.0, 2.0), layouts=("diagonal",))
    image = LocalScaleMNIST.from_tensors(ones, torch.tensor([1, 2, 3]), config)[0][0]
    assert image.shape == (1, 60, 60)
    diagonal = torch.zeros(60, 60)
    for t in range(3):
        diagonal[20 * t:20 * t + 20, 20 * t:20 * t + 20] = 1
    assert torch.allclose(image[0], diagonal)  # each cell is full, and nothing spills into its neighbours


# ---------------------------------------------------------------------------------------------- k rescalings
def test_k_rescalings_differ_from_each_other_and_from_the_reference(dataset):
    for i in (0, 13):
        reference = dataset.reference(i)
        rescaled = dataset.rescalings(i, 5)
        assert rescaled.shape == (5, 1, 210, 210) and rescaled.dtype == torch.float32
        scales = dataset.rescaling_scales(i, 5)
        assert scales.shape == (5, 3) and torch.unique(scales, dim=0).shape[0] == 5
        assert float(scales.min()) >= 0.4 and float(scales.max()) < 2.0
        for a in range(5):
            assert float((rescaled[a] - reference).abs().max()) > 0.5
            for b in range(a):
                assert float((rescaled[a] - rescaled[b]).abs().max()) > 0.5, (i, a, b)
        # Independent of the composite's own draw as well, and rendered with its layout and digits.
        assert not any(torch.equal(s, dataset.scales(i)) for s in scales)
        assert torch.equal(rescaled[2], dataset.render(i, scales[2]))


def test_rescalings_do_not_depend_on_k(dataset):
    assert torch.equal(dataset.rescaling_scales(4, 5)[:3], dataset.rescaling_scales(4, 3))
    assert torch.equal(dataset.rescalings(4, 4)[:2], dataset.rescalings(4, 2))


def test_reference_holds_every_digit_at_scale_one(dataset, test_digits):
    images, _ = test_digits
    i = 2
    reference = dataset.reference(i)
    assert torch.equal(reference, dataset.render(i, [1.0, 1.0, 1.0]))
    config = dataset.config
    for source, (top, left) in zip(dataset.digit_indices(i), config.cell_origins(dataset.layout(i))):
        assert torch.equal(reference[0, top + 21:top + 49, left + 21:left + 49], images[source].float() / 255)


def test_rescaling_pairs_for_the_local_scale_error(dataset):
    pairs = dataset.rescaling_pairs(3)
    assert isinstance(pairs, LocalScalePairs) and len(pairs) == len(dataset)
    reference, rescaled, label = pairs[1]
    assert torch.equal(reference, dataset.reference(1)) and torch.equal(rescaled, dataset.rescalings(1, 3))
    assert int(label) == dataset.label(1)
    ref_b, resc_b, y_b = next(iter(DataLoader(pairs, batch_size=4)))
    assert ref_b.shape == (4, 1, 210, 210) and resc_b.shape == (4, 3, 1, 210, 210) and y_b.shape == (4,)
    with pytest.raises(ConfigError, match="LocalScalePairs: expected k to be an int >= 1, got 0"):
        dataset.rescaling_pairs(0)


# ---------------------------------------------------------------------------------------------- validation
def test_render_validates_scales(dataset):
    with pytest.raises(ShapeError, match="expected 3 scale factors"):
        dataset.render(0, [1.0, 1.0])
    with pytest.raises(ConfigError, match="expected positive finite scale factors"):
        dataset.render(0, [1.0, -1.0, 1.0])
    with pytest.raises(ConfigError, match="expected k to be an int >= 1"):
        dataset.rescalings(0, 0)


@pytest.mark.parametrize(("images", "labels", "error", "match"), [
    (torch.zeros(5, 28), torch.zeros(5, dtype=torch.long), ShapeError, r"expected images of shape \(N, h, w\)"),
    (torch.zeros(5, 28, 28, dtype=torch.int32), torch.zeros(5, dtype=torch.long), DTypeError, "float32 or float64"),
    (torch.full((5, 28, 28), 2.0), torch.zeros(5, dtype=torch.long), ConfigError, r"float images in \[0, 1\]"),
    (torch.zeros(5, 28, 28), torch.zeros(4, dtype=torch.long), ShapeError, r"labels of shape \(5,\)"),
    (torch.zeros(5, 28, 28), torch.zeros(5), DTypeError, "integer labels"),
    (torch.zeros(5, 28, 28), torch.full((5,), 10), ConfigError, r"labels in 0\.\.9"),
    (torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.long), ConfigError, "at least 3 source digits"),
])
def test_from_tensors_validates_its_digits(images, labels, error, match):
    with pytest.raises(error, match=match):
        LocalScaleMNIST.from_tensors(images, labels)


def test_config_must_be_a_local_scale_config(test_digits):
    with pytest.raises(ConfigError, match="expected config to be a LocalScaleConfig, got dict"):
        LocalScaleMNIST.from_tensors(*test_digits, {"digits": 3})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- sources
def test_split_root_and_limit_pass_through_to_load_mnist():
    train = LocalScaleMNIST("train", limit=9)
    assert len(train) == 9 and train.label(0) == 504  # MNIST's training set starts 5, 0, 4
    bundled = LocalScaleMNIST("test", root=BUNDLED_MNIST_DIR, limit=9)
    assert torch.equal(bundled[4][0], LocalScaleMNIST("test", limit=9)[4][0])


def test_missing_and_corrupt_sources_name_the_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"expected a directory of MNIST IDX files at {missing}"):
        LocalScaleMNIST("test", root=missing)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(BUNDLED_MNIST_DIR / name, tmp_path / name)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(DataError, match="truncated") as info:
        LocalScaleMNIST("test", root=tmp_path)
    assert str(images) in str(info.value)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file") as info:
        LocalScaleMNIST("test", root=tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@pytest.mark.skipif(not (FULL_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason=f"the full MNIST set is not at {FULL_MNIST}")
def test_a_user_directory_of_full_mnist():
    full = LocalScaleMNIST("test", root=FULL_MNIST)
    assert len(full) == 10_000
    bundled = LocalScaleMNIST("test")
    # The bundled subset is the start of MNIST, so early composites (not wrapping around) agree.
    assert torch.equal(full[5][0], bundled[5][0]) and full.label(5) == bundled.label(5)


# ---------------------------------------------------------------------------------------------- seeding
def test_index_generator_is_a_function_of_its_key():
    draw = lambda *key: torch.rand(4, generator=index_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    keys = [(0, 5, 1), (0, 5, 0), (0, 4, 1), (1, 5, 1), (0, 6, 0), (1, 4, 1)]
    values = torch.stack([draw(*k) for k in keys])
    assert torch.unique(values, dim=0).shape[0] == len(keys)
    with pytest.raises(ConfigError, match="index_generator: expected key 0 to be a non-negative int, got -1"):
        index_generator(0, -1)
    with pytest.raises(ConfigError, match="expected seed to be a non-negative int"):
        index_generator(0.5)
