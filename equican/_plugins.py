"""A user's own modules for the ``equican`` command, imported before any registry is read (private to
[`equican.cli`][equican.cli]).

A group (a [`Group`][equican.group.Group] subclass) or a canonicalizer kind
([`register_canonicalizer`][equican.canon.registry.register_canonicalizer]) registers when its module is imported.
An installed package does that through an entry point; a user with one file of their own names it instead:

* ``equican COMMAND --import MODULE`` (repeatable; every subcommand takes it): a module name importable from the
  current directory or ``sys.path`` (``my_plugin``, ``mypkg.groups``), or the path of a ``.py`` file;
* ``EQUICAN_PLUGINS=my_plugin,./more/kinds.py``: the same, comma-separated, imported before the flags' modules.

``equican train --import my_plugin --method noisy_identity`` then trains with the kind ``my_plugin`` registers.
A module that cannot be imported (not found, or raising while it runs) is a
[`ConfigError`][equican.errors.ConfigError] that names it, reported before anything else runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

__all__ = ["ENV_VAR", "plugin_names", "load_plugins"]

ENV_VAR = "EQUICAN_PLUGINS"
"""The environment variable of comma-separated plugin modules (names or ``.py`` paths)."""


def _entries(imports: Sequence[str], environ: Mapping[str, str] | None) -> list[tuple[str, str]]:
    env = (os.environ if environ is None else environ).get(ENV_VAR, "")
    out: list[tuple[str, str]] = []
    for name, where in [*((n, f"{ENV_VAR} entry {n.strip()!r}") for n in env.split(",")),
                        *((n, f"--import {n.strip()}") for n in imports)]:
        name = name.strip()
        if name and name not in [n for n, _ in out]:
            out.append((name, where))
    return out


def plugin_names(imports: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[str]:
    """The modules to import: those of ``EQUICAN_PLUGINS`` in ``environ`` (default ``os.environ``), then
    ``imports`` (the ``--import`` flags), each once, in that order; blank entries are skipped."""
    return [name for name, _ in _entries(imports, environ)]


def load_plugins(imports: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[ModuleType]:
    """Import the modules of ``plugin_names`` (module names or ``.py`` paths, see the module docstring); returns
    them.

    Raises:
        ConfigError: a module that is not found or raises while it is imported; the message names it (and whether
            ``--import`` or ``EQUICAN_PLUGINS`` named it) and the exception it raised.
    """
    return [_load(name, where) for name, where in _entries(imports, environ)]


def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _load(name: str, where: str) -> ModuleType:
    if _is_path(name):
        return _load_file(Path(name), where)
    # A console script's sys.path lacks the current directory that `python -m` has: add it after the installed
    # packages, so that a user's one file is found but never hides a module of the same name.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(f"{where}: expected an importable module (a name on sys.path or the current directory, "
                          f"or a .py file), got {_what(exc)}") from exc


def _load_file(path: Path, where: str) -> ModuleType:
    if not path.is_file() or path.suffix != ".py":
        got = "a missing path" if not path.exists() else "a path that is not a .py file"
        raise ConfigError(f"{where}: expected an existing .py file, got {got} ({path})")
    resolved = path.resolve()
    module_name = path.stem
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == resolved:
            return loaded  # the same file, named twice (EQUICAN_PLUGINS and --import)
        raise ConfigError(f"{where}: expected a file whose name is not an imported module's, got {path.name} "
                          f"(module {module_name!r} is already imported from {getattr(loaded, '__file__', None)}); "
                          f"rename the file")
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: expected a Python source file, got {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        if not isinstance(exc, Exception):
            raise
        raise ConfigError(f"{where}: expected the file to import, got {_what(exc)}") from exc
    return module


def _what(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"
