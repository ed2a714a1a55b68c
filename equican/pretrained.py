"""Save and load canonicalizers and latent-canonicalized timm models: a JSON config plus safetensors weights.

A directory written by ``save_pretrained(directory)`` holds three files:

* ``config.json``: what rebuilds the module with no network access. For a canonicalizer, its
  [`canonicalizer_config`][equican.pretrained.canonicalizer_config]: the kind name, the group's registry name and
  constructor options, ``in_channels`` and the kind's options, as
  [`make_canonicalizer`][equican.canon.registry.make_canonicalizer] recorded them. For a
  [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] model: the timm name and keyword arguments (when built
  by [`create_model`][equican.latent.create.create_model]), the insertion points, ``canonicalizer_input``,
  ``uncanonicalize``, the block path and layout, and each point's canonicalizer config.
* ``model.safetensors``: the module's ``state_dict`` (for a latent model, the timm model's parameters under
  ``model.`` and the canonicalizers' under ``canonicalizers.<k>.``, as in the wrapper's ``state_dict``).
* ``README.md``: a generated model card (YAML metadata for the Hub: library ``equican``, tags naming the kinds and
  groups; the settings, the parameter count, and the measured invariance when given as
  ``save_pretrained(..., model_card_kwargs={"measured": {...}})``). Loading does not read it.

Canonicalizers and latent models inherit ``huggingface_hub.ModelHubMixin`` (`equican._hub`): ``push_to_hub(repo_id)``
uploads such a directory, and ``from_pretrained`` takes a Hub repo id (``name`` or ``namespace/name``, fetched with
``huggingface_hub.snapshot_download`` into the Hub's cache, honouring ``HF_HUB_OFFLINE``) as well as a local
directory; what was downloaded is read and checked like a local directory.

**Saving replaces the directory as a whole** (`equican._atomic.write_directory_atomic`):
all three files are written and flushed in a sibling ``.<name>.<pid>.tmp`` directory, then swapped in by one atomic
exchange. A failed write (a full disk: [`DataError`][equican.errors.DataError]) or kill -9 at any instant leaves the
old model or the new one, complete, never the new config with the old weights; a killed writer's temporaries are
removed by the next save. The target must be new, empty or a saved model (anything else in it would be replaced):
otherwise, and for a path that is a file or lies under one, [`ConfigError`][equican.errors.ConfigError]. Loading
opens the directory once and reads both files from it, so a save racing a load cannot mix them either.

**Loading checks everything the file says before acting on it.** ``from_pretrained(directory)`` rebuilds the module
from the config (timm with ``pretrained=False``: nothing is downloaded) and loads the weights. A field of the wrong
JSON type raises ``DataError``; values go through the same validation as options given in Python or on the command
line (sizes bounded: [`MAX_CHANNELS`][equican.validation.MAX_CHANNELS], [`MAX_WIDTH`][equican.validation.MAX_WIDTH],
[`MAX_ORDER`][equican.validation.MAX_ORDER], ...), and the timm record only passes the architecture keywords of
[`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS] to timm (no ``checkpoint_path``, no ``pretrained``, no hub
names); each error names the file and the field. A latent model's timm shapes are compared with the weights file's
header on the meta device before the model is allocated. Before loading, every weight name and shape is compared with
the rebuilt module: a config that does not describe the weights raises
[`CheckpointError`][equican.errors.CheckpointError] naming the missing and unexpected keys and the shape mismatches.
A missing, unreadable or corrupt file raises ``DataError`` naming the path.

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

from ._atomic import ReplacedWhileReading, read_directory, write_directory_atomic
from . import validation as V
from .errors import CheckpointError, ConfigError, DataError, EquicanError, UnknownNameError
from .modes import training

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "FORMAT_VERSION", "MAX_CONFIG_BYTES", "canonicalizer_config",
           "save_canonicalizer", "load_canonicalizer", "save_latent", "load_latent", "to_json"]

CONFIG_NAME = "config.json"
"""The config file's name inside a saved directory."""
WEIGHTS_NAME = "model.safetensors"
"""The weights file's name inside a saved directory."""
CARD_NAME = "README.md"
"""The model card's name inside a saved directory: generated (kind, group, settings, measured invariance when
given); the Hub shows it as the repository's page. Loading does not read it."""
FORMAT_VERSION = 1
"""The version written to (and required of) ``config.json``."""
MAX_CONFIG_BYTES = 16 * 2**20
"""The largest ``config.json`` read (a saved config is a few kilobytes)."""


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


# ---------------------------------------------------------------------------------------------- writing
def _require_model_directory(directory: str | os.PathLike, where: str) -> Path:
    """``directory`` as a Path, once it is known to be new, empty, or a saved model: it is replaced as a whole, so
    anything else in it would be lost. (No writability probe inside it, as ``_paths.require_writable_dir`` makes: a
    kill during the probe would leave a stray entry there; the write itself is the probe, and leaves nothing.)"""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: expected directory to be a directory, got {path}, which is an existing file")
    base = path.absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{where}: expected directory to be a directory path, got {path}, under the file {base}")
    if not path.is_dir():
        return path
    foreign = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name not in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
            foreign.append(entry.name)
        elif not entry.is_file(follow_symlinks=False):
            got = "a directory" if entry.is_dir(follow_symlinks=False) else "not a regular file"
            raise ConfigError(f"{where}: expected {path / entry.name} to be a file of a saved model, got {got}; "
                              f"save into a directory of its own")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise ConfigError(f"{where}: expected directory {path} to be new, empty or a saved model (only "
                          f"{CONFIG_NAME}, {WEIGHTS_NAME} and {CARD_NAME}: it is replaced as a whole), got one that "
                          f"also holds "
                          f"{shown}; save into a directory of its own")
    return path


def _write(directory: str | os.PathLike, config: dict[str, Any], module: nn.Module,
           card_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into a fresh sibling directory
    and swap it in as a whole (`equican._atomic.write_directory_atomic`): a reader, a failed write or kill -9 at any
    instant sees the old model or the new one, complete, never the new config with the old weights."""
    from safetensors.torch import save_file

    from ._hub import model_card

    where = "save_pretrained"
    path = _require_model_directory(directory, where)
    # Cloned so that tensors sharing storage (tied weights, views) are written as separate entries, which
    # safetensors requires; the files are small next to the cost of a training run.
    # The state of training mode: escnn's convolutions add cached filters to the state in evaluation mode only, and
    # a rebuilt module starts in training mode. Every module's own mode is restored afterwards.
    with training(module):
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    text = json.dumps({"format_version": FORMAT_VERSION, **config}, indent=2, sort_keys=False)
    card = model_card(config, parameters=sum(p.numel() for p in module.parameters()), card_kwargs=card_kwargs)

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")

    try:
        write_directory_atomic(path, fill)
    except EquicanError:
        raise
    except PermissionError as exc:
        raise ConfigError(f"{where}: expected directory to be a writable path, got {path} ({exc.strerror or exc}: "
                          f"{exc.filename})") from None
    except Exception as exc:  # OSError (a full disk), safetensors' SafetensorError wrapping one, ...
        raise DataError(f"{where}: expected to write {path / CONFIG_NAME} and {path / WEIGHTS_NAME}, got "
                        f"{type(exc).__name__}: {exc}; what was there before is unchanged") from None
    return path


# ---------------------------------------------------------------------------------------------- reading
class _Saved:
    """A saved directory being read: ``open`` gives a file's descriptor, from the one directory that
    `equican._atomic.read_directory` opened (so a concurrent save cannot mix two models), or a
    DataError naming the file."""

    def __init__(self, path: Path, where: str, open_file: Any) -> None:
        self.path, self.where, self._open = path, where, open_file

    def open(self, name: str, what: str) -> int:
        try:
            return self._open(name)
        except FileNotFoundError:
            extra = " (was the directory written by save_pretrained?)" if name == CONFIG_NAME else ""
            raise DataError(f"{self.where}: expected {what} {self.path / name}, got none{extra}") from None
        except OSError as exc:
            raise DataError(f"{self.where}: expected {what} {self.path / name}, got an unreadable one "
                            f"({type(exc).__name__}: {exc.strerror or exc})") from None


def _reading(directory: str | os.PathLike, read: Any) -> Any:
    """``read(saved)`` on the directory, opened once; again when a concurrent save swapped it meanwhile."""
    where = f"from_pretrained({str(directory)!r})"
    try:
        return read_directory(directory, lambda open_file: read(_Saved(Path(directory), where, open_file)))
    except ReplacedWhileReading as exc:
        raise DataError(f"{where}: expected {directory} to stay in place while it is read, got it {exc.strerror}"
                        ) from None


def _read_config(saved: _Saved, kind: str) -> dict[str, Any]:
    path = saved.path / CONFIG_NAME
    fd = saved.open(CONFIG_NAME, "a config file")
    try:
        with os.fdopen(fd, "rb") as file:
            text = file.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise OSError(f"more than {MAX_CONFIG_BYTES} bytes")
        config = json.loads(text.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{saved.where}: expected {path} to hold JSON, got an unreadable file "
                        f"({type(exc).__name__}: {exc})"[:400]) from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        got = config.get("format_version") if isinstance(config, dict) else type(config).__name__
        raise DataError(f"{saved.where}: expected {path} to have format_version {FORMAT_VERSION}, got {V.short(got)}")
    if config.get("type") != kind:
        raise DataError(f"{saved.where}: expected {path} to describe a {kind}, got type {V.short(config.get('type'))}")
    return config


def _unreadable(path: Path, where: str, why: str) -> DataError:
    return DataError(f"{where}: expected {path} to be a safetensors file, got an unreadable one ({why})"[:400])


def _weights_shapes(saved: _Saved) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of the weights file, from its header alone (nothing is allocated)."""
    path = saved.path / WEIGHTS_NAME
    fd = saved.open(WEIGHTS_NAME, "a weights file")
    try:
        size = os.fstat(fd).st_size
        length = int.from_bytes(os.pread(fd, 8, 0), "little") if size >= 8 else -1
        if not 2 <= length <= min(size - 8, 100_000_000):  # safetensors' own limit on a header
            raise _unreadable(path, saved.where, f"a header of {length} bytes in a file of {size}")
        header = json.loads(os.pread(fd, length, 8).decode("utf-8"))
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise _unreadable(path, saved.where, f"{type(exc).__name__}: {exc}") from None
    finally:
        os.close(fd)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for s in shapes.values() for d in s):
        raise _unreadable(path, saved.where, "a header with shapes that are not lists of sizes")
    return shapes


def _read_weights(saved: _Saved) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load, load_file

    path = saved.path / WEIGHTS_NAME
    fd = saved.open(WEIGHTS_NAME, "a weights file")
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.exists():  # Linux: the file this descriptor holds, by a path, so that safetensors can map it
            return load_file(str(proc))
        with os.fdopen(os.dup(fd), "rb") as file:
            return load(file.read())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, saved.where, f"{type(exc).__name__}: {exc}") from None
    finally:
        os.close(fd)


def _mismatches(own: Mapping[str, tuple[int, ...]], theirs: Mapping[str, tuple[int, ...]]) -> str:
    """The missing keys, unexpected keys and shape mismatches of weights ``theirs`` against a module's ``own``
    shapes, in words; empty when they fit."""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [f"{k}: weights {tuple(theirs[k])}, config {tuple(own[k])}" for k in own
              if k in theirs and tuple(theirs[k]) != tuple(own[k])]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _require_fit(own: Mapping[str, tuple[int, ...]], theirs: Mapping[str, tuple[int, ...]], saved: _Saved) -> None:
    problems = _mismatches(own, theirs)
    if problems:
        raise CheckpointError(f"{saved.where}: expected the weights in {saved.path / WEIGHTS_NAME} to fit the module "
                              f"that {saved.path / CONFIG_NAME} describes, got {problems}")


def _load_weights(module: nn.Module, saved: _Saved) -> None:
    """Load the weights into ``module`` after checking names and shapes; CheckpointError names every mismatch."""
    state = _read_weights(saved)
    _require_fit({k: tuple(v.shape) for k, v in module.state_dict().items()},
                 {k: tuple(v.shape) for k, v in state.items()}, saved)
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------- canonicalizers
def _mapping_or_none(value: Any, *, saved: _Saved, field: str, expected: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise DataError(f"{saved.where}: expected {field} in {saved.path / CONFIG_NAME} to be {expected}, got "
                        f"{type(value).__name__} {V.short(value)}")
    return dict(value)


def _build_canonicalizer(record: Any, *, saved: _Saved, field: str) -> nn.Module:
    """The canonicalizer a saved record describes, every field checked: its type here (DataError), its value by the
    same validation as options from Python or the command line (ConfigError, UnknownNameError; sizes bounded, see
    [`equican.validation`][equican.validation]), the message prefixed with the file and the field."""
    from .canon.registry import make_canonicalizer
    from .group import make_group

    config = saved.path / CONFIG_NAME
    if not isinstance(record, Mapping):
        raise DataError(f"{saved.where}: expected {field} in {config} to be a mapping (kind, group, group_options, "
                        f"in_channels, options), got {type(record).__name__}")
    for key in ("kind", "group"):
        if not isinstance(record.get(key), str):
            raise DataError(f"{saved.where}: expected {field}.{key} in {config} to be a registered name, got "
                            f"{V.short(record.get(key))}")
    group_options = _mapping_or_none(record.get("group_options"), saved=saved, field=f"{field}.group_options",
                                     expected="a mapping of the group's constructor arguments by name")
    options = _mapping_or_none(record.get("options"), saved=saved, field=f"{field}.options",
                               expected="a mapping of the kind's options by name")
    try:
        group = make_group(record["group"], **group_options)
        return make_canonicalizer(record["kind"], group, record.get("in_channels"), options or None)
    except (ConfigError, UnknownNameError) as exc:
        raise type(exc)(f"{saved.where}: {field} in {config}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a builder's own conversion, e.g. float() of an option
        if isinstance(exc, EquicanError):
            raise
        raise ConfigError(f"{saved.where}: {field} in {config}: expected options that kind {record['kind']!r} "
                          f"accepts, got {options!r} ({type(exc).__name__}: {exc})"[:400]) from None


def save_canonicalizer(canonicalizer: nn.Module, directory: str | os.PathLike, *,
                       card_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a canonicalizer built by
    [`make_canonicalizer`][equican.canon.registry.make_canonicalizer], replacing the directory as a whole (see the
    module docstring); returns the directory.

    Raises:
        ConfigError: the canonicalizer was not built through the registry, an option is not JSON data, or
            ``directory`` is a file, lies under a file, or holds other files than a saved model's.
        DataError: the files could not be written (e.g. a full disk); the directory is as it was.
    """
    config = {"type": "canonicalizer", "canonicalizer": canonicalizer_config(canonicalizer)}
    return _write(directory, config, canonicalizer, card_kwargs)


def load_canonicalizer(directory: str | os.PathLike) -> nn.Module:
    """The canonicalizer saved in ``directory``, rebuilt by kind and with its weights loaded (evaluation mode off:
    the module is in training mode, as a fresh one).

    Raises:
        DataError: a missing, unreadable or malformed file or field (the message names it). CheckpointError: weights
            that do not fit the canonicalizer the config builds. UnknownNameError, ConfigError: a kind or group that
            is not registered here, or options it does not accept or sizes beyond the bounds (the message names the
            file and the field).
    """
    def read(saved: _Saved) -> nn.Module:
        config = _read_config(saved, "canonicalizer")
        module = _build_canonicalizer(config.get("canonicalizer"), saved=saved, field="canonicalizer")
        _load_weights(module, saved)
        return module

    return _reading(directory, read)


# ---------------------------------------------------------------------------------------------- latent models
def save_latent(model: nn.Module, directory: str | os.PathLike, *,
                card_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized]
    model, replacing the directory as a whole; returns the directory.

    Raises:
        ConfigError: a canonicalizer not built through the registry, a timm keyword argument outside
            [`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS] (what is saved must load), or a directory as for
            [`save_canonicalizer`][equican.pretrained.save_canonicalizer]. DataError: as there.
    """
    from .latent.create import check_timm_record

    config = {"type": "latent", **model.equican_config(where="save_pretrained")}
    if config.get("timm") is not None:
        check_timm_record(config["timm"].get("name"), config["timm"].get("kwargs"), where="save_pretrained")
    return _write(directory, config, model, card_kwargs)


def _timm_model(record: Any, saved: _Saved) -> nn.Module:
    """The timm model of a saved record: checked ([`check_timm_record`][equican.latent.create.check_timm_record]),
    its parameter shapes compared with the weights file's header on the meta device (a config that asks for more
    than the file holds is refused before anything is allocated), then built offline."""
    from .latent.create import build_timm, check_timm_record

    where = f"{saved.where}: {saved.path / CONFIG_NAME}"
    name, kwargs = check_timm_record(record.get("name"), record.get("kwargs"), where=where)
    shapes = _weights_shapes(saved)
    try:
        with torch.device("meta"):
            probe = build_timm(name, kwargs, where=where)
    except Exception:  # noqa: BLE001 - a model that cannot be built on the meta device is checked once built
        probe = None
    if probe is not None:
        _require_fit({f"model.{k}": tuple(v.shape) for k, v in probe.state_dict().items()},
                     {k: s for k, s in shapes.items() if k.startswith("model.")}, saved)
    return build_timm(name, kwargs, where=where)


def load_latent(directory: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The latent model saved in ``directory``: the timm model rebuilt offline (``pretrained=False``) from its name and
    keyword arguments, or the given bare ``model`` (for a wrapper not built by ``create_model``), wrapped with the
    recorded insertion points and canonicalizers, weights loaded.

    Raises:
        DataError, CheckpointError, ConfigError: as for [`load_canonicalizer`][equican.pretrained.load_canonicalizer];
            ConfigError also when the config names no timm model and no ``model`` is given, or a timm name or keyword
            that [`check_timm_record`][equican.latent.create.check_timm_record] refuses (a hub name, a keyword outside
            the allow-list, a size out of range). UnknownNameError: a timm model name timm does not know.
    """
    from .latent.wrapper import LatentCanonicalized

    def read(saved: _Saved) -> nn.Module:
        config = _read_config(saved, "latent")
        path = saved.path / CONFIG_NAME
        timm_record = config.get("timm")
        if timm_record is not None and not isinstance(timm_record, Mapping):
            raise DataError(f"{saved.where}: expected timm in {path} to be a mapping (name, kwargs) or null, got "
                            f"{type(timm_record).__name__} {V.short(timm_record)}")
        points = config.get("points")
        if not isinstance(points, list) or not points:
            raise DataError(f"{saved.where}: expected 'points' in {path} to be a non-empty list")
        if not all(isinstance(p, Mapping) for p in points):
            raise DataError(f"{saved.where}: expected every point of {path} to be a mapping, got {V.short(points)}")
        try:
            at = [p["at"] for p in points]
            inputs = [p["canonicalizer_input"] for p in points]
            unc = [p["uncanonicalize"] for p in points]
            records = [p["canonicalizer"] for p in points]
        except KeyError as exc:
            raise DataError(f"{saved.where}: expected every point of {path} to have at, canonicalizer, "
                            f"canonicalizer_input and uncanonicalize, got one without {exc}") from None
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in at):
            raise DataError(f"{saved.where}: expected points[].at in {path} to be block indices (ints), got {at!r}")
        canons = [_build_canonicalizer(r, saved=saved, field=f"points[{i}].canonicalizer")
                  for i, r in enumerate(records)]
        bare = model
        if bare is None:
            if timm_record is None:
                raise ConfigError(f"{saved.where}: expected the config to name a timm model (saved from "
                                  f"create_model), or a bare model passed as model=, got neither")
            bare = _timm_model(timm_record, saved)
        wrapper = LatentCanonicalized(bare, at=at, canonicalizer=canons, canonicalizer_input=inputs,
                                      uncanonicalize=unc, blocks=config.get("blocks"), layout=config.get("layout"))
        if isinstance(timm_record, Mapping):
            wrapper.timm_config = dict(timm_record)
            wrapper._publish_config()
        _load_weights(wrapper, saved)
        return wrapper

    return _reading(directory, read)
