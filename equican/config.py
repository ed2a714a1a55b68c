"""The configuration of a training run: frozen dataclasses, read from YAML or TOML, overridden from the command line.

A run is described by one [`TrainConfig`][equican.config.TrainConfig] with five sections. Three of them name a component
and pass it options, the same way each time (``name`` + ``options``), and the component validates its own options:

* ``data`` ([`DataConfig`][equican.config.DataConfig]): ``dataset`` is ``"local_scale"`` (Locally Scaled MNIST, options
  of [`LocalScaleConfig`][equican.data.local_scale.LocalScaleConfig]), ``"transformed"`` (options of
  [`TransformedConfig`][equican.data.transformed.TransformedConfig]) or ``"mnist"`` (plain digits, no options); ``root``
  a directory of MNIST IDX files (None: the bundled subset); ``train_limit`` / ``test_limit`` cap the source digits
  read.
* ``model`` ([`ModelConfig`][equican.config.ModelConfig]): ``name`` is one of the package's models (``"cnn"``,
  ``"vit"``) or any timm model; ``options`` are its keyword arguments (see
  [`equican.models.build_model`][equican.models.build_model]).
* ``method`` ([`MethodConfig`][equican.config.MethodConfig]): ``name`` of a training method, the ``group`` it uses and
  that group's constructor arguments, and the method's ``options`` (see [`equican.methods`][equican.methods]).
* ``optim`` ([`OptimConfig`][equican.config.OptimConfig]): AdamW, the learning-rate schedule, epochs and the global
  batch size.
* ``eval`` ([`EvalConfig`][equican.config.EvalConfig]): which metrics are computed after training and on how many test
  samples.

A file holds the same nesting (``[optim]`` / ``optim:`` sections); fields left out keep their defaults. Overrides
are ``dotted.key=value`` strings whose value is parsed as YAML (``optim.lr=3e-4``, ``data.options.digits=2``,
``model.options.channels=[16, 32]``). Every value is validated when the dataclass is made, so a bad file or flag
fails before any data is read or any model is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import validation as V
from ._config_text import CONFIG_PACKAGE, PACKAGED_SUFFIXES, apply_one, read_source
from ._runtime import AMP_MODES
from .errors import ConfigError

__all__ = ["DataConfig", "ModelConfig", "MethodConfig", "OptimConfig", "EvalConfig", "TrainConfig", "DATASETS",
           "SCHEDULES", "load_config", "apply_overrides", "packaged_configs", "from_options"]

DATASETS: tuple[str, ...] = ("local_scale", "transformed", "mnist")
"""Dataset names [`DataConfig`][equican.config.DataConfig] accepts."""
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
"""Learning-rate schedules [`OptimConfig`][equican.config.OptimConfig] accepts: after ``warmup_steps`` of linear
warm-up, ``"cosine"`` decays to 0 at the last step, ``"linear"`` decays linearly to 0, ``"constant"`` stays at
``lr``."""


def _options(value: Any, *, where: str, name: str) -> Mapping[str, Any]:
    """A read-only copy of an options mapping with string keys (nested mappings stay as given)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: expected {name} to be a mapping of option names to values, got {value!r}")
    return MappingProxyType(dict(value))


def _split_tables(value: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tables, flat)``: the entries whose value is a mapping (one table of options per method or group name) and
    the rest (options of the configured method or group, the older flat form)."""
    tables = {k: dict(v) for k, v in value.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in value.items() if not isinstance(v, Mapping)}
    return tables, flat


def _name(value: Any, *, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected {name} to be a non-empty string, got {value!r}")
    return value


def _positive_number(value: Any, *, where: str, name: str, zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"{where}: expected {name} to be a finite number {bound}, got {value!r}")
    return float(value)


def _optional_int(value: Any, *, low: int, where: str, name: str) -> None:
    if value is not None:
        V.require_int(value, low=low, where=where, name=name)


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and evaluates on.

    Attributes:
        dataset: one of [`DATASETS`][equican.config.DATASETS].
        options: the dataset's settings: fields of [`LocalScaleConfig`][equican.data.local_scale.LocalScaleConfig] for
            ``"local_scale"`` (digits, cell, canvas, scale_range, layouts, stride, seed), of
            [`TransformedConfig`][equican.data.transformed.TransformedConfig] for ``"transformed"`` (group, group_args,
            canvas, seed); none for ``"mnist"``.
        root: a directory of MNIST IDX files, or None for the subset bundled with the package.
        train_limit: read at most this many source digits of the training split (None: all).
        test_limit: read at most this many source digits of the test split (None: all).
    """

    dataset: str = "local_scale"
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        where = "data"
        if self.dataset not in DATASETS:
            raise ConfigError(f"{where}: expected dataset in {DATASETS}, got {self.dataset!r}")
        object.__setattr__(self, "options", _options(self.options, where=where, name="options"))
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"{where}: expected root to be None or a directory path, got {self.root!r}")
        _optional_int(self.train_limit, low=1, where=where, name="train_limit")
        _optional_int(self.test_limit, low=1, where=where, name="test_limit")


@dataclass(frozen=True)
class ModelConfig:
    """The classifier: ``name`` from [`equican.models.list_models`][equican.models.list_models] or any timm model, with
    its ``options``. An override of ``name`` to another model (``--model``) drops the configured ``options``: they
    are the other model's (see [`apply_overrides`][equican.config.apply_overrides])."""

    name: str = "cnn"
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _name(self.name, where="model", name="name")
        object.__setattr__(self, "options", _options(self.options, where="model", name="options"))


@dataclass(frozen=True)
class MethodConfig:
    """How the classifier is trained (see [`equican.methods`][equican.methods] for the names and their options).

    Each method keeps its own options, so switching ``name`` (``--method``) never hands one method's options to
    another. In a file they are one table per method name, and only the table of ``name`` is used:

    ```toml
    [method]
    name = "dec"

    [method.options.dec]      # used when name = "dec"
    channels = [16, 32]

    [method.options.direct]   # used when name = "direct" (e.g. --method direct)
    channels = [8, 16]
    ```

    The older flat form (``[method.options]`` holding ``channels = [16, 32]`` directly) is still read: its options
    belong to the configured ``name`` (and, given together with tables, override that method's table). No method
    option takes a table as its value, which is how the two forms are told apart.

    Attributes:
        name: the method, e.g. ``"plain"``, ``"augment"``, ``"dec"``.
        group: the registered group the method uses; None takes the method's default group. A method that uses no
            group (``plain``) refuses one.
        group_options: the group's constructor arguments, e.g. ``{"cells": 4, "strength": 0.25}``.
        options: after construction, the options of ``name`` alone (what the method reads), e.g.
            ``{"prior_weight": 0.1}`` for ``"dec"``; given as the flat form, per-method tables, or both.
        tables: every method's options by method name, ``name``'s included (``to_dict`` writes these, so a
            config read back, or overridden with another ``method.name``, keeps each method's options).
    """

    name: str = "plain"
    group: str | None = None
    group_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False, init=False, repr=False)

    def __post_init__(self) -> None:
        where = "method"
        _name(self.name, where=where, name="name")
        if self.group is not None:
            _name(self.group, where=where, name="group")
        object.__setattr__(self, "group_options", _options(self.group_options, where=where, name="group_options"))
        tables, flat = _split_tables(_options(self.options, where=where, name="options"))
        tables[self.name] = {**tables.get(self.name, {}), **flat}
        object.__setattr__(self, "options", MappingProxyType(dict(tables[self.name])))
        object.__setattr__(self, "tables", MappingProxyType({k: MappingProxyType(v) for k, v in tables.items()}))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts; ``options`` as one table per method name (the empty ones left out)."""
        return {"name": self.name, "group": self.group, "group_options": _plain(self.group_options),
                "options": {k: _plain(v) for k, v in self.tables.items() if v}}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its learning-rate schedule.

    Attributes:
        epochs: passes over the training set.
        batch_size: the *global* batch: under ``torchrun`` with ``N`` processes each takes ``batch_size / N``
            (which must divide evenly), so a run's updates do not depend on ``N``.
        lr: AdamW's (peak) learning rate.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decay rates.
        schedule: one of [`SCHEDULES`][equican.config.SCHEDULES], stepped once per batch.
        warmup_steps: batches of linear warm-up from 0 to ``lr``.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        where = "optim"
        V.require_int(self.epochs, low=1, where=where, name="epochs")
        V.require_int(self.batch_size, low=1, where=where, name="batch_size")
        _positive_number(self.lr, where=where, name="lr")
        _positive_number(self.weight_decay, where=where, name="weight_decay", zero=True)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"{where}: expected betas to be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{where}: expected schedule in {SCHEDULES}, got {self.schedule!r}")
        V.require_int(self.warmup_steps, low=0, where=where, name="warmup_steps")
        if self.grad_clip is not None:
            _positive_number(self.grad_clip, where=where, name="grad_clip")


@dataclass(frozen=True)
class EvalConfig:
    """What is measured after training (see [`equican.metrics`][equican.metrics]).

    The core names no group: the packaged configurations choose the invariance group and its options (monotone
    scaling at the paper's strength, see ``equican/configs/*.toml``).

    Attributes:
        enabled: evaluate at the end of training (``equican evaluate`` always does).
        limit: evaluate on the first ``limit`` test samples (None: all).
        batch_size: evaluation batch size.
        invariance_group: the registry name of the group of the invariance error; None (the default) takes the
            group of the run's method, with its ``group_options``; a method that uses no group (``plain``) then has
            no invariance error.
        invariance_options: each group's constructor arguments for the invariance error, one table per group name
            (``{"monotone": {"cells": 8, "strength": 0.25}}``); only the table of the group evaluated is used, so
            switching ``invariance_group`` never hands one group's options to another. The flat form
            (``{"cells": 8}``) is read as the table of ``invariance_group``, which it then requires.
        rescalings: ``k``, rescalings per composite for the local-scale error (Locally Scaled MNIST only).
        seed: seed of the invariance error's random elements.
    """

    enabled: bool = True
    limit: int | None = None
    batch_size: int = 64
    invariance_group: str | None = None
    invariance_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    rescalings: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        where = "eval"
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"{where}: expected enabled to be true or false, got {self.enabled!r}")
        _optional_int(self.limit, low=1, where=where, name="limit")
        V.require_int(self.batch_size, low=1, where=where, name="batch_size")
        if self.invariance_group is not None:
            _name(self.invariance_group, where=where, name="invariance_group")
        tables, flat = _split_tables(_options(self.invariance_options, where=where, name="invariance_options"))
        if flat:
            if self.invariance_group is None:
                raise ConfigError(f"{where}: expected invariance_options as one table per group name (e.g. "
                                  f"invariance_options.monotone.cells=8) or an invariance_group they belong to, "
                                  f"got options {sorted(flat)} and no invariance_group")
            tables[self.invariance_group] = {**tables.get(self.invariance_group, {}), **flat}
        object.__setattr__(self, "invariance_options",
                           MappingProxyType({k: MappingProxyType(v) for k, v in tables.items() if v}))
        V.require_int(self.rescalings, low=1, where=where, name="rescalings")
        V.require_int(self.seed, low=0, high=V.SEED_MAX, where=where, name="seed")

    def group_options(self, name: str) -> dict[str, Any]:
        """The constructor arguments of group ``name`` for the invariance error (its table; none: ``{}``)."""
        return dict(self.invariance_options.get(name, {}))


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig, "optim": OptimConfig,
             "eval": EvalConfig}


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run (see the module docstring).

    Attributes:
        data: the data section.
        model: the model section.
        method: the training-method section.
        optim: the optimizer section.
        eval: the evaluation section.
        seed: seeds the model's initialization, the data order and the methods' random elements.
        out: directory for ``checkpoint.pt``, ``metrics.json`` and ``config.json``.
        device: ``"auto"`` (the local GPU when there is one, else the CPU), ``"cpu"`` or ``"cuda"``.
        threads: torch's intra-op threads (None: torch's default).
        workers: DataLoader worker processes (0: load in the main process).
        progress: show progress bars (on rank 0).
        amp: mixed-precision training: ``"off"``, ``"auto"`` (bfloat16 on the CPU and on GPUs that have it, else
            float16), ``"bf16"`` or ``"fp16"`` (CUDA only, with a gradient scaler). The forward pass runs under
            ``torch.autocast``; weights, optimizer state and the evaluation stay float32. ``true``/``false`` mean
            ``"auto"``/``"off"``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    out: str = "outputs/train"
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    progress: bool = True
    amp: str = "off"

    def __post_init__(self) -> None:
        where = "config"
        for key, cls in _SECTIONS.items():
            if not isinstance(getattr(self, key), cls):
                raise ConfigError(f"{where}: expected {key} to be a {cls.__name__}, "
                                  f"got {type(getattr(self, key)).__name__}")
        V.require_int(self.seed, low=0, high=V.SEED_MAX, where=where, name="seed")
        _name(self.out, where=where, name="out")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"{where}: expected device 'auto', 'cpu' or 'cuda', got {self.device!r}")
        _optional_int(self.threads, low=1, where=where, name="threads")
        V.require_int(self.workers, low=0, where=where, name="workers")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"{where}: expected progress to be true or false, got {self.progress!r}")
        if isinstance(self.amp, bool):  # YAML 1.1 reads a bare off/on as a bool
            object.__setattr__(self, "amp", "auto" if self.amp else "off")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"{where}: expected amp to be one of {list(AMP_MODES)}, got {self.amp!r}")

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts, lists and scalars (JSON-, YAML- and TOML-ready); ``from_dict`` inverts it."""
        return _plain(self)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from nested mappings; missing fields keep their defaults.

        Raises:
            ConfigError: an unknown section or field (the message lists the accepted ones), or an invalid value.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(mapping).__name__}")
        top = _check_keys(mapping, cls, where=source)
        for key, section in _SECTIONS.items():
            if key in top:
                value = top[key]
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: expected section {key!r} to be a mapping, "
                                      f"got {type(value).__name__}")
                fields = _check_keys(value, section, where=f"{source}: section {key!r}")
                try:
                    top[key] = section(**fields)
                except ConfigError as exc:  # say where the bad value came from (a file, the overrides, ...)
                    raise ConfigError(f"{source}: {exc}") from None
        try:
            return cls(**top)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields or whole sections replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, MethodConfig):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_keys(mapping: Mapping[str, Any], cls: type, *, where: str) -> dict[str, Any]:
    accepted = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in mapping if k not in accepted]
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; expected one of {accepted}")
    return dict(mapping)


def from_options(cls: type, options: Mapping[str, Any], *, where: str) -> Any:
    """Make the dataclass ``cls`` from an options mapping (a config file's ``options`` section).

    Lists become tuples (TOML and YAML have no tuples); the dataclass validates the values.

    Raises:
        ConfigError: an option ``cls`` has no field for (the message lists the accepted ones), or a value the
            dataclass rejects.
    """
    accepted = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; expected one of {accepted}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


# ---------------------------------------------------------------------------------------------- files
def packaged_configs() -> list[str]:
    """Names of the configurations shipped with the package (``equican train --config demo``): the ``.toml`` and
    ``.yaml`` files of ``equican/configs`` (``demo``, ``compare``, ``paper``, and the example
    ``local_scale_dec``), installed with the wheel."""
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files(CONFIG_PACKAGE).iterdir()
                  if p.name.endswith(PACKAGED_SUFFIXES))


def load_config(source: str | Path) -> TrainConfig:
    """Read a configuration from a ``.toml``, ``.yaml`` or ``.yml`` file, or a packaged one by name.

    Args:
        source: a file path, or the name of a packaged configuration
            ([`packaged_configs`][equican.config.packaged_configs]).

    Raises:
        DataError: the file is missing, unreadable or not valid TOML/YAML (the message names it).
        ConfigError: an unknown file type, section or field, or an invalid value.
    """
    data, where = read_source(source, packaged_configs())
    return TrainConfig.from_dict({} if data is None else data, source=where)


def _apply_switching_model(tree: dict[str, Any], item: str) -> None:
    """``apply_one``; an override ``model.name=`` another model (``--model``) drops the options of the model it
    replaces: the demo's CNN ``channels`` mean nothing to a ViT. Options set after it (``--set
    model.options.depth=2``) apply to the new model."""
    model = tree.get("model")
    before = model.get("name") if isinstance(model, dict) else None
    apply_one(tree, item)
    model = tree.get("model")
    if item.split("=", 1)[0].strip() == "model.name" and isinstance(model, dict) and model.get("name") != before:
        model["options"] = {}


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """``config`` with ``dotted.key=value`` overrides applied in order; values are parsed as YAML.

    ``optim.lr=3e-4`` sets a field; ``data.options.digits=2`` sets one option of a section (the options mapping is
    merged, not replaced); ``seed=1`` sets a top-level field. ``method.options.KEY=VALUE`` sets an option of the
    method that is configured once all overrides are applied (``method.options.dec.KEY=VALUE`` one of ``dec``'s
    table, whichever method runs). ``model.name=`` another model than the configured one drops the configured
    ``model.options`` (they belong to the other model); ``model.options.KEY=VALUE`` after it sets the new model's.

    Raises:
        ConfigError: a malformed override, an unknown key, or an invalid value; the message names the override.
    """
    tree = config.to_dict()
    for item in overrides:
        _apply_switching_model(tree, item)
    try:
        return TrainConfig.from_dict(tree, source="overrides")
    except ConfigError as exc:
        # Name the override that made the config invalid: the first prefix of them that fails.
        culprit, tree = list(overrides), config.to_dict()
        for i, item in enumerate(overrides):
            _apply_switching_model(tree, item)
            try:
                TrainConfig.from_dict(tree, source="overrides")
            except ConfigError:
                culprit = [item]
                break
        message = str(exc).removeprefix("overrides: ")
        label = f"override {culprit[0]!r}" if len(culprit) == 1 else f"overrides {culprit}"
        raise ConfigError(f"{label}: {message}") from None
