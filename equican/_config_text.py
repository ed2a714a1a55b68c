"""The text of configurations (private to ``equican.config``): files and packaged configs read, YAML parsed safely and
strictly, parser messages on one line, and ``dotted.key=value`` overrides applied to the nested dicts of
``TrainConfig.to_dict()``."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, DataError

CONFIG_PACKAGE = "equican.configs"
PACKAGED_SUFFIXES = (".toml", ".yaml")


def read_source(source: str | Path, packaged: Sequence[str]) -> tuple[Any, str]:
    """``(data, where)``: the parsed mapping of a config file or of a packaged config (a name in ``packaged``; a file
    of that name takes precedence, a directory does not), and how to name it in messages.

    Raises:
        DataError: a missing, unreadable or unparsable file. ConfigError: neither a known file type nor a packaged
            name.
    """
    path = Path(source)
    if not path.is_file() and isinstance(source, str) and source in packaged:
        for suffix in PACKAGED_SUFFIXES:
            entry = resources.files(CONFIG_PACKAGE).joinpath(f"{source}{suffix}")
            if entry.is_file():
                text = entry.read_text(encoding="utf-8")
                return (tomllib.loads(text) if suffix == ".toml" else load_yaml(text)), f"packaged config {source!r}"
    where = f"config file {str(source)!r}"
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        hint = f"; packaged configurations: {list(packaged)}" if not path.exists() else ""
        raise ConfigError(f"--config {str(source)!r}: expected a .toml, .yaml or .yml file or a packaged "
                          f"configuration name{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{where}: does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else load_yaml(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{where}: not valid {suffix[1:].upper()}: {one_line(exc)}") from None
    return data, where


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping with a key given twice is an error: the plain loader keeps the
    last value without a word, so a config edited in two places would run with whichever came last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"expected unique keys in a mapping, got {key!r} twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML ``text`` parsed safely, rejecting duplicate keys (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def one_line(exc: Exception) -> str:
    """A parser's message on one line: PyYAML's spans 4-7 lines (problem, context, a quoted source excerpt)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; on the command line it means a number."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value


def apply_one(tree: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to the nested dicts of ``TrainConfig.to_dict()``, in place."""
    where = f"override {item!r}"
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"{where}: expected KEY=VALUE with a dotted key (e.g. optim.lr=3e-4)")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot parse the value: {one_line(exc)}") from None
    if not raw.strip().startswith(("'", '"')):  # a quoted value is a string, whatever it looks like
        value = _number(value)
    # Sections and their fields exist already (a typo there is an error); keys inside an options mapping
    # (depth 2 and deeper) may be new, since each component validates its own options.
    node = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if depth < 2 and (part not in node or (not last and not isinstance(node[part], dict))):
            raise ConfigError(f"{where}: unknown key {'.'.join(parts[:depth + 1])!r}; expected one of "
                              f"{sorted(node)}")
        if not last:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {'.'.join(parts[:depth + 1])!r} is {child!r}, not a mapping")
            node = child
    node[parts[-1]] = value
