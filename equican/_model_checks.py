"""Checks at the timm boundary: inputs of a wrapped model, weights loaded from a file, downloads offline.

timm checks little itself, and what it checks it checks with ``assert`` (an image of the wrong size) or a log line
(a weight file of another architecture loads "successfully" with every parameter left at its initialization).
These helpers turn each into a typed error from [`equican.errors`][equican.errors].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from . import validation as V
from .errors import DataError, DTypeError, EquicanError, ShapeError

__all__ = ["check_image_input", "require_matching_keys", "creating"]


def check_image_input(x: object, *, channels: int | None, patch_embed: nn.Module | None, dtype: torch.dtype | None,
                      where: str) -> None:
    """``x`` must be an image batch ``(B, channels, H, W)`` of ``dtype`` (floating; under ``torch.autocast`` the
    autocast dtype too), and of the patch embedding's
    ``img_size`` when the model was built for one size only (timm's ``strict_img_size`` without
    ``dynamic_img_size``).

    Raises:
        DTypeError, ShapeError, DeviceError: as [`equican.validation`][equican.validation] words them.
    """
    x = V.require_tensor(x, where=where, name="x")
    if x.ndim != 4:
        raise ShapeError(f"{where}: expected x of shape (B, C, H, W), got {V.fmt_shape(x.shape)}")
    if not x.is_floating_point() or (dtype is not None and x.dtype != dtype and not _autocast_takes(x)):
        hint = "" if dtype is None else " (or, under torch.autocast, of the autocast dtype)"
        raise DTypeError(f"{where}: expected x of the model's dtype {dtype or 'float'}{hint}, got {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{where}: expected x of shape (B, {channels}, H, W), got {V.fmt_shape(x.shape)}")
    size = getattr(patch_embed, "img_size", None)
    fixed = getattr(patch_embed, "strict_img_size", False) and not getattr(patch_embed, "dynamic_img_size", False)
    if fixed and isinstance(size, (tuple, list)) and tuple(x.shape[-2:]) != tuple(size):
        raise ShapeError(f"{where}: expected x of shape (B, {x.shape[1]}, {size[0]}, {size[1]}) (the model's "
                         f"img_size), got {V.fmt_shape(x.shape)}")


def _autocast_takes(x: torch.Tensor) -> bool:
    """Under ``torch.autocast`` on ``x``'s device, an input of the autocast dtype is the model's to take, as the bare
    timm model takes it (autocast casts it where each op needs)."""
    kind = x.device.type
    return V.autocast_enabled(x) and x.dtype == torch.get_autocast_dtype(kind)


def require_matching_keys(model: nn.Module, file_keys: Iterable[str], path: object, *, where: str) -> None:
    """Raise [`DataError`][equican.errors.DataError] unless at least half of ``model``'s state names are in the
    weight file: timm loads a file of another architecture without complaint when its filter drops every key."""
    wanted = list(model.state_dict())
    have = set(file_keys)
    matched = sum(key in have for key in wanted)
    if wanted and 2 * matched < len(wanted):
        missing = [k for k in wanted if k not in have][:3]
        unexpected = sorted(have - set(wanted))[:3]
        raise DataError(f"{where}: expected pretrained_file '{path}' to hold this model's weights (at least half of "
                        f"its {len(wanted)} names), got {matched} matching; missing e.g. {missing}, unexpected e.g. "
                        f"{unexpected}")


def creating(build: Callable[[], Any], *, offline_download: bool, where: str) -> Any:
    """``build()``; with ``offline_download`` (``pretrained=True`` and no file), a failed download is a
    [`DataError`][equican.errors.DataError] rather than huggingface_hub's own exception types."""
    try:
        return build()
    except EquicanError:
        raise
    except Exception as exc:
        if not offline_download:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{where}: expected pretrained weights to be downloadable (or pretrained_file=), got "
                        f"{type(exc).__name__}: {first[:200]}") from None
