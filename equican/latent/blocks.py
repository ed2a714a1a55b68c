"""Finding a model's insertion points: its block (stage) list, their names and the feature layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["find_blocks", "LAYOUTS", "INPUTS"]

LAYOUTS = ("tokens", "NHWC", "NCHW")
"""The feature layouts [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] handles."""
INPUTS = ("latent", "image")
"""What a canonicalizer may read: the features at its insertion point, or the model's input image."""


def _module_list(container: Any, where: str, path: str) -> list[nn.Module]:
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        raise ConfigError(f"{where}: expected model.{path} to be an nn.Sequential or nn.ModuleList of blocks, "
                          f"got {type(container).__name__}")
    return list(container)


def _feature_base(model: nn.Module) -> nn.Module:
    """The model a timm feature extractor of the getter kind wraps (``timm.create_model(..., features_only=True)``
    of a ViT, DeiT, BEiT, EVA: a ``FeatureGetterNet``, an ``nn.ModuleDict`` holding the model as ``model.model`` and
    calling its ``forward_intermediates``); any other model as it is."""
    if isinstance(model, nn.ModuleDict) and list(model.keys()) == ["model"] \
            and hasattr(model["model"], "forward_intermediates"):
        return model["model"]
    return model


def _patch_embed(model: nn.Module) -> nn.Module | None:
    """The module whose ``grid_size`` is the token grid: ``model.patch_embed`` (ViT family) or ``model.stem``
    (MLP-Mixer, ResMLP, gMLP); looked for in the wrapped model of a timm feature extractor."""
    model = _feature_base(model)
    for name in ("patch_embed", "stem"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "grid_size"):
            return module
    return None


def _num_prefix_tokens(model: nn.Module) -> int | None:
    """``model.num_prefix_tokens`` (0 for models without the attribute), or None when it is not a count."""
    model = _feature_base(model)
    value = getattr(model, "num_prefix_tokens", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _has_token_grid(model: nn.Module) -> bool:
    return _patch_embed(model) is not None and _num_prefix_tokens(model) is not None


def _stage_layout(model: nn.Module, where: str) -> str:
    fmt = getattr(model, "output_fmt", "NCHW")
    fmt = getattr(fmt, "value", fmt)  # timm's Format enum or a plain string
    if fmt not in ("NCHW", "NHWC"):
        raise ConfigError(f"{where}: unsupported layout {fmt!r} (model.output_fmt) of {type(model).__name__}'s "
                          f"stages; supported layouts: {', '.join(LAYOUTS)}")
    return fmt


def find_blocks(model: nn.Module, blocks: str | None = None,
                layout: str | None = None) -> tuple[list[str], list[nn.Module], str]:
    """The insertion points of ``model``: their names, the block modules and the feature layout.

    Without ``blocks``, looked for in this order: ``model.blocks`` with ``model.patch_embed.grid_size`` or
    ``model.stem.grid_size`` (tokens; ``model.num_prefix_tokens`` prefix tokens, 0 if absent); ``model.layers`` and
    ``model.stages`` (NHWC when ``model.output_fmt == "NHWC"``, else NCHW); ``model.layer1, layer2, ...`` (NCHW).

    Args:
        model: the network.
        blocks: attribute path of an ``nn.Sequential``/``nn.ModuleList`` of blocks (e.g. ``"blocks"``), or None.
        layout: one of [`LAYOUTS`][equican.latent.blocks.LAYOUTS] to override the detected layout, or None.

    Returns:
        ``(names, modules, layout)``: ``names[k]`` is the module path of insertion point ``k``.

    Raises:
        ConfigError: no blocks found (the message names the attributes looked for), or an unsupported layout.
    """
    base = _feature_base(model)
    if base is not model:
        names, modules, layout = find_blocks(base, blocks, layout)
        return [f"model.{name}" for name in names], modules, layout
    where = f"LatentCanonicalized({type(model).__name__})"
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"{where}: unsupported layout {layout!r}; expected one of {LAYOUTS}")
    if blocks is not None:
        if not isinstance(blocks, str) or not blocks:
            raise ConfigError(f"{where}: expected blocks to be an attribute path such as 'blocks', got {blocks!r}")
        try:
            container = model.get_submodule(blocks)
        except AttributeError:
            raise ConfigError(f"{where}: the model has no attribute {blocks!r} (blocks=)") from None
        modules = _module_list(container, where, blocks)
        if layout is None:
            layout = "tokens" if blocks == "blocks" and _has_token_grid(model) else _stage_layout(model, where)
        if layout == "tokens" and not _has_token_grid(model):
            raise ConfigError(f"{where}: unsupported layout: 'tokens' needs the token grid, "
                              f"model.patch_embed.grid_size or model.stem.grid_size")
        return [f"{blocks}.{i}" for i in range(len(modules))], modules, layout

    if isinstance(getattr(model, "blocks", None), nn.Module) and _has_token_grid(model):
        modules = _module_list(model.blocks, where, "blocks")
        return [f"blocks.{i}" for i in range(len(modules))], modules, layout or "tokens"
    for name in ("layers", "stages"):
        if isinstance(getattr(model, name, None), (nn.Sequential, nn.ModuleList)):
            modules = list(getattr(model, name))
            return [f"{name}.{i}" for i in range(len(modules))], modules, layout or _stage_layout(model, where)
    if isinstance(model, nn.ModuleDict):  # a timm FeatureListNet/FeatureDictNet: stages flattened to name_<k>
        for name in ("layers", "stages"):
            names = []
            while f"{name}_{len(names)}" in model:
                names.append(f"{name}_{len(names)}")
            if names:
                return names, [model[n] for n in names], layout or _stage_layout(model, where)
    if isinstance(getattr(model, "layer1", None), nn.Module):
        names = []
        while isinstance(getattr(model, f"layer{len(names) + 1}", None), nn.Module):
            names.append(f"layer{len(names) + 1}")
        return names, [getattr(model, n) for n in names], layout or "NCHW"
    if isinstance(getattr(model, "blocks", None), nn.Module):
        raise ConfigError(f"{where}: unsupported layout: model.blocks exists, but without a token grid "
                          f"(model.patch_embed.grid_size or model.stem.grid_size) its features cannot be read as "
                          f"a patch grid; name the "
                          f"layout explicitly (blocks='blocks', layout='NCHW' or 'NHWC') if its blocks are stages")
    raise ConfigError(f"{where}: found no blocks; looked for model.blocks (with model.patch_embed.grid_size or "
                      f"model.stem.grid_size), model.layers, model.stages and model.layer1, layer2, ...; "
                      f"pass blocks='<attribute>' and layout= for another model")


def _insertion_points(at: Any, count: int, names: Sequence[str], where: str) -> tuple[int, ...]:
    if count == 0:
        raise ConfigError(f"{where}: the model's block list is empty: there is no insertion point")
    valid = f"0..{count - 1} ({', '.join(names[:3])}{', ...' if count > 3 else ''})"
    if isinstance(at, int) and not isinstance(at, bool):
        at = (at,)
    if isinstance(at, (str, bytes)) or not isinstance(at, Sequence) or len(at) == 0:
        raise ConfigError(f"{where}: expected at to be a block index or a non-empty sequence of them in {valid}, "
                          f"got {at!r}")
    seen: set[int] = set()
    for k in at:
        if isinstance(k, bool) or not isinstance(k, int):
            raise ConfigError(f"{where}: expected insertion points to be ints in {valid}, got {k!r}")
        if not 0 <= k < count:
            raise ConfigError(f"{where}: insertion point {k} is out of range: the model has {count} blocks; "
                              f"expected an index in {valid}, got {k}")
        if k in seen:
            raise ConfigError(f"{where}: insertion point {k} is given twice in at={tuple(at)!r}")
        seen.add(k)
    return tuple(at)


def _per_point(value: Any, n: int, where: str, name: str, check: Any, expected: str) -> tuple[Any, ...]:
    """``value`` for every insertion point: one value for all, or a sequence of ``n`` values."""
    if isinstance(value, nn.ModuleList):
        value = list(value)
    if isinstance(value, (str, bool)) or not isinstance(value, Sequence):
        values: tuple[Any, ...] = (value,) * n
    else:
        values = tuple(value)
        if len(values) != n:
            raise ConfigError(f"{where}: expected {name} to be one value or one per insertion point ({n}), "
                              f"got {len(values)}")
    for v in values:
        if not check(v):
            raise ConfigError(f"{where}: expected {name} to be {expected}, got {v!r}")
    return values
