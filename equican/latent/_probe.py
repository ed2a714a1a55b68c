"""The dry forward pass that measures what each insertion point reads, and the input image's channels and size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import validation as V
from ..errors import ConfigError
from ..modes import evaluating
from .blocks import _patch_embed

class _StopProbe(Exception):
    """Raised inside the dry forward pass once every needed block input has been seen."""


def _image_channels(model: nn.Module) -> int | None:
    for key in ("in_chans", "in_channels"):
        value = getattr(model, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    cfg = getattr(model, "pretrained_cfg", None) or {}
    stems = cfg.get("first_conv") if isinstance(cfg, Mapping) else None
    for stem in (stems,) if isinstance(stems, str) else (stems or ()):
        try:
            channels = getattr(model.get_submodule(stem), "in_channels", None)
        except AttributeError:
            continue
        if isinstance(channels, int):
            return channels
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


def _probe_size(model: nn.Module) -> tuple[int, int]:
    img_size = getattr(_patch_embed(model), "img_size", None)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        return int(img_size[0]), int(img_size[1])
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, Mapping) else None
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[1]), int(size[2])
    side = max(64, int(getattr(model, "min_size", 0) or 0))
    return side, side


def _first_tensor(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    value = args[0] if args else kwargs.get("x")
    return value if isinstance(value, torch.Tensor) else None


def _probe_shapes(model: nn.Module, modules: Sequence[nn.Module], points: Sequence[int],
                  example: torch.Tensor, where: str) -> dict[int, tuple[int, ...]]:
    """The input shape of each block in ``points``, from one dry forward pass of ``example``."""
    shapes: dict[int, tuple[int, ...]] = {}

    def capture(k: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = _first_tensor(args, kwargs)
            if x is not None:
                shapes.setdefault(k, tuple(x.shape))
            if len(shapes) == len(points):
                raise _StopProbe
        return hook

    handles = [modules[k].register_forward_pre_hook(capture(k), with_kwargs=True) for k in points]
    try:
        with evaluating(model), torch.no_grad():
            model(example)
    except _StopProbe:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [k for k in points if k not in shapes]
    if missing:
        raise ConfigError(f"{where}: a forward pass of a {V.fmt_shape(example.shape)} input never called the "
                          f"block(s) at insertion point(s) {missing}")
    return shapes
