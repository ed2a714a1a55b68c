"""The IDX reader and MNIST loading: the bundled subset, a full copy of MNIST, and every way a file can be bad."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

from equican.data import BUNDLED_MNIST_DIR, load_mnist, mnist_files, read_idx, read_idx_header, write_idx
from equican.errors import ConfigError, DataError

# The full set lives beside the checkout (../shared/data/mnist); EQUICAN_FULL_MNIST points elsewhere, e.g. from a
# clone in another directory.
FULL_MNIST = Path(os.environ.get("EQUICAN_FULL_MNIST", Path(__file__).resolve().parents[2] / "shared/data/mnist"))
needs_full = pytest.mark.skipif(not (FULL_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
                                reason=f"the full MNIST set is not at {FULL_MNIST} (only some machines have it)")

# From the MNIST distribution's own description (../shared/data/mnist/README.md).
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------------------------- bundled subset
@pytest.mark.parametrize(("split", "n"), [("train", 500), ("test", 200)])
def test_bundled_subset_shapes_and_dtypes(split, n):
    images, labels = load_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))  # every class occurs in a few hundred digits
    # Real digits: black background, white strokes, and each image holds some ink.
    assert images[:, 0, :].float().mean() < 1
    assert images.amax(dim=(1, 2)).min() >= 200
    assert 0.05 < (images > 127).float().mean() < 0.3


def test_bundled_subset_is_the_start_of_mnist():
    _, labels = load_mnist("train")
    assert labels[:10].tolist() == FIRST_TRAIN_LABELS


def test_limit_reads_a_prefix():
    images, labels = load_mnist("test", limit=7)
    all_images, all_labels = load_mnist("test")
    assert images.shape == (7, 28, 28)
    assert torch.equal(images, all_images[:7]) and torch.equal(labels, all_labels[:7])
    assert load_mnist("test", limit=0)[0].shape == (0, 28, 28)
    assert load_mnist("test", limit=10_000)[0].shape == (200, 28, 28)  # a limit past the end returns them all


@needs_full
@pytest.mark.parametrize(("split", "n"), [("train", 500), ("test", 200)])
def test_bundled_subset_matches_full_mnist(split, n):
    images, labels = load_mnist(split)
    full_images, full_labels = load_mnist(split, root=FULL_MNIST, limit=n)
    assert torch.equal(images, full_images)
    assert torch.equal(labels, full_labels)


@needs_full
def test_full_training_labels():
    labels = read_idx(FULL_MNIST / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60_000,)
    assert labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert torch.bincount(labels.long(), minlength=10).tolist() == TRAIN_COUNTS


@needs_full
def test_full_test_split_headers():
    images, labels = mnist_files("test", FULL_MNIST)
    assert read_idx_header(images).shape == (10_000, 28, 28)
    assert read_idx_header(labels).shape == (10_000,)


# ---------------------------------------------------------------------------------------------- IDX round trips
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_round_trip(tmp_path, dtype, suffix):
    # Values that need every byte of the wider types, so a byte-order mistake cannot pass.
    base = torch.arange(-60, 60, dtype=torch.float64).reshape(4, 5, 6) * 1.37
    t = base.to(dtype) if dtype.is_floating_point else (base * 1000).to(torch.int64).to(dtype)
    if dtype == torch.uint8:
        t = torch.arange(120, dtype=torch.uint8).reshape(4, 5, 6)
    path = write_idx(tmp_path / f"t.idx{suffix}", t)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == dtype and torch.equal(back, t)
    assert read_idx_header(path).shape == (4, 5, 6)


def test_gzip_output_is_reproducible(tmp_path):
    t = torch.arange(50, dtype=torch.uint8).reshape(2, 25)
    a = write_idx(tmp_path / "a.gz", t).read_bytes()
    b = write_idx(tmp_path / "b.gz", t).read_bytes()
    assert a == b


def test_bundled_files_are_gzip_idx():
    for split in ("train", "test"):
        for path in mnist_files(split):
            assert path.parent == BUNDLED_MNIST_DIR and path.suffix == ".gz"
            assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert sum(p.stat().st_size for p in BUNDLED_MNIST_DIR.glob("*.gz")) < 300_000


# ---------------------------------------------------------------------------------------------- bad files
def _mnist_dir(tmp_path: Path, n_images: int = 10, n_labels: int = 10, *, gz: bool = True) -> Path:
    """A directory of real MNIST training files (from the bundled subset) with the given counts."""
    images, labels = load_mnist("train", limit=max(n_images, n_labels))
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images[:n_images])
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels[:n_labels].to(torch.uint8))
    return tmp_path


class _ExpectDataError:
    """Like ``pytest.raises(DataError)``, and the message must name ``path`` and contain every one of ``words``."""

    def __init__(self, path: Path, words: tuple[str, ...]) -> None:
        self.path, self.words = path, words

    def __enter__(self):
        self._ctx = pytest.raises(DataError)
        self.info = self._ctx.__enter__()
        return self.info

    def __exit__(self, *exc):
        handled = self._ctx.__exit__(*exc)
        message = str(self.info.value)
        assert str(self.path) in message, message
        for word in self.words:
            assert word in message, message
        return handled


def test_user_directory_raw_and_gzip(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "gz").mkdir()
    raw = _mnist_dir(tmp_path / "raw", gz=False)
    gz = _mnist_dir(tmp_path / "gz", gz=True)
    a, la = load_mnist("train", root=raw)
    b, lb = load_mnist("train", root=gz)
    assert torch.equal(a, b) and torch.equal(la, lb) and a.shape == (10, 28, 28)
    assert la[:10].tolist() == FIRST_TRAIN_LABELS


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with _ExpectDataError(missing, ("expected a directory", "no such directory")):
        load_mnist("train", root=missing)


def test_missing_file(tmp_path):
    root = _mnist_dir(tmp_path)
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with _ExpectDataError(root / "train-labels-idx1-ubyte", ("missing file",)):
        load_mnist("train", root=root)
    with _ExpectDataError(tmp_path / "absent.idx", ("no such file",)):
        read_idx(tmp_path / "absent.idx")


def test_truncated_raw_file(tmp_path):
    root = _mnist_dir(tmp_path, gz=False)
    path = root / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with _ExpectDataError(path, ("truncated", "expected 7840 data bytes", "7740")):
        load_mnist("train", root=root)


def test_truncated_gzip_file(tmp_path):
    root = _mnist_dir(tmp_path, gz=True)
    path = root / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with _ExpectDataError(path, ("truncated",)):
        load_mnist("train", root=root)


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x0a")  # declares 3 sizes, holds 1
    with _ExpectDataError(path, ("truncated header", "3 dimension sizes")):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with _ExpectDataError(path, ("truncated file of 2 byte(s)",)):
        read_idx(path)


def test_bad_magic(tmp_path):
    root = _mnist_dir(tmp_path, gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(b"\x50\x4b" + path.read_bytes()[2:])  # e.g. a zip file under the MNIST name
    with _ExpectDataError(path, ("bad magic", "50 4b")):
        load_mnist("train", root=root)


def test_unsupported_dtype_code(tmp_path):
    path = write_idx(tmp_path / "t.idx", torch.zeros(3, 4, dtype=torch.uint8))
    data = bytearray(path.read_bytes())
    data[2] = 0x0A
    path.write_bytes(bytes(data))
    with _ExpectDataError(path, ("unsupported dtype code 0x0A",)):
        read_idx(path)


def test_zero_dimensions(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(b"\x00\x00\x08\x00")
    with _ExpectDataError(path, ("at least 1 dimension",)):
        read_idx(path)


def test_wrong_count_in_header(tmp_path):
    # The header says 9 images while the file holds 10: the data is longer than declared.
    root = _mnist_dir(tmp_path, gz=True)
    path = root / "train-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[4:8] = (9).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(data)))
    with _ExpectDataError(path, ("size mismatch", "784 trailing byte(s)")):
        read_idx(path)
    with _ExpectDataError(path, ("got 9 images", "10 labels")):  # load_mnist compares the headers first
        load_mnist("train", root=root)
    # ... and 11 images while it holds 10: too short.
    data[4:8] = (11).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(data)))
    with _ExpectDataError(path, ("truncated", "expected 8624 data bytes")):
        read_idx(path)


def test_corrupt_gzip_crc(tmp_path):
    path = write_idx(tmp_path / "t.idx.gz", torch.arange(200, dtype=torch.uint8).reshape(10, 20))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    with _ExpectDataError(path, ("corrupt or truncated",)):
        read_idx(path)


def test_images_labels_count_mismatch(tmp_path):
    root = _mnist_dir(tmp_path, n_images=10, n_labels=8)
    with _ExpectDataError(root / "train-images-idx3-ubyte.gz", ("10 images", "8 labels",
                                                                str(root / "train-labels-idx1-ubyte.gz"))):
        load_mnist("train", root=root)


def test_labels_file_where_images_belong(tmp_path):
    root = _mnist_dir(tmp_path)
    shutil.copy(root / "train-labels-idx1-ubyte.gz", root / "train-images-idx3-ubyte.gz")
    with _ExpectDataError(root / "train-images-idx3-ubyte.gz", ("expected uint8 images of shape (N, 28, 28)",)):
        load_mnist("train", root=root)


def test_label_out_of_range(tmp_path):
    root = _mnist_dir(tmp_path)
    labels = torch.full((10,), 3, dtype=torch.uint8)
    labels[4] = 12
    path = write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    with _ExpectDataError(path, ("labels in 0..9", "got 12 at index 4")):
        load_mnist("train", root=root)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="expected split 'train' or 'test', got 'val'"):
        load_mnist("val")
    with pytest.raises(ConfigError, match="expected limit to be a non-negative int"):
        load_mnist("train", limit=-1)
    assert issubclass(DataError, OSError)  # callers may catch it as the OSError it also is
