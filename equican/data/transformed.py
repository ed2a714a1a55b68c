"""Transformed MNIST: digits moved by random elements of any registered group, for comparing groups on one task.

Each digit is padded (centred, zeros around it) to a ``canvas × canvas`` image and then transformed by
``group.act(g, ·)`` with ``g`` drawn by ``group.sample`` from [`index_generator`][equican.data.seeding.index_generator]
keyed by ``(seed, index)``: item ``i`` is the same however and whenever it is read. Padding *before* acting is what
keeps the
transform from cutting the digit: MNIST's ink lies within the central 20×20 pixels of its 28×28 images, so on the
default 56×56 canvas it stays inside under rotations by any angle and under the default strengths of the built-in
groups (tests/test_transformed.py checks the outer ring of the canvas stays empty for every registered group). A
stronger group needs a larger canvas.

The group is given by registry name (with its constructor arguments, e.g. the strength, in ``group_args``) or as a
[`Group`][equican.group.Group] instance; nothing here names a concrete group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..group import Group, make_group
from .. import validation as V
from .local_scale import check_digits, digit_to_float, require_index
from .mnist import load_mnist
from .seeding import index_generator

__all__ = ["TransformedConfig", "TransformedMNIST", "transformed_mnist"]


@dataclass(frozen=True)
class TransformedConfig:
    """Which group transforms the digits, and how they are laid out.

    Attributes:
        group: a registered group's name (built with ``make_group(group, **group_args)``) or a
            [`Group`][equican.group.Group] instance. After construction this field always holds the instance.
        group_args: constructor arguments for a group given by name, e.g. ``{"strength": 0.5}``; must be empty
            when ``group`` is an instance. Stored read-only.
        canvas: side in pixels of the square canvas the digit is centred on before it is transformed; at least the
            digits' size (checked by the dataset).
        seed: a non-negative int; the same seed gives the same transformed digits.

    Raises:
        ConfigError: an invalid field, or arguments the group's constructor rejects.
        UnknownNameError: an unregistered group name (the message lists the registered ones).
    """

    group: Group | str
    group_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    canvas: int = 56
    seed: int = 0

    def __post_init__(self) -> None:
        where = "TransformedConfig"
        if not isinstance(self.group_args, Mapping) or not all(isinstance(k, str) for k in self.group_args):
            raise ConfigError(f"{where}: expected group_args to be a mapping of argument names to values, "
                              f"got {self.group_args!r}")
        args = dict(self.group_args)
        if isinstance(self.group, Group):
            if args:
                raise ConfigError(f"{where}: expected no group_args with a Group instance (configure the instance "
                                  f"instead), got {args!r}")
        elif isinstance(self.group, str):
            object.__setattr__(self, "group", make_group(self.group, **args))
        else:
            raise ConfigError(f"{where}: expected group to be a registered name or an equican.Group, "
                              f"got {type(self.group).__name__}")
        object.__setattr__(self, "group_args", MappingProxyType(args))
        V.require_int(self.canvas, low=2, where=where, name="canvas")
        V.require_int(self.seed, low=0, where=where, name="seed")


class TransformedMNIST(Dataset):
    """MNIST digits, each centred on a canvas and transformed by its own random group element.

    Args:
        split: ``"train"`` or ``"test"``, passed to [`load_mnist`][equican.data.mnist.load_mnist].
        config: the group, canvas and seed.
        root: None for the bundled MNIST subset, or a directory of the user's MNIST IDX files.
        limit: read at most the first ``limit`` digits.

    Items are ``(image, label)``: ``image`` float32 of shape ``(1, canvas, canvas)``, ``label`` an int64 scalar
    in 0..9. Image values stay in ``[0, 1]`` for groups acting by bilinear resampling (all built-in ones).

    Raises:
        ConfigError: an invalid config, or a canvas smaller than the digits.
        DataError: missing or corrupt MNIST files (the message names the file).
    """

    def __init__(self, split: str = "train", *, config: TransformedConfig, root: str | os.PathLike[str] | None = None,
                 limit: int | None = None) -> None:
        images, labels = load_mnist(split, root, limit)
        self._setup(images, labels, config, where="TransformedMNIST")

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor, *, config: TransformedConfig) -> TransformedMNIST:
        """Transformed versions of the given digits.

        Args:
            images: ``(N, h, w)`` digits, uint8 in 0..255 or float in ``[0, 1]``.
            labels: ``(N,)`` integer labels in 0..9.
            config: as for the constructor.
        """
        self = cls.__new__(cls)
        self._setup(images, labels, config, where="TransformedMNIST.from_tensors")
        return self

    def _setup(self, images: torch.Tensor, labels: torch.Tensor, config: TransformedConfig, *, where: str) -> None:
        if not isinstance(config, TransformedConfig):
            raise ConfigError(f"{where}: expected config to be a TransformedConfig, got {type(config).__name__}")
        images, labels = check_digits(images, labels, where=where)
        if config.canvas < max(images.shape[1:]):
            raise ConfigError(f"{where}: expected canvas >= the digit size {max(images.shape[1:])}, "
                              f"got {config.canvas}")
        self.config = config
        self.group: Group = config.group  # type: ignore[assignment]  # resolved to an instance by the config
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def _index(self, index: object) -> int:
        return require_index(index, len(self), where=type(self).__name__)

    def element(self, index: int) -> torch.Tensor:
        """The group element of item ``index``, float32 of shape ``(1, *group.param_shape)``."""
        return self.group.sample(1, generator=index_generator(self.config.seed, self._index(index)),
                                 dtype=torch.float32)

    def untransformed(self, index: int) -> torch.Tensor:
        """Digit ``index`` centred on the canvas before the transform, float32 ``(1, canvas, canvas)``."""
        digit = digit_to_float(self.images[self._index(index)])
        h, w = digit.shape
        side = self.config.canvas
        top, left = (side - h) // 2, (side - w) // 2
        image = torch.zeros(1, side, side)
        image[0, top:top + h, left:left + w] = digit
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (1, canvas, canvas) float32, label int64 scalar)`` of item ``index``."""
        i = self._index(index)
        image = self.group.act(self.element(i), self.untransformed(i)[None])[0]
        return image, self.labels[i].clone()

    def tensors(self, indices: Sequence[int] | None = None, *,
                batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Items stacked, ``images (M, 1, canvas, canvas)`` and ``labels (M,)``; the group acts in batches.

        Args:
            indices: which items (all when None).
            batch_size: items per call of ``group.act``.
        """
        indices = [self._index(i) for i in (range(len(self)) if indices is None else indices)]
        V.require_int(batch_size, low=1, where=f"{type(self).__name__}.tensors", name="batch_size")
        side = self.config.canvas
        chunks = []
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            g = torch.cat([self.element(i) for i in chunk])
            x = torch.stack([self.untransformed(i) for i in chunk])
            chunks.append(self.group.act(g, x))
        images = torch.cat(chunks) if chunks else torch.zeros(0, 1, side, side)
        return images, self.labels[indices].clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)}, group={self.group!r}, canvas={self.config.canvas})"


def transformed_mnist(split: str = "train", *, config: TransformedConfig, root: str | os.PathLike[str] | None = None,
                      limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformed MNIST as tensors: ``images (N, 1, canvas, canvas)`` float32, ``labels (N,)`` int64.

    The same items as ``TransformedMNIST(split, config=config, root=root, limit=limit)``, stacked.
    """
    return TransformedMNIST(split, config=config, root=root, limit=limit).tensors()
