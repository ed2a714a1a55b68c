"""The classifiers that ``equican train`` trains: the package's own small models, and any timm model by name.

[`build_model`][equican.models.build_model] is the one entry point: ``"cnn"`` is [`SmallCNN`][equican.models.SmallCNN],
``"vit"`` is [`small_vit`][equican.models.small_vit] (a real timm ``VisionTransformer``, so latent canonicalization can
wrap its blocks), and any other name is looked up in timm. Every model maps images ``(B, in_channels, H, W)`` to logits
``(B, num_classes)``.

The package's own models use no BatchNorm: per-sample normalization (GroupNorm, LayerNorm) makes a model's output
for one sample independent of the rest of the batch, so a distributed run computes what a single-process run
computes, and a canonicalized sample is processed the same way whatever it is batched with. (A timm model chosen
by name brings its own normalization; ResNets use BatchNorm.)

timm is imported inside the functions that need it, not at module load: it adds about 3 s to an import, which a
user of [`SmallCNN`][equican.models.SmallCNN] alone should not pay.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import validation as V
from .errors import ConfigError, DataError, ShapeError, UnknownNameError

__all__ = ["SmallCNN", "small_vit", "MODELS", "build_model", "list_models", "require_timm_model"]


def _group_count(channels: int, most: int = 8) -> int:
    """The largest number of GroupNorm groups ``<= most`` that divides ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class SmallCNN(nn.Module):
    """A small convolutional classifier for MNIST-sized images.

    Each stage is conv3x3 → GroupNorm → ReLU → conv3x3 → GroupNorm → ReLU → MaxPool2d(2); the last feature map is
    average-pooled to a ``pool_size × pool_size`` grid, flattened and mapped to logits by one linear layer.

    Why GroupNorm: it normalizes each sample on its own (up to 8 groups per layer, fewer where the channel count
    has no divisor that large), so outputs do not depend on batch composition, a distributed run equals a
    single-process run, and canonicalization stays per-sample. There is no BatchNorm anywhere.

    Why a pooled grid rather than global pooling: the labels of multi-digit composites depend on where each digit
    is, so the classifier must see coarse positions, which global pooling would discard.

    Shapes:
        input ``(B, in_channels, H, W)`` with ``H, W >= 2 ** len(channels)`` (each stage halves the size);
        output ``(B, num_classes)`` logits.

    Args:
        in_channels: channels of the input images (1 for MNIST).
        num_classes: number of logits.
        channels: output channels of each stage.
        pool_size: side of the grid the last feature map is average-pooled to.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (32, 64, 128),
                 pool_size: int = 3) -> None:
        super().__init__()
        where = "SmallCNN"
        V.require_int(in_channels, low=1, where=where, name="in_channels")
        V.require_int(num_classes, low=1, where=where, name="num_classes")
        V.require_int(pool_size, low=1, where=where, name="pool_size")
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) == 0:
            raise ConfigError(f"{where}: expected channels to be a non-empty sequence of ints, got {channels!r}")
        for c in channels:
            V.require_int(c, low=1, where=where, name="every entry of channels")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(channels)
        self.pool_size = pool_size

        stages = []
        previous = in_channels
        for c in self.channels:
            stages.append(nn.Sequential(
                # No conv bias: the GroupNorm right after it has its own shift.
                nn.Conv2d(previous, c, 3, padding=1, bias=False),
                nn.GroupNorm(_group_count(c), c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.GroupNorm(_group_count(c), c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            previous = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(previous * pool_size * pool_size, num_classes)

    @property
    def min_size(self) -> int:
        """The smallest image height and width the model accepts: ``2 ** len(channels)``."""
        return 2 ** len(self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``x`` of shape ``(B, in_channels, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < self.min_size:
            raise ShapeError(f"SmallCNN.forward: expected x of shape (B, {self.in_channels}, H, W) with "
                             f"H, W >= {self.min_size}, got {V.fmt_shape(x.shape)}")
        features = self.stages(x)
        features = F.adaptive_avg_pool2d(features, self.pool_size)
        return self.head(features.flatten(1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, pool_size={self.pool_size}"


def small_vit(in_channels: int, num_classes: int, image_size: int, patch_size: int = 8, embed_dim: int = 96,
              depth: int = 4, num_heads: int = 3, mlp_ratio: float = 2.0) -> nn.Module:
    """A small Vision Transformer: a timm ``VisionTransformer`` (class token, learned position embeddings).

    It is timm's own class, not a copy, so tools written for timm models (latent canonicalization around chosen
    ``model.blocks``, ``forward_intermediates``) work on it.

    An ``image_size`` that the patch size does not divide works: the input is zero-padded on the right and bottom to
    the next multiple of ``patch_size`` (timm's ``dynamic_img_pad``), and the position embeddings are made for that
    padded grid. (timm sizes them for the *floored* grid, ``image_size // patch_size``, so ``dynamic_img_pad`` alone
    fails on e.g. 70×70 inputs with patch 8; building at the padded size avoids that.) ``dynamic_img_size`` is on, so
    other input sizes also run, with the position embeddings resampled bicubically to their grid; at the built size
    no resampling happens.

    Shapes:
        input ``(B, in_channels, H, W)``, nominally ``H = W = image_size``; output ``(B, num_classes)`` logits.

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        image_size: side of the (square) training images.
        patch_size: side of each square patch (token).
        embed_dim: token width; must be divisible by ``num_heads``.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: hidden width of each block's MLP relative to ``embed_dim``.
    """
    where = "small_vit"
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size),
                        ("patch_size", patch_size), ("embed_dim", embed_dim), ("depth", depth),
                        ("num_heads", num_heads)):
        V.require_int(value, low=1, where=where, name=name)
    if embed_dim % num_heads:
        raise ConfigError(f"{where}: expected embed_dim divisible by num_heads, got embed_dim={embed_dim}, "
                          f"num_heads={num_heads}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ConfigError(f"{where}: expected mlp_ratio to be a positive number, got {mlp_ratio!r}")

    from timm.models.vision_transformer import VisionTransformer

    padded = math.ceil(image_size / patch_size) * patch_size
    return VisionTransformer(img_size=padded, patch_size=patch_size, in_chans=in_channels, num_classes=num_classes,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=float(mlp_ratio),
                             dynamic_img_pad=True, dynamic_img_size=True)


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": SmallCNN, "vit": small_vit}
"""The package's own models by name; each is called as ``builder(in_channels=..., num_classes=..., **options)``,
plus ``image_size=...`` when it takes one."""

# Arguments build_model sets itself, so options may not: for the package's models and for timm models.
_OWN_ARGUMENTS = ("in_channels", "num_classes", "image_size")
_TIMM_RESERVED = {"num_classes": "num_classes", "in_chans": "in_channels", "img_size": "image_size",
                  "pretrained": "options['pretrained_file']", "pretrained_cfg_overlay": "options['pretrained_file']"}


def list_models() -> list[str]:
    """The names of the package's own models (any name timm knows is accepted by
    [`build_model`][equican.models.build_model] too)."""
    return sorted(MODELS)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a classifier by name: one of the package's models ([`list_models`][equican.models.list_models]) or any timm
    model.

    * ``"cnn"``: [`SmallCNN`][equican.models.SmallCNN]; ``options`` are its keyword arguments (``channels``,
      ``pool_size``); ``image_size`` must be at least its [`SmallCNN.min_size`][equican.models.SmallCNN.min_size].
    * ``"vit"``: [`small_vit`][equican.models.small_vit]; ``options`` are its keyword arguments (``patch_size``,
      ``embed_dim``, ...).
    * any name ``timm.is_model`` accepts (``"resnet18"``, ``"vit_tiny_patch16_224"``, tags like
      ``"resnet18.a1_in1k"``): ``timm.create_model(name, pretrained=False, num_classes=num_classes,
      in_chans=in_channels, img_size=image_size, **options)``, where ``img_size`` is passed only to models that take
      it (ViT-family models do, ResNets do not). A timm ViT built at an ``image_size`` its patch size does not divide
      silently ignores the pixels past the last whole patch (28×28 with patch 16 sees only the top-left 16×16);
      choose a patch size that divides it, e.g. ``options={"patch_size": 4}``. (timm's ``dynamic_img_pad`` option
      does not help on its own: timm sizes the position embeddings for the floored grid, so the padded grid no
      longer fits them.)

    Pretrained weights are loaded only from a local file, never downloaded: ``options={"pretrained_file": path}``
    (a ``.pth``/``.bin`` state dict or checkpoint, or ``.safetensors``) loads it through timm's own adaptation
    (``pretrained=True`` with the file as the weight source). What happens to each part, as timm does it:

    * tensors whose shapes match the model load unchanged (timm's checkpoint filters also resample a ViT's position
      embeddings to a new grid);
    * a stem convolution saved for a different number of input channels is adapted to ``in_channels`` (timm's
      ``adapt_input_conv``: summed for 1 channel, tiled and rescaled for more);
    * a classifier saved for a different number of classes is dropped and freshly initialized; one saved for
      ``num_classes`` classes is kept. (timm alone decides this from the model's *registry* config, 1000 classes, so
      it would re-initialize the classifier of a ``num_classes=10`` checkpoint; here the counts are read from the
      file so that such a checkpoint round-trips exactly.)

    Args:
        name: a name from [`list_models`][equican.models.list_models], or a timm model name.
        in_channels: channels of the input images.
        num_classes: number of logits.
        image_size: side of the (square) training images.
        options: keyword arguments for the model (see above); ``None`` for none.

    Returns:
        A module mapping ``(B, in_channels, image_size, image_size)`` images to ``(B, num_classes)`` logits, with
        fresh (seeded by the global RNG) or file-loaded parameters.

    Raises:
        UnknownNameError: neither the package nor timm knows ``name``; the message lists the package's names and the
            closest timm names.
        ConfigError: a bad integer argument, an unknown or invalid option.
        DataError: ``pretrained_file`` is missing, unreadable, or does not fit the model.
    """
    where = f"build_model({name!r})"
    if not isinstance(name, str):
        raise ConfigError(f"build_model: expected name to be a str, got {type(name).__name__}")
    V.require_int(in_channels, low=1, where=where, name="in_channels")
    V.require_int(num_classes, low=1, where=where, name="num_classes")
    V.require_int(image_size, low=1, where=where, name="image_size")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{where}: expected options to be a mapping with str keys, got {options!r}")
    options = dict(options)

    if name in MODELS:
        return _build_own(name, where, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                          options=options)
    return _build_timm(name, where, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                       options=options)


def _build_own(name: str, where: str, *, in_channels: int, num_classes: int, image_size: int,
               options: dict[str, Any]) -> nn.Module:
    builder = MODELS[name]
    parameters = inspect.signature(builder).parameters
    accepted = [p for p in parameters if p not in _OWN_ARGUMENTS]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{where}: unknown option {key!r} for model {name!r}; accepted options: "
                              f"{', '.join(accepted) or 'none'}")
    kwargs: dict[str, Any] = dict(in_channels=in_channels, num_classes=num_classes, **options)
    if "image_size" in parameters:
        kwargs["image_size"] = image_size
    model = builder(**kwargs)
    min_size = getattr(model, "min_size", 1)
    if image_size < min_size:
        raise ConfigError(f"{where}: expected image_size >= {min_size} for this model, got {image_size}")
    return model


def require_timm_model(name: object, *, also: str = "") -> str:
    """``name`` if ``timm.create_model`` can build it, else an error naming the closest timm names.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``).
        also: text put before "timm knows no model of that name" (e.g. the package's own model names).

    Raises:
        UnknownNameError: timm knows no such architecture, or no such tag of it.
    """
    import timm
    import timm.models

    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        hint = f"; closest timm models: {', '.join(close)}" if close else ""
        raise UnknownNameError(f"unknown model {name!r}: {also}timm knows no model of that name{hint}")
    try:
        timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm.is_model accepts any ".tag" of a known architecture; create_model would not
        architecture = name.split(".", 1)[0]
        tags = timm.list_pretrained(f"{architecture}.*")
        close = difflib.get_close_matches(name, tags, n=3)
        hint = f"; closest: {', '.join(close)}" if close else f"; its tags: {', '.join(tags) or 'none'}"
        raise UnknownNameError(f"unknown model {name!r}: timm has no pretrained tag of that name for "
                               f"{architecture!r}{hint}") from None
    return name


def _build_timm(name: str, where: str, *, in_channels: int, num_classes: int, image_size: int,
                options: dict[str, Any]) -> nn.Module:
    import timm
    import timm.models

    require_timm_model(name, also=f"the package's models are {', '.join(list_models())}, and ")
    for key, instead in _TIMM_RESERVED.items():
        if key in options:
            raise ConfigError(f"{where}: option {key!r} is set by build_model; use {instead} instead")

    pretrained_file = options.pop("pretrained_file", None)
    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)
    if pretrained_file is not None:
        keys: set[str] = set()
        kwargs.update(pretrained=True, pretrained_cfg_overlay=_pretrained_overlay(name, pretrained_file, where=where,
                                                                                  keys=keys))

    try:
        try:
            model = timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError as exc:
            # Whether a model takes img_size is decided by its class's __init__, which the registry does not expose;
            # the TypeError from an unexpected keyword is raised before any construction work, so retrying is cheap.
            if "'img_size'" not in str(exc):
                raise
            model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        # timm checks its architecture arguments with TypeError (unknown keyword), ValueError and assert.
        bad = re.search(r"keyword argument '(\w+)'", str(exc))
        subject = f"option {bad.group(1)!r}" if bad else f"options {options!r} (or image_size={image_size})"
        raise ConfigError(f"{where}: timm rejected {subject}: {exc}") from exc
    except RuntimeError as exc:
        if pretrained_file is None:
            raise
        raise DataError(f"{where}: pretrained_file '{pretrained_file}' does not fit the model: {exc}") from exc
    if pretrained_file is not None:
        from ._model_checks import require_matching_keys

        require_matching_keys(model, keys, pretrained_file, where=where)
    return model


def _pretrained_overlay(name: str, path: object, *, where: str, keys: set[str] | None = None) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that makes timm load the weight file ``path`` and adapt it correctly; the
    file's tensor names are added to ``keys`` when it is given (to check afterwards that the file fits the model).

    timm adapts weights against the model's registry config (3 input channels, 1000 classes) and takes the file's
    tensors to be of that shape. The overlay also states what the file really holds (stem input channels,
    classifier rows), so a checkpoint saved from a model of the requested shape loads unchanged and an ImageNet
    checkpoint is adapted as before. Finding that out reads the file once here (with timm's own reader, which
    unwraps EMA/``state_dict``/``model`` checkpoints and reads safetensors), and timm reads it again to load it;
    passing the tensors in memory instead (timm's ``state_dict`` source) would not save memory, because timm
    deep-copies its config, and would keep a copy of the weights in ``model.pretrained_cfg``.
    """
    import timm.models

    if not isinstance(path, (str, Path)):
        raise ConfigError(f"{where}: expected option pretrained_file to be a path, got {type(path).__name__}")
    if not Path(path).is_file():
        raise DataError(f"{where}: pretrained_file '{path}' does not exist or is not a file")
    try:
        state_dict = timm.models.load_state_dict(str(path))
    except Exception as exc:  # torch.load / safetensors raise many types on corrupt files
        raise DataError(f"{where}: could not read pretrained_file '{path}': {type(exc).__name__}: {exc}") from exc
    if keys is not None:
        keys.update(state_dict)

    overlay: dict[str, Any] = {"file": str(path)}
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return overlay

    classifiers = (cfg.classifier,) if isinstance(cfg.classifier, str) else (cfg.classifier or ())
    for classifier in classifiers:
        weight = state_dict.get(f"{classifier}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            # timm keeps the classifier iff num_classes equals cfg.num_classes, after removing label_offset rows.
            overlay["num_classes"] = weight.shape[0] - (cfg.label_offset or 0)
            break

    stems = (cfg.first_conv,) if isinstance(cfg.first_conv, str) else (cfg.first_conv or ())
    for stem in stems:
        weight = state_dict.get(f"{stem}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim == 4 and cfg.input_size:
            # The saved stem's input channels (weight is (out, in, kh, kw) for the ungrouped stems timm adapts).
            overlay["input_size"] = (weight.shape[1], *tuple(cfg.input_size)[1:])
            break
    return overlay
