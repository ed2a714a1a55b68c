"""Latent canonicalization: canonicalize -> block -> uncanonicalize around chosen blocks of a timm model.

The paper's key move (Rahman et al., ICCV 2025) is to canonicalize intermediate feature maps, not only the input.
[`LatentCanonicalized`][equican.latent.LatentCanonicalized] does it for any timm model without copying any
architecture's forward pass: it registers a forward pre-hook and a forward hook on each chosen block (stage), and at
insertion point ``k`` the features go

```text
features f → canonical features act(h_k, f) → block k → act(g_k, ·)
```

with ``h_k = g_k⁻¹`` the canonicalizing element; the last step
([`uncanonicalize`][equican.canon.Canonicalizer.uncanonicalize]) is switchable per point.

The element goes from the pre-hook to the post-hook of the same block call through a per-call record that is
created when the call starts and dropped when it ends: nothing is kept between calls. Because only hooks are added,
the timm model's parameter names do not change: a bare timm ``state_dict`` loads into ``wrapper.model``, and the
wrapper's own ``state_dict`` is the model's under ``model.`` plus the canonicalizers' under ``canonicalizers.<k>.``.

For example:

```python
import equican
model = equican.create_model("vit_small_patch16_224", group="monotone", canonicalizer="deq", at=(0, 1))
logits = model(images)                       # (B, 1000), timm's contract
logits, results = model.forward_canon(images)  # and the CanonResult of every insertion point
```

Layouts (found from the model; the groups only ever see ``(B, C, H, W)`` images):

* **tokens** (ViT, DeiT, BEiT, EVA, CaiT, MLP-Mixer and other models with ``model.blocks`` and a token grid,
  ``model.patch_embed.grid_size`` or ``model.stem.grid_size``): block inputs ``(B, P + H·W, C)``. The
  ``P = model.num_prefix_tokens`` prefix tokens (class, distillation, register tokens; 0 where the attribute is
  absent, or where the tokens fill the grid exactly, as in CaiT, which appends its class token after the blocks) pass
  through unchanged; the patch tokens are reshaped row-major to ``(B, C, H, W)`` on the patch grid and back. The grid
  is ``grid_size`` (any ``H ≠ W``), or, for a model built with ``dynamic_img_size=True``, the patch embedding's
  ``dynamic_feat_size`` of the input's size.
* **NHWC** stage features (Swin: ``model.layers[i]``, any model with ``model.output_fmt == "NHWC"``): stage inputs
  and outputs ``(B, H, W, C)``, permuted to ``(B, C, H, W)`` and back. A Swin stage starts with its patch merging,
  so its output is on a coarser grid than its input; the group acts in normalized coordinates ``[-1, 1]²``, so one
  element means the same transformation at both resolutions.
* **NCHW** stage features (ResNet ``layer1 … layer4``, ConvNeXt ``model.stages[i]``, any ``model.stages`` or
  ``model.layers`` without ``output_fmt == "NHWC"``): used as they are.

Insertion points are indices into that list, as timm numbers them: ``model.blocks[k]``, ``model.layers[k]``,
``model.stages[k]``, or ``layer{k+1}`` for ResNets (index 0 is ``layer1``). Other layouts can be named explicitly
(``blocks="blocks", layout="NCHW"`` for EfficientNet's stages, for example).

How channel counts are found: the learned canonicalizers need the channels of what they read. For
``canonicalizer_input="image"`` that is the image's channels (``in_channels``, else ``model.in_chans`` /
``in_channels``, else the stem named by timm's ``pretrained_cfg["first_conv"]``, else the first ``Conv2d``). For
``"latent"`` it is measured by one dry forward pass of a zero image (batch 1, ``torch.no_grad``, every submodule in
evaluation mode and restored afterwards, stopped as soon as the last insertion point's input has been seen). Its
size is ``example_input``'s if given, else the patch embedding's ``img_size``, else timm's
``pretrained_cfg["input_size"]``, else 64×64. This works for every layout alike, which reading per-family attributes
(``embed_dim``, ``feature_info``, ...) would not.

Pretrained weights, offline: ``create_model(name, pretrained_file="weights.safetensors", ...)`` loads a local file
through the same adaptation as [`equican.models.build_model`][equican.models.build_model]
(``options={"pretrained_file": ...}``: timm's ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)``, plus
the file's own class and channel counts), before the hooks are added. Or load a bare timm ``state_dict`` afterwards:
``wrapper.model.load_state_dict(sd)``. Nothing is downloaded unless ``pretrained=True`` is passed without a file (as
with ``timm.create_model``).

Limitations:

* Models whose blocks are none of the above (EfficientNet/MobileNet ``blocks`` without a token grid, NaFlexViT's
  variable token sets, models whose stages live under other names) raise [`ConfigError`][equican.errors.ConfigError]
  unless ``blocks=`` and ``layout=`` describe them. Only the listed containers are insertion points: CaiT's
  class-attention blocks (``blocks_token_only``) are not.
* Token models with patch dropout active in training (``patch_drop_rate > 0``) have no patch grid in their blocks
  and raise [`ShapeError`][equican.errors.ShapeError] there.
* ``canonicalizer_input="image"`` needs the input image: call the wrapper (``forward``, ``forward_features``,
  ``forward_canon``) or ``wrapper.model(x)``; calling ``wrapper.model.forward_features`` directly raises
  [`ConfigError`][equican.errors.ConfigError], and so does gradient checkpointing (``set_grad_checkpointing``), which
  recomputes blocks in the backward pass when the image is gone. (Latent input works with checkpointing.)
* Block features must have the canonicalizer's dtype (no reduced-precision autocast of stage features).
* A model is wrapped once: wrapping a wrapped model (or a deepcopy of one, which carries the hooks along) raises.
* A group that changes a feature map's shape (rotations by ±90° of a non-square grid) cannot map it back; the
  group's ``act`` raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import validation as V
from .canon import (CanonResult, Canonicalizer, DEQCanonicalizer, DEQConfig, DirectCanonicalizer,
                    IdentityCanonicalizer, UpdateNet)
from .errors import ConfigError, ShapeError
from .group import Group, make_group

__all__ = ["LatentCanonicalized", "create_model", "make_canonicalizer", "find_blocks", "CANONICALIZER_KINDS",
           "LAYOUTS", "INPUTS", "REDUCE_CHANNELS"]

CANONICALIZER_KINDS = ("identity", "direct", "deq", "escnn")
"""The canonicalizer kinds [`make_canonicalizer`][equican.latent.make_canonicalizer] builds by name."""
LAYOUTS = ("tokens", "NHWC", "NCHW")
"""The feature layouts [`LatentCanonicalized`][equican.latent.LatentCanonicalized] handles."""
INPUTS = ("latent", "image")
"""What a canonicalizer may read: the features at its insertion point, or the model's input image."""

# The keyword arguments each kind accepts in canonicalizer_options.
_UPDATE_OPTIONS = ("channels", "pool", "activation", "out_scale", "reduce")
REDUCE_CHANNELS = 32
"""Inputs wider than this are reduced to this many channels by a 1×1 convolution before the solve (the ``reduce``
option of the ``direct``/``deq`` kinds; see [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]). Each
solver iteration then warps 32 channels instead of, say, a ViT-S's 384: measured on vit_small_patch16_224 with the DEC
at blocks 0 and 1, it is what brings the overhead near the issue's 1.25 (see benchmarks/latent_overhead.py)."""
_KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "direct": _UPDATE_OPTIONS,
    "deq": (*_UPDATE_OPTIONS, "config"),
    "escnn": ("channels", "kernel_size"),
}


# ---------------------------------------------------------------------------------------------- canonicalizers
def make_canonicalizer(kind: str, group: Group, in_channels: int | None,
                       options: Mapping[str, Any] | None = None) -> Canonicalizer:
    """Build a canonicalizer of ``kind`` for ``group`` reading ``in_channels``-channel images.

    * ``"identity"``: [`IdentityCanonicalizer`][equican.canon.IdentityCanonicalizer] (no options; ``in_channels``
      unused).
    * ``"direct"`` / ``"deq"``: [`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer] /
      [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer] on
      ``UpdateNet(in_channels, group.unconstrained_shape, channels=..., pool=..., activation=..., out_scale=...)``;
      ``"deq"`` also takes ``config`` (a [`DEQConfig`][equican.canon.deq.DEQConfig]). ``reduce``: the channels a
      bias-free 1×1 convolution reduces the input to once, before the solve (default
      [`REDUCE_CHANNELS`][equican.latent.REDUCE_CHANNELS] for inputs wider than that, else none; None turns it off).
    * ``"escnn"``: [`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer] (``channels``,
      ``kernel_size``); needs escnn and a discrete rotation group.

    Args:
        kind: one of [`CANONICALIZER_KINDS`][equican.latent.CANONICALIZER_KINDS].
        group: the group whose elements are predicted.
        in_channels: channels of the images the canonicalizer reads (None only for ``"identity"``).
        options: the kind's keyword arguments (see above); None for none.

    Raises:
        ConfigError: an unknown kind or option, or an invalid value.
    """
    where = f"make_canonicalizer({kind!r})"
    if kind not in _KIND_OPTIONS:
        raise ConfigError(f"make_canonicalizer: expected kind in {CANONICALIZER_KINDS} or a Canonicalizer module, "
                          f"got {kind!r}")
    options = dict(options or {})
    unknown = [k for k in options if k not in _KIND_OPTIONS[kind]]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; accepted options: "
                          f"{', '.join(_KIND_OPTIONS[kind]) or 'none'}")
    if kind == "identity":
        return IdentityCanonicalizer(group)
    if in_channels is None:
        raise ConfigError(f"{where}: expected in_channels, got None")
    V.require_int(in_channels, low=1, where=where, name="in_channels")
    if kind == "escnn":
        try:
            from .canon.equivariant import EquivariantCanonicalizer  # escnn is optional: import it only when asked
        except ImportError as exc:
            raise ConfigError(f"{where}: needs the optional escnn package (pip install 'equican[escnn]'); importing "
                              f"it failed: {exc}") from None
        return EquivariantCanonicalizer(group, in_channels, **options)
    config = options.pop("config", None)
    width = options.pop("reduce", REDUCE_CHANNELS if in_channels > REDUCE_CHANNELS else None)
    reduce = None
    if width is not None:
        V.require_int(width, low=1, where=where, name="reduce")
        reduce = nn.Conv2d(in_channels, width, 1, bias=False)  # linear and pointwise: commutes with any warp
    net = UpdateNet(width or in_channels, group.unconstrained_shape, **options)
    if kind == "direct":
        return DirectCanonicalizer(group, net, reduce)
    return DEQCanonicalizer(group, net, config if config is not None else DEQConfig(), reduce)


# ---------------------------------------------------------------------------------------------- finding blocks
def _module_list(container: Any, where: str, path: str) -> list[nn.Module]:
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        raise ConfigError(f"{where}: expected model.{path} to be an nn.Sequential or nn.ModuleList of blocks, "
                          f"got {type(container).__name__}")
    return list(container)


def _patch_embed(model: nn.Module) -> nn.Module | None:
    """The module whose ``grid_size`` is the token grid: ``model.patch_embed`` (ViT family) or ``model.stem``
    (MLP-Mixer, ResMLP, gMLP)."""
    for name in ("patch_embed", "stem"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "grid_size"):
            return module
    return None


def _num_prefix_tokens(model: nn.Module) -> int | None:
    """``model.num_prefix_tokens`` (0 for models without the attribute), or None when it is not a count."""
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
        layout: one of [`LAYOUTS`][equican.latent.LAYOUTS] to override the detected layout, or None.

    Returns:
        ``(names, modules, layout)``: ``names[k]`` is the module path of insertion point ``k``.

    Raises:
        ConfigError: no blocks found (the message names the attributes looked for), or an unsupported layout.
    """
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


# ---------------------------------------------------------------------------------------------- the probe
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
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no BatchNorm statistics update, no dropout
    try:
        with torch.no_grad():
            model(example)
    except _StopProbe:
        pass
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    missing = [k for k in points if k not in shapes]
    if missing:
        raise ConfigError(f"{where}: a forward pass of a {V.fmt_shape(example.shape)} input never called the "
                          f"block(s) at insertion point(s) {missing}")
    return shapes


# ---------------------------------------------------------------------------------------------- per-call record
@dataclass
class _Call:
    """What one forward call carries from hook to hook; dropped when the call ends."""

    owner: object
    image: torch.Tensor | None = None
    pending: dict[int, tuple[CanonResult, Any]] = field(default_factory=dict)
    results: dict[int, CanonResult] = field(default_factory=dict)
    # Set by forward_canonicalization: the elements k (B, *param_shape) and the loss settings; each point then
    # records its canonicalization terms.
    canon_k: torch.Tensor | None = None
    canon_loss: Any = None
    terms: dict[int, Any] = field(default_factory=dict)


class _Hook:
    """A hook of the wrapper (a plain object, so that ``copy.deepcopy`` of the model copies its wrapper with it)."""

    def __init__(self, owner: LatentCanonicalized, kind: str, index: int = -1) -> None:
        self.owner, self.kind, self.index = owner, kind, index

    def __call__(self, module: nn.Module, *rest: Any) -> Any:
        return getattr(self.owner, f"_{self.kind}")(self.index, *rest)


# ---------------------------------------------------------------------------------------------- the wrapper
class LatentCanonicalized(nn.Module):
    """A timm model whose chosen blocks run on canonicalized features (see the module docstring).

    Args:
        model: the network to wrap (a timm model, or any model whose blocks [`find_blocks`][equican.latent.find_blocks]
            finds).
        at: insertion points: block (stage) indices as timm numbers them, distinct, in range.
        canonicalizer: a kind from [`CANONICALIZER_KINDS`][equican.latent.CANONICALIZER_KINDS] (``"deq"`` by default), a
            ready-made [`Canonicalizer`][equican.canon.Canonicalizer], or a sequence of these with one entry per
            insertion point.
        group: a registered group name or a [`Group`][equican.group.Group] (for the kinds built by name).
        canonicalizer_input: ``"latent"`` (the features at the insertion point) or ``"image"`` (the model's input;
            its element is applied to the features at the insertion point), for all points or one per point.
        uncanonicalize: map the block's output back by ``g_k`` (True), or leave it in the canonical frame (False);
            one value or one per point.
        group_options: keyword arguments of [`make_group`][equican.group.make_group] when ``group`` is a name.
        canonicalizer_options: keyword arguments of the kinds built by name (see
            [`make_canonicalizer`][equican.latent.make_canonicalizer]); not passed to ``"identity"``, which takes none.
        blocks: attribute path of the blocks, to override the search of [`find_blocks`][equican.latent.find_blocks].
        layout: ``"tokens"``, ``"NHWC"`` or ``"NCHW"``, to override the detected layout.
        in_channels: the input image's channels (found from the model when None).
        example_input: an input for the dry forward pass that measures feature channels (a zero image of the size
            the model states when None).

    Shapes:
        ``x: (B, C, H, W)`` -> whatever ``model`` returns (logits ``(B, num_classes)`` for a classifier).

    Raises:
        ConfigError: no blocks found, an unsupported layout, invalid insertion points, an unknown kind or option.
    """

    def __init__(self, model: nn.Module, *, at: int | Sequence[int] = (0,),
                 canonicalizer: str | Canonicalizer | Sequence[str | Canonicalizer] = "deq",
                 group: str | Group = "monotone", canonicalizer_input: str | Sequence[str] = "latent",
                 uncanonicalize: bool | Sequence[bool] = True, group_options: Mapping[str, Any] | None = None,
                 canonicalizer_options: Mapping[str, Any] | None = None, blocks: str | None = None,
                 layout: str | None = None, in_channels: int | None = None,
                 example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        where = "LatentCanonicalized"
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{where}: expected model to be a torch.nn.Module, got {type(model).__name__}")
        names, modules, layout = find_blocks(model, blocks, layout)
        where = f"LatentCanonicalized({type(model).__name__})"
        if any(isinstance(hook, _Hook) for m in model.modules()
               for hook in (*m._forward_pre_hooks.values(), *m._forward_hooks.values())):
            # Two sets of hooks would both canonicalize. A deepcopy of a wrapped model carries (a copy of) its
            # wrapper's hooks along, so this also catches wrapping such a copy.
            raise ConfigError(f"{where}: the model already carries LatentCanonicalized hooks (it is wrapped, or a "
                              f"copy of a wrapped model); wrap a fresh model, or call unwrap() on its wrapper first")
        at = _insertion_points(at, len(modules), names, where)
        n = len(at)
        inputs = _per_point(canonicalizer_input, n, where, "canonicalizer_input",
                            lambda v: isinstance(v, str) and v in INPUTS, f"one of {INPUTS}")
        unc = _per_point(uncanonicalize, n, where, "uncanonicalize", lambda v: isinstance(v, bool), "a bool")
        kinds = _per_point(canonicalizer, n, where, "canonicalizer",
                           lambda v: isinstance(v, Canonicalizer) or (isinstance(v, str) and v in _KIND_OPTIONS),
                           f"one of {CANONICALIZER_KINDS} or an equican Canonicalizer")
        if isinstance(canonicalizer, Canonicalizer) and n > 1:
            raise ConfigError(f"{where}: one Canonicalizer module was given for {n} insertion points; give one per "
                              f"point (a sequence), or a kind name")

        built = [k for k in kinds if isinstance(k, str)]
        if isinstance(group, Group):
            if group_options:
                raise ConfigError(f"{where}: group_options apply to a group given by name, got a Group instance")
        elif built:
            if not isinstance(group, str):
                raise ConfigError(f"{where}: expected group to be a registered name or an equican.Group, "
                                  f"got {type(group).__name__}")
            group = make_group(group, **dict(group_options or {}))
        image_channels = in_channels
        if any(isinstance(k, str) and k != "identity" and i == "image" for k, i in zip(kinds, inputs)):
            image_channels = in_channels if in_channels is not None else _image_channels(model)
            if image_channels is None:
                raise ConfigError(f"{where}: could not find the input image's channels; pass in_channels=")
        latent_points = [k for k, kind, i in zip(at, kinds, inputs) if isinstance(kind, str) and kind != "identity"
                         and i == "latent"]
        channels: dict[int, int] = {}
        if latent_points:
            if example_input is None:
                chans = image_channels if image_channels is not None else _image_channels(model)
                if chans is None:
                    raise ConfigError(f"{where}: could not find the input image's channels for the dry forward "
                                      f"pass; pass in_channels= or example_input=")
                p = next(model.parameters(), None)
                example_input = torch.zeros(1, chans, *_probe_size(model),
                                            dtype=p.dtype if p is not None else None,
                                            device=p.device if p is not None else None)
            shapes = _probe_shapes(model, modules, latent_points, example_input, where)
            for k, shape in shapes.items():
                if len(shape) != (3 if layout == "tokens" else 4):
                    raise ConfigError(f"{where}: unsupported layout: {names[k]} takes inputs of shape "
                                      f"{V.fmt_shape(shape)}, which is not the {layout} layout")
                channels[k] = shape[1] if layout == "NCHW" else shape[-1]

        canons: dict[str, Canonicalizer] = {}
        for k, kind, i in zip(at, kinds, inputs):
            if isinstance(kind, Canonicalizer):
                canons[str(k)] = kind
            else:
                chans = image_channels if i == "image" else channels.get(k)
                # The identity takes no options: a shared canonicalizer_options is meant for the learned kinds.
                options = None if kind == "identity" else canonicalizer_options
                canons[str(k)] = make_canonicalizer(kind, group, chans, options)  # type: ignore[arg-type]

        self.model = model
        self.canonicalizers = nn.ModuleDict(canons)
        self.at, self.layout, self.block_names = at, layout, tuple(names[k] for k in at)
        self.canonicalizer_input = dict(zip(at, inputs))
        self.uncanonicalize = dict(zip(at, unc))
        self._active: _Call | None = None
        self._handles = [model.register_forward_pre_hook(_Hook(self, "model_start"), with_kwargs=True),
                         model.register_forward_hook(_Hook(self, "model_end"), always_call=True)]
        for k in at:
            self._handles.append(modules[k].register_forward_pre_hook(_Hook(self, "block_start", k), with_kwargs=True))
            self._handles.append(modules[k].register_forward_hook(_Hook(self, "block_end", k), always_call=True))

    # ------------------------------------------------------------------ timm's contract
    def forward(self, x: torch.Tensor) -> Any:
        """``model(x)`` with the chosen blocks canonicalized; logits ``(B, num_classes)`` for a classifier."""
        return self.model(x)

    def forward_canon(self, x: torch.Tensor) -> tuple[Any, dict[int, CanonResult]]:
        """``model(x)`` and the [`CanonResult`][equican.canon.CanonResult] of every insertion point (keyed by index).

        Each result's ``x`` is the canonical features ``(B, C, H, W)``, ``g``/``h`` the element and its inverse.
        """
        with self._calling(x) as call:
            out = self.model(x)
            return out, dict(call.results)

    def forward_features(self, x: torch.Tensor) -> Any:
        """``model.forward_features(x)`` with the chosen blocks canonicalized, for images ``x: (B, C, H, W)``.

        The result is the timm model's unpooled features, e.g. tokens ``(B, P + H·W, C')`` for a ViT or a feature
        map ``(B, C', H', W')`` for a ResNet.
        """
        with self._calling(x):
            return self.model.forward_features(x)

    def forward_head(self, x: Any, pre_logits: bool = False) -> Any:
        """``model.forward_head``, unchanged (no insertion point is in a head)."""
        return self.model.forward_head(x, pre_logits=pre_logits)

    @property
    def num_classes(self) -> int:
        """The wrapped model's ``num_classes`` (timm's attribute), so the wrapper reads like the timm model."""
        return self.model.num_classes

    def __getattr__(self, name: str) -> Any:
        # Parameters, buffers and submodules first (nn.Module's own lookup), then the wrapped model's attributes
        # (pretrained_cfg, get_classifier, reset_classifier, ...), so the wrapper reads like the timm model.
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None or name.startswith("_"):
                raise
            return getattr(model, name)

    def prior_loss(self, results: Mapping[int, CanonResult]) -> torch.Tensor:
        """The sum over insertion points of each canonicalizer's prior (squared distance of ``g`` to ``e``), ``(B,)``.

        Args:
            results: what [`forward_canon`][equican.latent.LatentCanonicalized.forward_canon] returned.
        """
        losses = [self.canonicalizers[str(k)].prior_loss(r.h if r.h is not None else r.g) for k, r in results.items()]
        return torch.stack(losses).sum(dim=0)

    def unwrap(self) -> nn.Module:
        """Remove the hooks and return the bare model (the wrapper no longer works afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.model

    def extra_repr(self) -> str:
        return (f"at={self.at}, blocks={self.block_names}, layout={self.layout!r}, "
                f"canonicalizer_input={tuple(self.canonicalizer_input.values())}, "
                f"uncanonicalize={tuple(self.uncanonicalize.values())}")

    # ------------------------------------------------------------------ the per-call record
    @contextlib.contextmanager
    def _calling(self, x: torch.Tensor) -> Iterator[_Call]:
        if self._active is not None:  # a call is already under way (e.g. forward_features inside forward)
            yield self._active
            return
        self._check_input(x, "LatentCanonicalized.forward")
        self._active = call = _Call(owner=self, image=x)
        try:
            yield call
        finally:
            self._active = None

    def _model_start(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._active is None:
            self._check_input(_first_tensor(args, kwargs) if args or kwargs else None, "LatentCanonicalized.forward")
            self._active = _Call(owner="model", image=_first_tensor(args, kwargs))

    def _check_input(self, x: Any, where: str) -> None:
        from ._model_checks import check_image_input

        p = next(self.model.parameters(), None)
        check_image_input(x, channels=_image_channels(self.model), patch_embed=_patch_embed(self.model),
                          dtype=None if p is None else p.dtype, where=where)

    def _model_end(self, index: int, args: tuple[Any, ...], output: Any) -> None:
        if self._active is not None and self._active.owner == "model":
            self._active = None

    # ------------------------------------------------------------------ the blocks' hooks
    def _block_start(self, k: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._active is None:  # a block called on its own (e.g. by forward_intermediates): a call of its own
            self._active = _Call(owner=("block", k))
        call = self._active
        where = f"LatentCanonicalized: {self.block_names[self.at.index(k)]}"
        features = _first_tensor(args, kwargs)
        if features is None:
            raise ShapeError(f"{where}: expected the block's first argument to be a feature tensor")
        image, context = self._to_image(features, call, where, "input")
        canon = self.canonicalizers[str(k)]
        if call.canon_k is not None:
            result = self._with_canonicalization_loss(canon, call, k, image, where)
        elif self.canonicalizer_input[k] == "latent":
            result = canon(image)
        else:
            result = self._from_image(canon, call, image, where)
        call.pending[k] = (result, context)
        call.results[k] = result
        features = self._from_image_layout(result.x, context)
        if args:
            return (features, *args[1:]), kwargs
        return args, {**kwargs, "x": features}

    def _block_end(self, k: int, args: tuple[Any, ...], output: Any) -> Any:
        call = self._active
        if call is None:
            return None
        try:
            pending = call.pending.pop(k, None)
            # output is None when the block raised (always_call hooks still run): only clean up then.
            if pending is None or output is None or not self.uncanonicalize[k]:
                return None
            where = f"LatentCanonicalized: {self.block_names[self.at.index(k)]}"
            if not isinstance(output, torch.Tensor):
                raise ShapeError(f"{where}: expected the block to return a tensor to map back, got "
                                 f"{type(output).__name__} (pass uncanonicalize=False for this point)")
            y, context = self._to_image(output, call, where, "output")
            return self._from_image_layout(self.canonicalizers[str(k)].uncanonicalize(pending[0], y), context)
        finally:
            if call.owner == ("block", k):
                self._active = None

    def _with_canonicalization_loss(self, canon: Canonicalizer, call: _Call, k: int, features: torch.Tensor,
                                    where: str) -> CanonResult:
        """The point's result, computed together with its canonicalization terms (recorded in ``call.terms``).

        The loss is taken on what the canonicalizer reads: the features at this point, or the input image. With the
        image, the element found there is applied to the features (continuous groups: the discrete straight-through
        gradient of ``canonical_input`` needs the chart scores, which the loss does not keep).
        """
        from .canon.objective import canonicalization_loss

        source = features if self.canonicalizer_input[k] == "latent" else call.image
        if source is None:
            raise ConfigError(f"{where}: canonicalizer_input='image' needs the input image; call the wrapper")
        terms = canonicalization_loss(canon, source, call.canon_k, call.canon_loss)
        call.terms[k] = terms
        if source is features:
            return terms.result
        h = terms.result.h
        return CanonResult(x=canon.group.act(h, features), info=terms.result.info, h=h, group=canon.group)

    def forward_canonicalization(self, x: torch.Tensor, k: torch.Tensor, config: Any = None
                                 ) -> tuple[Any, dict[int, CanonResult], dict[int, Any]]:
        """[`forward_canon`][equican.latent.LatentCanonicalized.forward_canon] plus every insertion point's
        canonicalization loss under the elements ``k``.

        Args:
            x: images ``(B, C, H, W)``.
            k: one element of the wrapper's group per image, ``(B, *param_shape)``; the same ``k`` is used at every
                point (elements act in normalized coordinates, so one element means the same at every resolution).
            config: a [`CanonicalizationLoss`][equican.canon.objective.CanonicalizationLoss] (None: its defaults).

        Returns:
            ``(output, results, terms)``: the model's output on ``x``, each point's
            [`CanonResult`][equican.canon.CanonResult] and its
            [`CanonicalizationTerms`][equican.canon.objective.CanonicalizationTerms].
        """
        with self._calling(x) as call:
            call.canon_k, call.canon_loss = k, config
            out = self.model(x)
            return out, dict(call.results), dict(call.terms)

    def _from_image(self, canon: Canonicalizer, call: _Call, features: torch.Tensor, where: str) -> CanonResult:
        """The element predicted from the input image, applied to the features (CanonResult.x: the features)."""
        if call.image is None:
            raise ConfigError(f"{where}: canonicalizer_input='image' needs the input image; call the wrapper "
                              f"(forward, forward_features, forward_canon) or wrapper.model(x)")
        canon.check_input(call.image, where=where)
        z, info = canon.solve(call.image)
        h = canon.group.from_unconstrained(z)
        return CanonResult(x=canon.canonical_input(z, h, features), info=info, h=h, group=canon.group)

    # ------------------------------------------------------------------ layouts
    def _to_image(self, features: torch.Tensor, call: _Call, where: str,
                  role: str) -> tuple[torch.Tensor, Any]:
        """``(B, C, H, W)`` view of block features, and what ``_from_image_layout`` needs to undo it."""
        if self.layout == "tokens":
            if features.ndim != 3:
                raise ShapeError(f"{where}: expected token features (B, N, C) as the block's {role}, "
                                 f"got {V.fmt_shape(features.shape)}")
            b, n, c = features.shape
            p, (gh, gw) = self._token_grid(n, call, where)
            image = features[:, p:].reshape(b, gh, gw, c).permute(0, 3, 1, 2)
            return image, features[:, :p]
        if features.ndim != 4:
            raise ShapeError(f"{where}: expected {self.layout} features as the block's {role}, "
                             f"got {V.fmt_shape(features.shape)}")
        return (features.permute(0, 3, 1, 2) if self.layout == "NHWC" else features), None

    def _from_image_layout(self, image: torch.Tensor, context: Any) -> torch.Tensor:
        if self.layout == "tokens":
            return torch.cat([context, image.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)  # flatten: B may be 0
        return image.permute(0, 2, 3, 1) if self.layout == "NHWC" else image

    def _token_grid(self, tokens: int, call: _Call, where: str) -> tuple[int, tuple[int, int]]:
        """``(P, (H, W))``: the prefix tokens and the patch grid of a block's ``tokens`` tokens.

        ``P`` is ``model.num_prefix_tokens``, or 0 when the tokens fill the grid exactly: models that append their
        class token after the blocks (CaiT) have none in them.
        """
        patch_embed = _patch_embed(self.model)
        prefixes = dict.fromkeys((_num_prefix_tokens(self.model) or 0, 0))  # distinct, in order
        grid = getattr(patch_embed, "grid_size", None)
        if getattr(self.model, "dynamic_img_size", False):
            if call.image is not None and call.image.ndim == 4:
                grid = patch_embed.dynamic_feat_size(tuple(call.image.shape[-2:]))  # type: ignore[union-attr]
            elif grid is None or all(grid[0] * grid[1] != tokens - p for p in prefixes):
                # no image in this call (a block called on its own): a square grid is the only reading left
                squares = [(p, round((tokens - p) ** 0.5)) for p in prefixes if tokens > p]
                grid = next(((s, s) for p, s in squares if s * s == tokens - p), None)
        for p in prefixes:
            if grid is not None and grid[0] * grid[1] == tokens - p:
                return p, (int(grid[0]), int(grid[1]))
        raise ShapeError(f"{where}: {tokens} tokens are not {' or '.join(map(str, prefixes))} prefix tokens and the "
                         f"patch grid {tuple(grid) if grid is not None else None} (patch dropout and token pruning "
                         f"are not supported)")


# ---------------------------------------------------------------------------------------------- create_model
def create_model(name: str, group: str | Group = "monotone",
                 canonicalizer: str | Canonicalizer | Sequence[str | Canonicalizer] = "deq",
                 at: int | Sequence[int] = (0,), canonicalizer_input: str | Sequence[str] = "latent",
                 uncanonicalize: bool | Sequence[bool] = True, group_options: Mapping[str, Any] | None = None,
                 canonicalizer_options: Mapping[str, Any] | None = None, *, pretrained: bool = False,
                 pretrained_file: str | None = None, **timm_kwargs: Any) -> LatentCanonicalized:
    """``timm.create_model(name, **timm_kwargs)`` wrapped in
    [`LatentCanonicalized`][equican.latent.LatentCanonicalized].

    Mirrors ``timm.create_model`` (``num_classes``, ``in_chans``, ``img_size``, ``patch_size``, ``depth``, ...
    pass through), with ``pretrained=False`` by default.

    Pretrained weights load offline from a local file with ``pretrained_file=path`` (``.pth``/``.bin`` state dict or
    checkpoint, or ``.safetensors``), through the same timm adaptation as
    ``equican.models.build_model(..., options={"pretrained_file": path})`` (position embeddings resampled, stem
    adapted to ``in_chans``, a classifier of another class count re-initialized). The canonicalizers start fresh.

    Args:
        name: a timm model name.
        group: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        canonicalizer: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        at: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        canonicalizer_input: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        uncanonicalize: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        group_options: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        canonicalizer_options: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        pretrained: timm's flag (downloads when no file is given; leave False offline).
        pretrained_file: a local weight file.
        **timm_kwargs: passed to ``timm.create_model``.

    Returns:
        The wrapped model; it maps images ``(B, in_chans, H, W)`` to what the timm model returns (logits
        ``(B, num_classes)`` for a classifier).

    Raises:
        UnknownNameError: timm knows no model ``name``.
        ConfigError: as for [`LatentCanonicalized`][equican.latent.LatentCanonicalized].
        DataError: ``pretrained_file`` is missing or unreadable.
    """
    import timm

    from ._model_checks import creating, require_matching_keys
    from .models import _pretrained_overlay, require_timm_model

    require_timm_model(name)
    where, keys = f"create_model({name!r})", set()
    if pretrained_file is not None:
        if "pretrained_cfg_overlay" in timm_kwargs:
            raise ConfigError("create_model: give pretrained_file or pretrained_cfg_overlay, not both")
        timm_kwargs["pretrained_cfg_overlay"] = _pretrained_overlay(name, pretrained_file, where=where, keys=keys)
    model = creating(lambda: timm.create_model(name, pretrained=pretrained or pretrained_file is not None,
                                               **timm_kwargs), offline_download=pretrained and pretrained_file is None, where=where)
    if pretrained_file is not None:
        require_matching_keys(model, keys, pretrained_file, where=where)
    return LatentCanonicalized(model, at=at, canonicalizer=canonicalizer, group=group,
                               canonicalizer_input=canonicalizer_input, uncanonicalize=uncanonicalize,
                               group_options=group_options, canonicalizer_options=canonicalizer_options)
