"""[`create_model`][equican.latent.create.create_model]: a timm model by name, wrapped for latent canonicalization;
and the checks of the timm record a saved model rebuilds from ([`check_timm_record`][equican.latent.create.check_timm_record],
[`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS]).

A saved latent model's ``config.json`` names a timm model and keyword arguments that ``from_pretrained`` passes to
``timm.create_model``. A file can say anything, and timm's keywords reach far: ``checkpoint_path`` unpickles the file
it names, ``pretrained=True`` and ``hf-hub:`` names download, ``pretrained_cfg`` redirects both. So only the
architecture keywords of [`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS] are passed on, each checked for its type and
a bounded range; a model name is a plain name that timm knows (no ``:`` or ``/``, so no hub and no local directory);
nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..canon.base import Canonicalizer
from .. import validation as V
from ..errors import ConfigError, EquicanError, UnknownNameError
from ..group import Group
from .wrapper import LatentCanonicalized

__all__ = ["create_model", "list_models", "WRAPPABLE_MODULES", "TIMM_KWARGS", "check_timm_record", "build_timm"]

WRAPPABLE_MODULES = ("vision_transformer", "deit", "beit", "eva", "cait", "mlp_mixer", "swin_transformer", "resnet",
                     "convnext")
"""The timm model modules (families) whose models [`find_blocks`][equican.latent.blocks.find_blocks] finds blocks and
a layout in without ``blocks=``/``layout=``: token models (ViT, DeiT, BEiT, EVA, CaiT, MLP-Mixer), Swin (NHWC),
ResNet and ConvNeXt (NCHW)."""


def list_models(filter: str | Sequence[str] = "", *, pretrained: bool = False,
                exclude_filters: str | Sequence[str] = "") -> list[str]:
    """The timm model names [`create_model`][equican.latent.create.create_model] wraps without ``blocks=``:
    ``timm.list_models(filter, ...)`` restricted to the families of
    [`WRAPPABLE_MODULES`][equican.latent.create.WRAPPABLE_MODULES], sorted as timm sorts them.

    Args:
        filter: a wildcard pattern (or several) as for ``timm.list_models`` (``"vit_*"``; empty: all).
        pretrained: only names with pretrained weights (timm's flag; nothing is downloaded).
        exclude_filters: wildcard pattern(s) of names to leave out.
    """
    import timm

    return timm.list_models(filter, module=list(WRAPPABLE_MODULES), pretrained=pretrained,
                            exclude_filters=exclude_filters)


def _int(low: int, high: int) -> tuple[str, Callable[[Any], bool]]:
    return (f"an int in [{low}, {high}]",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high)


def _ints(low: int, high: int, most: int) -> tuple[str, Callable[[Any], bool]]:
    one = _int(low, high)[1]
    return (f"an int in [{low}, {high}] or a list of at most {most} of them",
            lambda v: one(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= most and all(map(one, v))))


def _number(low: float, high: float, *, high_open: bool = False, low_open: bool = False,
            none: bool = False) -> tuple[str, Callable[[Any], bool]]:
    def ok(v: Any) -> bool:
        if v is None:
            return none
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return f"a number in {bounds}{' or null' if none else ''}", ok


def _bool(none: bool = False) -> tuple[str, Callable[[Any], bool]]:
    return ("true or false" + (" or null" if none else ""),
            lambda v: isinstance(v, bool) or (none and v is None))


def _choice(*values: Any) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {list(values)!r}", lambda v: any(type(v) is type(c) and v == c for c in values)


_RATE = _number(0.0, 1.0, high_open=True)
TIMM_KWARGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    # The classifier and the input.
    "num_classes": _int(0, 100_000), "in_chans": _int(1, 1024), "img_size": _ints(1, 4096, 2),
    "global_pool": _choice("", "avg", "max", "avgmax", "catavgmax", "fast", "token", "map"),
    # Widths, depths and attention (ViT, DeiT, Swin, ConvNeXt, ...).
    "patch_size": _ints(1, 1024, 2), "window_size": _ints(1, 1024, 2), "embed_dim": _ints(1, 8192, 8),
    "depth": _int(0, 256), "depths": _ints(0, 256, 8), "dims": _ints(1, 8192, 8), "num_heads": _ints(1, 256, 8),
    "mlp_ratio": _number(0.0, 64.0, low_open=True), "reg_tokens": _int(0, 64), "output_stride": _choice(8, 16, 32),
    "class_token": _bool(), "no_embed_class": _bool(), "qkv_bias": _bool(), "qk_norm": _bool(), "pre_norm": _bool(),
    "fc_norm": _bool(none=True), "dynamic_img_size": _bool(), "dynamic_img_pad": _bool(),
    "init_values": _number(0.0, 10.0, none=True), "ls_init_value": _number(0.0, 10.0, none=True),
    # Regularization.
    "drop_rate": _RATE, "drop_path_rate": _RATE, "attn_drop_rate": _RATE, "proj_drop_rate": _RATE,
    "pos_drop_rate": _RATE, "patch_drop_rate": _RATE,
    # The one accepted value of the download switch: off.
    "pretrained": _choice(False),
}
"""The timm keyword arguments a saved latent model may record, each with what it must be (in words) and its test.

Architecture sizes only, in JSON types, each bounded (an ``embed_dim`` of 10^9 is refused before timm sees it). Never
accepted: ``checkpoint_path`` (timm would unpickle the file it names), ``pretrained=true`` and the ``pretrained_cfg*``
and ``cache_dir`` keywords (downloads and redirections), ``features_only`` and layer classes (another kind of model).
A model built with other keywords still saves and loads by the bare-model route: wrap ``timm.create_model(...)`` in
[`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] and pass it again as ``from_pretrained(directory,
model=...)``."""

_REFUSED = {"checkpoint_path": "timm would unpickle the file it names",
            "pretrained_cfg": "it redirects where weights come from", "cache_dir": "it is a download setting",
            "pretrained_cfg_overlay": "it redirects where weights come from", "pretrained_strict": "no weights load"}


def check_timm_record(name: object, kwargs: object, *, where: str, field: str = "timm") -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of a timm record to rebuild offline, once each is known to be safe.

    Args:
        name: a timm model name (``resnet18``, ``vit_tiny_patch16_224.augreg_in21k``): a plain name, never a hub
            reference (``hf-hub:...``, ``timm/...``) or a local directory (``local-dir:...``).
        kwargs: keyword arguments from [`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS] (None: none).
        where: the caller, for messages.
        field: the record's name in its file, for messages.

    Raises:
        ConfigError: ``name`` is not a string or names a hub or a directory; ``kwargs`` is not a mapping, or holds a
            keyword outside the allow-list or a value outside its range (the message names the field, what it must be
            and what it is). UnknownNameError: timm knows no model ``name``.
    """
    from ..models import require_timm_model

    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ConfigError(f"{where}: expected {field}.name to be a plain timm model name (nothing is downloaded: no "
                          f"'hf-hub:', 'timm/' or 'local-dir:' references), got {V.short(name)}")
    try:
        require_timm_model(name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{where}: {field}.name: {exc}") from None
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: expected {field}.kwargs to be a mapping of timm keyword arguments, got "
                          f"{type(kwargs).__name__} {V.short(kwargs)}")
    for key, value in kwargs.items():
        if key in _REFUSED:
            raise ConfigError(f"{where}: expected {field}.kwargs without {key!r} ({_REFUSED[key]}), got "
                              f"{key}={V.short(value)}")
        if key not in TIMM_KWARGS:
            raise ConfigError(f"{where}: expected {field}.kwargs to use only the architecture keywords of "
                              f"equican.latent.create.TIMM_KWARGS, got {str(key)[:80]!r} (accepted: "
                              f"{', '.join(sorted(TIMM_KWARGS))})")
        expected, ok = TIMM_KWARGS[key]
        if not ok(value):
            raise ConfigError(f"{where}: expected {field}.kwargs.{key} to be {expected}, got {V.short(value)}")
    return name, dict(kwargs)


def build_timm(name: str, kwargs: Mapping[str, Any], *, where: str, field: str = "timm") -> Any:
    """``timm.create_model(name, pretrained=False, **kwargs)`` for a record that passed
    [`check_timm_record`][equican.latent.create.check_timm_record]; the model's device is the current default (pass
    under ``torch.device("meta")`` to learn its shapes without allocating).

    Raises:
        ConfigError: timm refused the keywords for this model (an unexpected keyword, a size it cannot build).
    """
    import timm

    try:
        return timm.create_model(name, pretrained=False, **{k: v for k, v in kwargs.items() if k != "pretrained"})
    except EquicanError:
        raise
    except Exception as exc:  # timm raises TypeError, ValueError, AssertionError, ... for keywords a model rejects
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{where}: expected {field}.kwargs that timm's {name} accepts, got {dict(kwargs)!r} "
                          f"({type(exc).__name__}: {first})"[:400]) from None


def create_model(name: str, group: str | Group | None = None,
                 canonicalizer: str | Canonicalizer | Sequence[str | Canonicalizer] = "deq",
                 at: int | Sequence[int] = (0,), canonicalizer_input: str | Sequence[str] = "latent",
                 uncanonicalize: bool | Sequence[bool] = True, group_options: Mapping[str, Any] | None = None,
                 canonicalizer_options: Mapping[str, Any] | None = None, *, pretrained: bool = False,
                 pretrained_file: str | None = None, **timm_kwargs: Any) -> LatentCanonicalized:
    """``timm.create_model(name, **timm_kwargs)`` wrapped in
    [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].

    Mirrors ``timm.create_model`` (``num_classes``, ``in_chans``, ``img_size``, ``patch_size``, ``depth``, ...
    pass through), with ``pretrained=False`` by default.

    Pretrained weights load offline from a local file with ``pretrained_file=path`` (``.pth``/``.bin`` state dict or
    checkpoint, or ``.safetensors``), through the same timm adaptation as
    ``equican.models.build_model(..., options={"pretrained_file": path})`` (position embeddings resampled, stem
    adapted to ``in_chans``, a classifier of another class count re-initialized). The canonicalizers start fresh.

    Args:
        name: a timm model name.
        group: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        at: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer_input: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        uncanonicalize: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        group_options: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer_options: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        pretrained: timm's flag (downloads when no file is given; leave False offline).
        pretrained_file: a local weight file.
        **timm_kwargs: passed to ``timm.create_model``; ``features_only=True`` (with ``out_indices``) wraps timm's
            feature extractor, whose feature maps then come from canonicalized blocks (insertion points still number
            the model's blocks or stages; such a model does not save, as ``features_only`` is no
            architecture keyword). Recorded for ``save_pretrained``, which accepts only those of
            [`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS] (what a saved file may pass to timm).

    Returns:
        The wrapped model; it maps images ``(B, in_chans, H, W)`` to what the timm model returns (logits
        ``(B, num_classes)`` for a classifier).

    Raises:
        UnknownNameError: timm knows no model ``name``.
        ConfigError: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        DataError: ``pretrained_file`` is missing or unreadable.
    """
    import timm

    from .._model_checks import creating, require_matching_keys
    from ..models import _pretrained_overlay, require_timm_model

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
    wrapper = LatentCanonicalized(model, at=at, canonicalizer=canonicalizer, group=group,
                                  canonicalizer_input=canonicalizer_input, uncanonicalize=uncanonicalize,
                                  group_options=group_options, canonicalizer_options=canonicalizer_options)
    # What from_pretrained rebuilds the timm model from, offline: the name and the architecture's kwargs (the
    # pretrained file and overlay only matter for the first build; the saved weights replace them).
    kwargs = {k: v for k, v in timm_kwargs.items() if k != "pretrained_cfg_overlay"}
    wrapper.timm_config = {"name": name, "kwargs": kwargs}
    wrapper._publish_config()
    return wrapper
