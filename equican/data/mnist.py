"""MNIST digits from IDX files: the small subset bundled with the package, or a user's full copy.

The bundled subset (``equican/data/mnist_subset/``) holds the first 500 training and the first 200 test digits of
MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), written by ``scripts/make_mnist_subset.py``; its
README gives the provenance. It lets every example and test run with no download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .idx import read_idx, read_idx_header

__all__ = ["load_mnist", "mnist_files", "BUNDLED_MNIST_DIR", "MNIST_FILES"]

BUNDLED_MNIST_DIR = Path(__file__).resolve().parent / "mnist_subset"
"""The directory of the bundled subset, in the standard MNIST file layout."""

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Standard file names per split, without the optional ``.gz`` suffix: (images, labels)."""

_WHERE = "load_mnist"


def _find(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``, whichever exists (gzip first: it is how MNIST is distributed)."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{_WHERE}: expected the MNIST file {stem}.gz or {stem} in {root}, got neither "
                    f"(missing file {root / stem}[.gz])")


def mnist_files(split: str = "train", root: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The (images, labels) files that [`load_mnist`][equican.data.mnist.load_mnist] reads for ``split`` under ``root``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a directory holding MNIST's IDX files under their standard names (``train-images-idx3-ubyte``,
            ``t10k-labels-idx1-ubyte``, ..., each optionally ``.gz``); None for the bundled subset.

    Returns:
        The paths of the images file and of the labels file.

    Raises:
        ConfigError: ``split`` is neither ``"train"`` nor ``"test"``.
        DataError: ``root`` is not a directory, or a file is missing from it.
    """
    if split not in MNIST_FILES:
        raise ConfigError(f"{_WHERE}: expected split 'train' or 'test', got {split!r}")
    directory = BUNDLED_MNIST_DIR if root is None else Path(root).expanduser()
    if not directory.is_dir():
        what = "a file" if directory.exists() else "no such directory"
        raise DataError(f"{_WHERE}: expected a directory of MNIST IDX files at {directory}, got {what}")
    images_stem, labels_stem = MNIST_FILES[split]
    return _find(directory, images_stem), _find(directory, labels_stem)


def load_mnist(split: str = "train", root: str | os.PathLike[str] | None = None,
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST digits and labels.

    Args:
        split: ``"train"`` or ``"test"``.
        root: None for the subset bundled with the package (500 train / 200 test digits), or a directory with the
            user's MNIST IDX files under their standard names, raw or ``.gz``.
        limit: return at most the first ``limit`` digits (all when None); only those are read from disk.

    Returns:
        ``(images, labels)``: images of shape ``(N, 28, 28)``, dtype uint8 (0 = background, 255 = ink), and labels
        of shape ``(N,)``, dtype int64, in ``0..9``.

    Raises:
        ConfigError: an invalid ``split`` or ``limit``.
        DataError: a missing directory or file, a corrupt file (see [`read_idx`][equican.data.idx.read_idx]), files that
            are not MNIST images/labels, or image and label counts that disagree; the message names the file.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"{_WHERE}: expected limit to be a non-negative int or None, got {limit!r}")
    images_path, labels_path = mnist_files(split, root)
    # Check both headers before reading any data: a wrong or mismatched file fails fast and names itself.
    images_head, labels_head = read_idx_header(images_path), read_idx_header(labels_path)
    if images_head.dtype != torch.uint8 or len(images_head.shape) != 3 or images_head.shape[1:] != (28, 28):
        raise DataError(f"{_WHERE}: expected uint8 images of shape (N, 28, 28) in {images_path}, "
                        f"got {images_head.dtype} of shape {images_head.shape}")
    if labels_head.dtype != torch.uint8 or len(labels_head.shape) != 1:
        raise DataError(f"{_WHERE}: expected uint8 labels of shape (N,) in {labels_path}, "
                        f"got {labels_head.dtype} of shape {labels_head.shape}")
    if images_head.shape[0] != labels_head.shape[0]:
        raise DataError(f"{_WHERE}: expected as many labels as images, got {images_head.shape[0]} images in "
                        f"{images_path} and {labels_head.shape[0]} labels in {labels_path}")
    images = read_idx(images_path, limit=limit)
    labels = read_idx(labels_path, limit=limit)
    if labels.numel() and int(labels.max()) > 9:
        bad = int((labels > 9).nonzero()[0, 0])
        raise DataError(f"{_WHERE}: expected labels in 0..9 in {labels_path}, got {int(labels[bad])} at index {bad}")
    return images, labels.long()
