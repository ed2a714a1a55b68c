"""Locally Scaled MNIST: composites of several MNIST digits, each rescaled by its own factor.

Rahman et al. (ICCV 2025) evaluate local scale equivariance on images made of ``n`` consecutive MNIST digits (3 by
default), each rescaled independently by a factor drawn from ``U(0.4, 2.0)`` and centred in its own 70×70 cell, the
cells laid out horizontally, vertically or diagonally on a 210×210 canvas. The label is the digits read as one
base-10 number (1000 classes for 3 digits). Because every digit has its own scale, no single global scaling maps a
composite onto its all-scale-1 version: only a *local* scaling does.

Rendering (every size, range and count is a field of [`LocalScaleConfig`][equican.data.local_scale.LocalScaleConfig]):

* Digit ``t`` of composite ``i`` is source digit ``(i·stride + t) mod N`` of the ``N`` MNIST digits loaded, read in
  reading order (left to right, top to bottom, or top-left to bottom-right along the diagonal), so its label digit
  has place value ``10^(n-1-t)``.
* A digit of ``h × w`` pixels rescaled by ``s`` is resampled to ``round(h·s) × round(w·s)`` pixels (at least 1) by
  antialiased bilinear interpolation (``torch.nn.functional.interpolate(antialias=True)``: a triangle filter widened
  by ``1/s`` when shrinking, so thin strokes do not alias away), so the scale realized is quantized to steps of
  ``1/h``. It is centred in its ``cell × cell`` cell (at offset ``(cell - size) // 2``); a digit larger than the cell
  is cropped to the cell's central window (never with the defaults: ``28·2.0 = 56 < 70``).
* The ``n`` cells form a row (``"horizontal"``), a column (``"vertical"``) or a diagonal (``"diagonal"``) of
  ``n·cell`` pixels, centred on the square ``canvas × canvas`` canvas; a row or column is centred across as well.
  Each composite draws its layout uniformly from ``config.layouts``.

Randomness: composite ``i`` draws its layout and scales from [`index_generator`][equican.data.seeding.index_generator]
keyed by ``(seed, i, 0)``, and its ``j``-th extra rescaling (for the local-scale error,
[`LocalScaleMNIST.rescalings`][equican.data.local_scale.LocalScaleMNIST.rescalings]) from ``(seed, i, 1 + j)``. So
random access is reproducible, a fixed seed gives the same dataset, and the ``k`` rescalings of a composite are
independent draws. (The paper's code reseeds Python's global RNG on every item read, so its ``k`` rescalings of a
composite are all the same image; here they really differ.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import validation as V
from ..errors import ConfigError, DTypeError, ShapeError
from .mnist import load_mnist
from .seeding import index_generator

__all__ = ["LAYOUTS", "LocalScaleConfig", "LocalScaleMNIST", "LocalScalePairs", "local_scale_mnist"]

LAYOUTS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
"""The cell layouts, in the order [`LocalScaleConfig.layouts`][equican.data.local_scale.LocalScaleConfig] lists them by
default."""

# Streams of index_generator(seed, index, stream): the composite's own draws, then one per extra rescaling.
_OWN_STREAM = 0
_RESCALING_STREAM = 1

# A label of n base-10 digits must fit in int64 (10^18 < 2^63).
_MAX_DIGITS = 18


@dataclass(frozen=True)
class LocalScaleConfig:
    """How Locally Scaled MNIST composites are made (the paper's setting by default).

    Attributes:
        digits: ``n``, the digits per composite; the label has ``10^n`` classes (at most 18 digits, to fit int64).
        cell: side in pixels of each digit's square cell.
        canvas: side in pixels of the square canvas; at least ``digits · cell``.
        scale_range: ``(low, high)``, each digit's scale factor is drawn from ``U(low, high)``; ``0 < low <= high``.
        layouts: the layouts a composite draws from uniformly, a non-empty subset of
            [`LAYOUTS`][equican.data.local_scale.LAYOUTS].
        stride: source digits between the first digits of consecutive composites: 1 (the paper's) makes
            overlapping windows, one composite per source digit; ``digits`` makes disjoint ones.
        seed: a non-negative int; the same seed gives the same composites.

    Raises:
        ConfigError: on construction, for any invalid field.
    """

    digits: int = 3
    cell: int = 70
    canvas: int = 210
    scale_range: tuple[float, float] = (0.4, 2.0)
    layouts: tuple[str, ...] = LAYOUTS
    stride: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        where = "LocalScaleConfig"
        V.require_int(self.digits, low=1, where=where, name="digits")
        if self.digits > _MAX_DIGITS:
            raise ConfigError(f"{where}: expected digits <= {_MAX_DIGITS} (labels are int64), got {self.digits}")
        V.require_int(self.cell, low=1, where=where, name="cell")
        V.require_int(self.canvas, low=1, where=where, name="canvas")
        if self.canvas < self.digits * self.cell:
            raise ConfigError(f"{where}: expected canvas >= digits * cell = {self.digits * self.cell} so that every "
                              f"layout fits, got {self.canvas}")
        V.require_int(self.stride, low=1, where=where, name="stride")
        V.require_int(self.seed, low=0, where=where, name="seed")
        low_high = tuple(self.scale_range) if isinstance(self.scale_range, (tuple, list)) else None
        if (low_high is None or len(low_high) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in low_high)
                or not all(math.isfinite(v) for v in low_high) or not 0 < low_high[0] <= low_high[1]):
            raise ConfigError(f"{where}: expected scale_range (low, high) with finite 0 < low <= high, "
                              f"got {self.scale_range!r}")
        object.__setattr__(self, "scale_range", (float(low_high[0]), float(low_high[1])))
        layouts = (self.layouts,) if isinstance(self.layouts, str) else self.layouts
        if (not isinstance(layouts, (tuple, list)) or not layouts or len(set(layouts)) != len(layouts)
                or any(layout not in LAYOUTS for layout in layouts)):
            raise ConfigError(f"{where}: expected layouts to be a non-empty tuple of distinct names from "
                              f"{LAYOUTS}, got {self.layouts!r}")
        object.__setattr__(self, "layouts", tuple(layouts))

    @property
    def num_classes(self) -> int:
        """``10^digits``, the number of labels."""
        return 10 ** self.digits

    def cell_origins(self, layout: str) -> list[tuple[int, int]]:
        """The ``(top, left)`` pixel of each digit's cell in ``layout``, in reading order.

        Raises:
            ConfigError: ``layout`` is not one of [`LAYOUTS`][equican.data.local_scale.LAYOUTS].
        """
        if layout not in LAYOUTS:
            raise ConfigError(f"LocalScaleConfig.cell_origins: expected a layout from {LAYOUTS}, got {layout!r}")
        along = (self.canvas - self.digits * self.cell) // 2  # the run of n cells, centred
        across = (self.canvas - self.cell) // 2  # a single row or column, centred across
        steps = [along + t * self.cell for t in range(self.digits)]
        if layout == "horizontal":
            return [(across, step) for step in steps]
        if layout == "vertical":
            return [(step, across) for step in steps]
        return [(step, step) for step in steps]


def check_digits(images: object, labels: object, *, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate source digits: ``images (N, h, w)`` uint8 (0-255) or float in ``[0, 1]``, ``labels (N,)`` in 0..9.

    Returns:
        ``(images, labels)`` with ``labels`` as int64 (images unchanged: uint8 stays uint8 to keep memory low).

    Raises:
        DTypeError, ShapeError, ConfigError: on invalid tensors.
    """
    V.require_tensor(images, where=where, name="images")
    V.require_tensor(labels, where=where, name="labels")
    if images.ndim != 3 or images.shape[1] < 1 or images.shape[2] < 1:
        raise ShapeError(f"{where}: expected images of shape (N, h, w), got {V.fmt_shape(images.shape)}")
    if images.dtype != torch.uint8:
        V.require_float(images, where=where, name="images")
        V.require_finite(images, where=where, name="images")
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ConfigError(f"{where}: expected float images in [0, 1], got values in "
                              f"[{float(images.min()):.4g}, {float(images.max()):.4g}]")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ShapeError(f"{where}: expected labels of shape ({images.shape[0]},) to match the images, "
                         f"got {V.fmt_shape(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DTypeError(f"{where}: expected integer labels, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ConfigError(f"{where}: expected labels in 0..9, got values in [{int(labels.min())}, "
                          f"{int(labels.max())}]")
    return images, labels.long()


def digit_to_float(digit: torch.Tensor) -> torch.Tensor:
    """One source digit ``(h, w)`` as float32 in ``[0, 1]`` (uint8 digits are divided by 255)."""
    return digit.float() / 255 if digit.dtype == torch.uint8 else digit.float()


def require_index(index: object, length: int, *, where: str) -> int:
    """``index`` as an int in ``[0, length)``, accepting negative indices as sequences do.

    Raises:
        DTypeError: not an int.
        IndexError: out of range (the sequence protocol's error, so ``for item in dataset`` stops).
    """
    if isinstance(index, torch.Tensor) and index.ndim == 0 and not index.dtype.is_floating_point:
        index = int(index)
    if isinstance(index, bool) or not hasattr(index, "__index__"):
        raise DTypeError(f"{where}: expected an int index, got {type(index).__name__}")
    i = int(index.__index__())  # type: ignore[union-attr]
    if not -length <= i < length:
        raise IndexError(f"{where}: expected an index in [{-length}, {length}), got {i}")
    return i % length


def _rescale(digit: torch.Tensor, scale: float) -> torch.Tensor:
    """Resample ``digit (h, w)`` to ``round(h·scale) × round(w·scale)`` with antialiased bilinear interpolation."""
    h, w = digit.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return digit  # scale 1 (or within half a pixel of it): the digit itself, not a resampled copy
    return F.interpolate(digit[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]


def _centre_in(window: torch.Tensor, patch: torch.Tensor) -> None:
    """Write ``patch`` centred into ``window`` (in place), cropping its central part where it is larger."""
    (ph, pw), (wh, ww) = patch.shape, window.shape
    dy, dx = (wh - ph) // 2, (ww - pw) // 2  # negative when the patch is larger: crop instead of pad
    sy, sx = max(0, -dy), max(0, -dx)
    ty, tx = max(0, dy), max(0, dx)
    h, w = min(ph, wh), min(pw, ww)
    window[ty:ty + h, tx:tx + w] = patch[sy:sy + h, sx:sx + w]


class LocalScaleMNIST(Dataset):
    """Locally Scaled MNIST (see the module docstring for how composites are rendered and drawn).

    Args:
        split: ``"train"`` or ``"test"``, passed to [`load_mnist`][equican.data.mnist.load_mnist].
        root: None for the bundled MNIST subset, or a directory of the user's MNIST IDX files.
        limit: read at most the first ``limit`` source digits.
        config: sizes, ranges, layouts and seed (default: the paper's setting, seed 0).

    Items are ``(image, label)``: ``image`` float32 of shape ``(1, canvas, canvas)`` in ``[0, 1]``, ``label`` an
    int64 scalar tensor in ``[0, 10^digits)``. There are ``ceil(N / stride)`` composites for ``N`` source digits.

    Raises:
        ConfigError: an invalid ``config`` or fewer source digits than ``config.digits``.
        DataError: missing or corrupt MNIST files (the message names the file).
    """

    def __init__(self, split: str = "train", *, root: str | os.PathLike[str] | None = None, limit: int | None = None,
                 config: LocalScaleConfig | None = None) -> None:
        images, labels = load_mnist(split, root, limit)
        self._setup(images, labels, config, where="LocalScaleMNIST")

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor,
                     config: LocalScaleConfig | None = None) -> LocalScaleMNIST:
        """Composites of the given source digits instead of MNIST files.

        Args:
            images: ``(N, h, w)`` digits, uint8 in 0..255 or float in ``[0, 1]``.
            labels: ``(N,)`` integer labels in 0..9.
            config: as for the constructor.
        """
        self = cls.__new__(cls)
        self._setup(images, labels, config, where="LocalScaleMNIST.from_tensors")
        return self

    def _setup(self, images: torch.Tensor, labels: torch.Tensor, config: LocalScaleConfig | None, *,
               where: str) -> None:
        config = LocalScaleConfig() if config is None else config
        if not isinstance(config, LocalScaleConfig):
            raise ConfigError(f"{where}: expected config to be a LocalScaleConfig, got {type(config).__name__}")
        images, labels = check_digits(images, labels, where=where)
        if images.shape[0] < config.digits:
            raise ConfigError(f"{where}: expected at least {config.digits} source digits (config.digits), "
                              f"got {images.shape[0]}")
        self.config = config
        self.images, self.labels = images, labels

    # ------------------------------------------------------------------ what composite i is made of
    def __len__(self) -> int:
        return -(-self.images.shape[0] // self.config.stride)

    @property
    def num_classes(self) -> int:
        """``10^digits``, the number of labels."""
        return self.config.num_classes

    def _index(self, index: object) -> int:
        return require_index(index, len(self), where=type(self).__name__)

    def digit_indices(self, index: int) -> list[int]:
        """The source-digit indices of composite ``index``, in reading order (``(index·stride + t) mod N``)."""
        i = self._index(index)
        n = self.images.shape[0]
        return [(i * self.config.stride + t) % n for t in range(self.config.digits)]

    def label(self, index: int) -> int:
        """The label of composite ``index``: its digits' labels read as one base-10 number."""
        value = 0
        for source in self.digit_indices(index):
            value = 10 * value + int(self.labels[source])
        return value

    def _own_draws(self, i: int) -> tuple[str, torch.Tensor]:
        generator = index_generator(self.config.seed, i, _OWN_STREAM)
        choice = int(torch.randint(len(self.config.layouts), (1,), generator=generator))
        return self.config.layouts[choice], self._draw_scales(generator, 1)[0]

    def _draw_scales(self, generator: torch.Generator, count: int) -> torch.Tensor:
        low, high = self.config.scale_range
        u = torch.rand(count, self.config.digits, generator=generator, dtype=torch.float64)
        return low + (high - low) * u

    def layout(self, index: int) -> str:
        """The layout of composite ``index`` (fixed: its rescalings share it)."""
        return self._own_draws(self._index(index))[0]

    def scales(self, index: int) -> torch.Tensor:
        """The scale factors drawn for composite ``index``, float64 of shape ``(digits,)``."""
        return self._own_draws(self._index(index))[1]

    # ------------------------------------------------------------------ rendering
    def render(self, index: int, scales: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Composite ``index`` (its digits, its layout) with the given scale factors.

        Args:
            index: the composite.
            scales: ``digits`` positive finite factors, one per digit in reading order.

        Returns:
            float32 image of shape ``(1, canvas, canvas)`` in ``[0, 1]``.

        Raises:
            ShapeError: not ``digits`` factors. ConfigError: a factor that is not positive and finite.
        """
        i = self._index(index)
        return self._render(i, self._own_draws(i)[0], self._check_scales(scales))

    def _check_scales(self, scales: Sequence[float] | torch.Tensor) -> list[float]:
        where = f"{type(self).__name__}.render"
        values = scales.tolist() if isinstance(scales, torch.Tensor) else list(scales)
        if len(values) != self.config.digits or not all(isinstance(v, (int, float)) for v in values):
            raise ShapeError(f"{where}: expected {self.config.digits} scale factors (one per digit), got {scales!r}")
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ConfigError(f"{where}: expected positive finite scale factors, got {values}")
        return [float(v) for v in values]

    def _render(self, i: int, layout: str, scales: list[float]) -> torch.Tensor:
        cell, side = self.config.cell, self.config.canvas
        image = torch.zeros(side, side)
        for source, (top, left), s in zip(self.digit_indices(i), self.config.cell_origins(layout), scales):
            digit = _rescale(digit_to_float(self.images[source]), s)
            _centre_in(image[top:top + cell, left:left + cell], digit)
        return image[None]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (1, canvas, canvas) float32, label int64 scalar)`` of composite ``index``."""
        i = self._index(index)
        layout, scales = self._own_draws(i)
        return self._render(i, layout, scales.tolist()), torch.tensor(self.label(i), dtype=torch.int64)

    # ------------------------------------------------------------------ the local-scale error's inputs
    def reference(self, index: int) -> torch.Tensor:
        """Composite ``index`` with every digit at scale 1, shape ``(1, canvas, canvas)``."""
        return self.render(index, [1.0] * self.config.digits)

    def rescaling_scales(self, index: int, k: int) -> torch.Tensor:
        """The factors of the ``k`` extra rescalings of composite ``index``, float64 of shape ``(k, digits)``.

        Rescaling ``j`` is drawn from its own stream ``(seed, index, 1 + j)``: independent of the composite's own
        scales and of the other rescalings, and the same whatever ``k`` (the first 3 of ``k = 5`` are ``k = 3``).
        """
        i = self._index(index)
        V.require_int(k, low=1, where=f"{type(self).__name__}.rescaling_scales", name="k")
        return torch.stack([self._rescaling_scale(i, j) for j in range(k)])

    def _rescaling_scale(self, i: int, j: int) -> torch.Tensor:
        """The factors of rescaling ``j`` of composite ``i`` (both valid), ``(digits,)``, drawn from the stream
        ``(seed, i, 1 + j)``."""
        return self._draw_scales(index_generator(self.config.seed, i, _RESCALING_STREAM + j), 1)[0]

    def rescalings(self, index: int, k: int) -> torch.Tensor:
        """``k`` independent rescalings of composite ``index`` (its digits, its layout): ``(k, 1, canvas, canvas)``.

        Rescaling ``j`` uses the factors ``rescaling_scales(index, k)[j]``.
        """
        i = self._index(index)
        V.require_int(k, low=1, where=f"{type(self).__name__}.rescalings", name="k")
        return torch.stack([self.rescaling(i, j) for j in range(k)])

    def rescaling(self, index: int, j: int) -> torch.Tensor:
        """Rescaling ``j`` alone of composite ``index``, ``(1, canvas, canvas)``: the same image as
        ``rescalings(index, k)[j]`` for any ``k > j``, without rendering the others (a training pair's second view)."""
        i = self._index(index)
        V.require_int(j, low=0, where=f"{type(self).__name__}.rescaling", name="j")
        return self._render(i, self._own_draws(i)[0], self._rescaling_scale(i, j).tolist())

    def rescaled_batch(self, indices: torch.Tensor, j: int) -> torch.Tensor:
        """Rescaling ``j`` of each composite in ``indices (B,)``, stacked: ``(B, 1, canvas, canvas)`` (the second
        views of training on the data's own pairs, a new rescaling every epoch ``j``)."""
        return torch.stack([self.rescaling(int(i), j) for i in indices.tolist()])

    def rescaling_pairs(self, k: int) -> LocalScalePairs:
        """``(reference, rescalings, label)`` items ([`LocalScalePairs`][equican.data.local_scale.LocalScalePairs]) for
        the local-scale error.

        Their batches are the input of [`equican.metrics.local_scale_error`][equican.metrics.local_scale_error].
        """
        return LocalScalePairs(self, k)

    def tensors(self, indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Composites stacked: ``images (M, 1, canvas, canvas)`` float32 and ``labels (M,)`` int64.

        Args:
            indices: which composites (all when None).
        """
        indices = range(len(self)) if indices is None else indices
        items = [self[i] for i in indices]
        if not items:
            side = self.config.canvas
            return torch.zeros(0, 1, side, side), torch.zeros(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)}, config={self.config!r})"


class LocalScalePairs(Dataset):
    """Each composite at scale 1 beside ``k`` independent rescalings of it.

    Items are ``(reference, rescaled, label)``: ``reference (1, canvas, canvas)`` with every digit at scale 1,
    ``rescaled (k, 1, canvas, canvas)`` from
    [`LocalScaleMNIST.rescalings`][equican.data.local_scale.LocalScaleMNIST.rescalings], ``label`` an int64 scalar. A
    ``DataLoader`` over it yields ``(B, 1, H, W)``, ``(B, k, 1, H, W)``, ``(B,)`` batches, which
    [`equican.metrics.local_scale_error`][equican.metrics.local_scale_error] takes directly.

    Args:
        dataset: the composites.
        k: rescalings per composite, ``>= 1``.
    """

    def __init__(self, dataset: LocalScaleMNIST, k: int) -> None:
        if not isinstance(dataset, LocalScaleMNIST):
            raise ConfigError(f"LocalScalePairs: expected a LocalScaleMNIST, got {type(dataset).__name__}")
        self.dataset = dataset
        self.k = V.require_int(k, low=1, where="LocalScalePairs", name="k")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = self.dataset._index(index)
        return (self.dataset.reference(i), self.dataset.rescalings(i, self.k),
                torch.tensor(self.dataset.label(i), dtype=torch.int64))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All items stacked: ``(N, 1, H, W)``, ``(N, k, 1, H, W)``, ``(N,)``."""
        items = [self[i] for i in range(len(self))]
        return tuple(torch.stack(column) for column in zip(*items))  # type: ignore[return-value]


def local_scale_mnist(split: str = "train", *, root: str | os.PathLike[str] | None = None,
                      limit: int | None = None,
                      config: LocalScaleConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Locally Scaled MNIST as tensors: ``images (M, 1, canvas, canvas)`` float32 in ``[0, 1]``, ``labels (M,)``.

    The same composites as ``LocalScaleMNIST(split, root=root, limit=limit, config=config)``, stacked.

    Raises:
        ConfigError, DataError: as [`LocalScaleMNIST`][equican.data.local_scale.LocalScaleMNIST].
    """
    return LocalScaleMNIST(split, root=root, limit=limit, config=config).tensors()

