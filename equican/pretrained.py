"""Save and load canonicalizers and latent-canonicalized timm models: a JSON config plus safetensors weights.

A directory written by ``save_pretrained(directory)`` holds two files:

* ``config.json``: what rebuilds the module with no network access. For a canonicalizer, its
  [`canonicalizer_config`][equican.pretrained.canonicalizer_config]: the kind name, the group's registry name and
  constructor options, ``in_channels`` and the kind's options, as
  [`make_canonicalizer`][equican.canon.registry.make_canonicalizer] recorded them. For a
  [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] model: the timm name and keyword arguments (when built
  by [`create_model`][equican.latent.create.create_model]), the insertion points, ``canonicalizer_input``,
  ``uncanonicalize``, the block path and layout, and each point's canonicalizer config.
* ``model.safetensors``: the module's ``state_dict`` (for a latent model, the timm model's parameters under
  ``model.`` and the canonicalizers' under ``canonicalizers.<k>.``, as in the wrapper's ``state_dict``).

``from_pretrained(directory)`` rebuilds the module from the config (timm with ``pretrained=False``: nothing is
downloaded) and loads the weights. Before loading, every weight name and shape is compared with the rebuilt module:
a config that does not describe the weights raises [`CheckpointError`][equican.errors.CheckpointError] naming the
missing and unexpected keys and the shape mismatches. A missing, unreadable or corrupt file raises
[`DataError`][equican.errors.DataError] naming the path.

Only what the registry built can be saved: a canonicalizer constructed directly (``DEQCanonicalizer(group, net,
...)``) has no record of how to rebuild it, and ``save_pretrained`` raises [`ConfigError`][equican.errors.ConfigError]
(save its ``state_dict`` yourself, or build it with ``make_canonicalizer``). Options that JSON cannot hold (a whole
``DEQConfig`` object as the ``config`` option) raise ``ConfigError`` on save too, naming the option.

```python
import equican
from equican.canon import make_canonicalizer

canon = make_canonicalizer("dec", equican.make_group("rotation"), 3, {"channels": [8, 16]})
canon.save_pretrained("outputs/dec_rotation")
again = equican.Canonicalizer.from_pretrained("outputs/dec_rotation")   # the same outputs
```
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, DataError
from .modes import training

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION", "canonicalizer_config", "save_canonicalizer",
           "load_canonicalizer", "save_latent", "load_latent", "to_json"]

CONFIG_NAME = "config.json"
"""The config file's name inside a saved directory."""
WEIGHTS_NAME = "model.safetensors"
"""The weights file's name inside a saved directory."""
FORMAT_VERSION = 1
"""The version written to (and required of) ``config.json``."""


def to_json(value: Any, *, where: str, name: str) -> Any:
    """``value`` as plain JSON data (tuples become lists); ConfigError naming ``name`` for what JSON cannot hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected {name} to be a finite number to write to JSON, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(v, where=where, name=f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected {name} to have string keys to write to JSON, got {list(value)!r}")
        return {k: to_json(v, where=where, name=f"{name}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: expected {name} to be JSON data (numbers, strings, lists, mappings), got "
                      f"{type(value).__name__}; build the canonicalizer from plain option values to save it")


def canonicalizer_config(canonicalizer: nn.Module, *, where: str = "save_pretrained") -> dict[str, Any]:
    """The JSON config of a canonicalizer built by [`make_canonicalizer`][equican.canon.registry.make_canonicalizer]:
    ``{"kind", "group", "group_options", "in_channels", "options"}``.

    Raises:
        ConfigError: the canonicalizer was not built through the registry (no record), or a value is not JSON data.
    """
    record = getattr(canonicalizer, "canonicalizer_config", None)
    if not isinstance(record, Mapping):
        raise ConfigError(f"{where}: expected a canonicalizer built by make_canonicalizer (which records its kind, "
                          f"group and options), got a {type(canonicalizer).__name__} built directly; build it with "
                          f"equican.canon.make_canonicalizer(kind, group, in_channels, options), or save its "
                          f"state_dict yourself")
    if not record.get("group"):
        raise ConfigError(f"{where}: expected the canonicalizer's group to be registered (it is rebuilt by name), "
                          f"got an unregistered {record.get('group_class', 'group')}")
    return to_json(dict(record), where=where, name="the canonicalizer config")


# ---------------------------------------------------------------------------------------------- files
def _write(directory: str | os.PathLike, config: dict[str, Any], module: nn.Module) -> Path:
    from safetensors.torch import save_file

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    # Cloned so that tensors sharing storage (tied weights, views) are written as separate entries, which
    # safetensors requires; the files are small next to the cost of a training run.
    # The state of training mode: escnn's convolutions add cached filters to the state in evaluation mode only, and
    # a rebuilt module starts in training mode. Every module's own mode is restored afterwards.
    with training(module):
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    text = json.dumps({"format_version": FORMAT_VERSION, **config}, indent=2, sort_keys=False)
    for name, write in ((CONFIG_NAME, lambda tmp: tmp.write_text(text + "\n")),
                        (WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))):
        tmp = path / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, path / name)  # atomic: a reader never sees half a file
    return path


def _read_config(directory: str | os.PathLike, kind: str) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise DataError(f"from_pretrained: expected a config file {path}, got none (was the directory written by "
                        f"save_pretrained?)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"from_pretrained: expected {path} to hold JSON, got an unreadable file "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        got = config.get("format_version") if isinstance(config, dict) else type(config).__name__
        raise DataError(f"from_pretrained: expected {path} to have format_version {FORMAT_VERSION}, got {got!r}")
    if config.get("type") != kind:
        raise DataError(f"from_pretrained: expected {path} to describe a {kind}, got type {config.get('type')!r}")
    return config


def _read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise DataError(f"from_pretrained: expected a weights file {path}, got none")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"from_pretrained: expected {path} to be a safetensors file, got an unreadable one "
                        f"({type(exc).__name__}: {exc})") from None


def _load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], directory: str | os.PathLike) -> None:
    """Load ``state`` into ``module`` after checking names and shapes; CheckpointError names every mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: weights {tuple(state[k].shape)}, config {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"from_pretrained: expected the weights in {Path(directory) / WEIGHTS_NAME} to fit "
                              f"the module that {Path(directory) / CONFIG_NAME} describes, got {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------- canonicalizers
def _build_canonicalizer(record: Any, *, where: str) -> nn.Module:
    from .canon.registry import make_canonicalizer
    from .group import make_group

    if not isinstance(record, Mapping) or not isinstance(record.get("kind"), str) \
            or not isinstance(record.get("group"), str):
        raise DataError(f"{where}: expected a canonicalizer config with 'kind' and 'group' names, got {record!r}"[:300])
    group = make_group(record["group"], **dict(record.get("group_options") or {}))
    return make_canonicalizer(record["kind"], group, record.get("in_channels"), record.get("options"))


def save_canonicalizer(canonicalizer: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a canonicalizer built by
    [`make_canonicalizer`][equican.canon.registry.make_canonicalizer]; returns the directory.

    Raises:
        ConfigError: the canonicalizer was not built through the registry, or an option is not JSON data.
    """
    config = {"type": "canonicalizer", "canonicalizer": canonicalizer_config(canonicalizer)}
    return _write(directory, config, canonicalizer)


def load_canonicalizer(directory: str | os.PathLike) -> nn.Module:
    """The canonicalizer saved in ``directory``, rebuilt by kind and with its weights loaded (evaluation mode off:
    the module is in training mode, as a fresh one).

    Raises:
        DataError: a missing, unreadable or malformed file (the message names it). CheckpointError: weights that do
            not fit the canonicalizer the config builds. UnknownNameError, ConfigError: a kind or group that is not
            registered here, or options it does not accept.
    """
    config = _read_config(directory, "canonicalizer")
    module = _build_canonicalizer(config.get("canonicalizer"), where=f"from_pretrained({str(directory)!r})")
    _load_weights(module, _read_weights(directory), directory)
    return module


# ---------------------------------------------------------------------------------------------- latent models
def save_latent(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized]
    model; returns the directory.

    Raises:
        ConfigError: a canonicalizer not built through the registry, or a timm keyword argument that is not JSON data.
    """
    config = {"type": "latent", **model.equican_config(where="save_pretrained")}
    return _write(directory, config, model)


def load_latent(directory: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The latent model saved in ``directory``: the timm model rebuilt offline (``pretrained=False``) from its name and
    keyword arguments, or the given bare ``model`` (for a wrapper not built by ``create_model``), wrapped with the
    recorded insertion points and canonicalizers, weights loaded.

    Raises:
        DataError, CheckpointError, ConfigError: as for [`load_canonicalizer`][equican.pretrained.load_canonicalizer];
            ConfigError also when the config names no timm model and no ``model`` is given.
    """
    from .latent.wrapper import LatentCanonicalized

    config = _read_config(directory, "latent")
    where = f"from_pretrained({str(directory)!r})"
    timm_record = config.get("timm")
    if model is None:
        if not isinstance(timm_record, Mapping) or not isinstance(timm_record.get("name"), str):
            raise ConfigError(f"{where}: expected the config to name a timm model (saved from create_model), or a "
                              f"bare model passed as model=, got neither")
        import timm

        model = timm.create_model(timm_record["name"], pretrained=False, **dict(timm_record.get("kwargs") or {}))
    points = config.get("points")
    if not isinstance(points, list) or not points:
        raise DataError(f"{where}: expected 'points' in {Path(directory) / CONFIG_NAME} to be a non-empty list")
    try:
        at = [int(p["at"]) for p in points]
        canons = [_build_canonicalizer(p["canonicalizer"], where=where) for p in points]
        inputs = [p["canonicalizer_input"] for p in points]
        unc = [p["uncanonicalize"] for p in points]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: expected every point of {Path(directory) / CONFIG_NAME} to have at, canonicalizer, "
                        f"canonicalizer_input and uncanonicalize, got {type(exc).__name__}: {exc}") from None
    wrapper = LatentCanonicalized(model, at=at, canonicalizer=canons, canonicalizer_input=inputs, uncanonicalize=unc,
                                  blocks=config.get("blocks"), layout=config.get("layout"))
    if isinstance(timm_record, Mapping):
        wrapper.timm_config = dict(timm_record)
        wrapper._publish_config()
    _load_weights(wrapper, _read_weights(directory), directory)
    return wrapper
