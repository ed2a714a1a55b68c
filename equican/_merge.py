"""The files ``equican compare --merge`` joins, checked before anything is written.

Each source's ``compare.json`` is read against one schema (JSON syntax, the keys the merge uses and their types, no
NaN metric, run names that are safe as file names); any fault is a [`DataError`][equican.errors.DataError] naming the
file and the field. Then the sources are checked together: each directory once, none equal to or inside the output
directory, one base configuration and evaluation, and each run (its name and seed, and the hash of its config where
the file records one) in one source only, so no seed is counted twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._paths import require_path
from .config import TrainConfig
from .errors import ConfigError, DataError, EquicanError

__all__ = ["IDENTITY", "MAX_BYTES", "MAX_METRIC", "config_hash", "read_source", "read_sources"]

IDENTITY = ("seed", "config_hash")
"""The fields of a run's row that say which run it is; every other field is a metric."""
MAX_BYTES = 64 * 2**20
"""The largest ``compare.json`` read (a comparison of hundreds of runs is well under a megabyte)."""
MAX_METRIC = 1e15
"""The largest magnitude of a finite metric (accuracies, errors, seconds are far below it; sums of values beyond it
overflow the mean and the bar charts). Infinite values are kept: a DEQ residual that never became finite is
``inf``."""
_WHERE = "compare --merge"
# Fields that change where and how a run ran, not what it computed.
_RUNTIME = ("out", "device", "threads", "workers", "progress")
# A run name is a directory name in its source: `plain`, or `kind[group]`.
_RUN_NAME = re.compile(r"^[A-Za-z0-9_-]+(\[[A-Za-z0-9_.-]+\])?$")
_MACHINE_TEXT = ("cpu", "cpus", "usable_cpus", "torch_threads", "torch", "python", "gpu")


def config_hash(config: TrainConfig) -> str:
    """A short hash of everything in ``config`` that decides what a run computes (not ``out``, ``device``,
    ``threads``, ``workers`` or ``progress``): two rows with one hash are the same run."""
    data = {k: v for k, v in config.to_dict().items() if k not in _RUNTIME}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(path: Path, field: str, expected: str, got: Any) -> DataError:
    return DataError(f"{_WHERE}: {path}: expected {field} to be {expected}, got {_show(got)}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value: Any, *, empty: bool = True) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value) and (empty or bool(value))


def _check_machine(machine: Any, path: Path) -> None:
    if not isinstance(machine, dict):
        raise _fail(path, "field 'machine'", "a mapping", machine)
    for key in _MACHINE_TEXT:
        if key not in machine:
            raise DataError(f"{_WHERE}: {path}: expected field 'machine' to have {key!r}, got none")
        if not (machine[key] is None or isinstance(machine[key], (str, int, float))):
            raise _fail(path, f"machine[{key!r}]", "a string, number or null", machine[key])
    for key in ("load_average_start", "load_average_end"):
        if key == "load_average_start" or key in machine:
            loads = machine.get(key)
            if not (isinstance(loads, list) and all(_number(v) for v in loads)):
                raise _fail(path, f"machine[{key!r}]", "a list of numbers", loads)


def _check_rows(name: str, rows: Any, eval_groups: list[str], path: Path) -> None:
    field = f"runs[{name!r}]"
    if not (isinstance(rows, list) and rows):
        raise _fail(path, field, "a non-empty list of per-seed rows", rows)
    required = ("train_seconds", "accuracy", *(f"invariance[{g}]" for g in eval_groups))
    seeds = set()
    for i, row in enumerate(rows):
        where = f"{field}[{i}]"
        if not isinstance(row, dict):
            raise _fail(path, where, "a mapping of metrics", row)
        seed = row.get("seed")
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            raise _fail(path, f"{where}['seed']", "an int >= 0", seed)
        if seed in seeds:
            raise _fail(path, f"{where}['seed']", f"a seed not already in {field}", seed)
        seeds.add(seed)
        if "config_hash" in row and not (isinstance(row["config_hash"], str) and row["config_hash"]):
            raise _fail(path, f"{where}['config_hash']", "a non-empty string", row["config_hash"])
        for key in required:
            if key not in row:
                raise DataError(f"{_WHERE}: {path}: expected {where} to have the metric {key!r}, got none")
        for key, value in row.items():
            if key in IDENTITY:
                continue
            if not _number(value):
                raise _fail(path, f"{where}[{key!r}]", "a number", value)
            if math.isnan(value) or (math.isfinite(value) and abs(value) > MAX_METRIC):
                raise _fail(path, f"{where}[{key!r}]", f"a number of magnitude at most {MAX_METRIC:g} (or "
                                                       f"infinite), not NaN", value)


def _check(payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` with its base config normalized (every field present), once every field the merge uses is
    known to be there and of its type."""
    if not isinstance(payload, dict):
        raise _fail(path, "the file", "a JSON object (a finished comparison)", payload)
    for key in ("base", "machine", "wall_seconds", "groups", "eval_groups", "runs"):
        if key not in payload:
            raise DataError(f"{_WHERE}: {path}: expected a field {key!r} (written by every comparison), got none")
    try:
        base = TrainConfig.from_dict(payload["base"], source="base").to_dict()
    except (EquicanError, TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise DataError(f"{_WHERE}: {path}: expected field 'base' to be a valid training config, got one that is "
                        f"not ({message})") from None
    _check_machine(payload["machine"], path)
    wall = payload["wall_seconds"]
    if not (_number(wall) and math.isfinite(wall) and wall >= 0):
        raise _fail(path, "field 'wall_seconds'", "a finite number >= 0", wall)
    for key, empty in (("groups", True), ("eval_groups", False), ("kinds", True), ("baselines", True),
                       ("sources", True)):
        if (key in payload or not empty) and not _strings(payload.get(key), empty=empty):
            raise _fail(path, f"field {key!r}", f"a {'' if empty else 'non-empty '}list of names", payload.get(key))
    if payload.get("command") is not None and not isinstance(payload["command"], str):
        raise _fail(path, "field 'command'", "a string or null", payload["command"])
    runs = payload["runs"]
    if not (isinstance(runs, dict) and runs):
        raise _fail(path, "field 'runs'", "a non-empty mapping of run names to rows", runs)
    for name, rows in runs.items():
        if not _RUN_NAME.match(name):
            raise _fail(path, "each run name", "'plain', 'augment[GROUP]' or 'KIND[GROUP]' (a directory name)", name)
        _check_rows(name, rows, payload["eval_groups"], path)
    return {**payload, "base": base}


def read_source(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``compare.json`` of the comparison directory ``source``.

    Raises:
        DataError: no ``compare.json`` there, or one that is unreadable, not JSON, or wrong in a field (the
            message names the file and the field).
    """
    path = Path(source) / "compare.json"
    if not path.is_file():
        raise DataError(f"{_WHERE}: expected a finished comparison in {source}, got no {path.name} there")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DataError(f"{_WHERE}: {path}: expected at most {MAX_BYTES} bytes, got {size}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{_WHERE}: {path}: expected a readable UTF-8 file, got {type(exc).__name__}: "
                        f"{str(exc)[:160]}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{_WHERE}: {path}: expected JSON, got a syntax error at line {exc.lineno}, column "
                        f"{exc.colno} ({exc.msg}); the file is corrupt or was cut short") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting thousands deep
        raise DataError(f"{_WHERE}: {path}: expected JSON a comparison writes, got {type(exc).__name__}: "
                        f"{str(exc)[:160]}") from None
    return _check(payload, path)


def read_sources(sources: Any, *, out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every source's checked ``compare.json``, once the sources are known to fit together.

    Raises:
        ConfigError: no sources, a directory listed twice, a source equal to or inside ``out``, sources with
            different base configs or evaluation groups, or one run (name and seed) in two sources.
        DataError: a source's ``compare.json`` missing or wrong (``read_source``).
    """
    if isinstance(sources, (str, bytes, os.PathLike)) or not isinstance(sources, Sequence):
        raise ConfigError(f"{_WHERE}: expected a list of comparison directories, got {type(sources).__name__}")
    if not sources:
        raise ConfigError(f"{_WHERE}: expected at least one source directory, got none")
    seen: dict[Path, Path] = {}
    target = out.resolve()
    for source in sources:
        resolved = require_path(source, where=_WHERE, name="each source").resolve()
        if resolved in seen:
            raise ConfigError(f"{_WHERE}: expected each source once, got {source} twice (as {seen[resolved]} "
                              f"too); its runs would be counted twice")
        seen[resolved] = Path(source)
        if resolved == target or target in resolved.parents:
            raise ConfigError(f"{_WHERE}: expected --out to be outside every source, got {out}, which "
                              f"{'is' if resolved == target else 'contains'} the source {source}; writing there "
                              f"would replace a source's results")
    payloads = [(Path(source), read_source(source)) for source in sources]
    (first_source, first), owner = payloads[0], {}
    for source, payload in payloads:
        for key in ("base", "eval_groups"):
            if payload[key] != first[key]:
                raise ConfigError(f"{_WHERE}: expected every source to share {key!r} with {first_source}, got a "
                                  f"different one in {source}")
        for name, rows in payload["runs"].items():
            for row in rows:
                key = (name, row["seed"])
                if key in owner:
                    other, digest = owner[key]
                    same = "the same run" if digest == row.get("config_hash") or None in (digest, row.get(
                        "config_hash")) else f"two runs with different configs ({digest} and {row['config_hash']})"
                    raise ConfigError(f"{_WHERE}: expected each run and seed in one source only, got {name} seed "
                                      f"{row['seed']} in both {other} and {source} ({same}); pooling them would "
                                      f"count that seed twice")
                owner[key] = (source, row.get("config_hash"))
    return payloads
