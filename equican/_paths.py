"""Output paths checked before any work: a run that trains for an hour and then cannot write its results has
wasted the hour. Each check raises [`ConfigError`][equican.errors.ConfigError] naming the path and what is wrong
with it, and leaves nothing behind (the writability probe is a temporary directory, removed at once)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError

__all__ = ["require_path", "require_writable_dir", "require_writable_file"]


def require_path(path: object, *, where: str, name: str) -> Path:
    """``path`` as a ``Path``, once it is known to be a non-empty path (``Path("")`` would quietly mean the current
    directory).

    Raises:
        ConfigError: not a ``str`` or ``os.PathLike``, or an empty string.
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise ConfigError(f"{where}: expected {name} to be a path, got {type(path).__name__}")
    if not os.fspath(path):
        raise ConfigError(f"{where}: expected {name} to be a path, got an empty string")
    if "\x00" in os.fspath(path):
        raise ConfigError(f"{where}: expected {name} to be a path without NUL characters, got {os.fspath(path)!r}")
    return Path(path)


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe(directory: Path, *, where: str, name: str, path: Path) -> None:
    """Create and remove a temporary directory in ``directory``: the one test of writability that no permission
    bit, mount option or pseudo file system (``/proc``) can fool."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".equican-probe-", dir=directory))
    except OSError as exc:
        raise ConfigError(f"{where}: expected {name} to be a writable path, got {path} "
                          f"({exc.strerror or exc} in {directory})") from None


def require_writable_dir(path: str | os.PathLike[str], *, where: str, name: str,
                         shown: Path | None = None) -> Path:
    """``path`` as a ``Path``, once it is known that it is (or can be made) a directory we can write in.

    Raises:
        ConfigError: ``path`` is an existing file, lies under a file, or its nearest existing directory is not
            writable.
    """
    path = require_path(path, where=where, name=name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: expected {name} to be a directory, got {path}, which is an existing file")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ConfigError(f"{where}: expected {name} to be a directory path, got {path}, under the file {base}")
    _probe(base, where=where, name=name, path=shown or path)
    return path


def require_writable_file(path: str | os.PathLike[str], *, where: str, name: str) -> Path:
    """``path`` as a ``Path``, once it is known that a file can be written there.

    Raises:
        ConfigError: ``path`` is a directory or an unwritable file, lies under a file, or its directory is not
            writable.
    """
    path = require_path(path, where=where, name=name)
    if path.is_dir():
        raise ConfigError(f"{where}: expected {name} to be a file path, got {path}, which is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{where}: expected {name} to be a writable file, got {path} (read-only)")
    if not _nearest_existing(path.parent).is_dir():
        raise ConfigError(f"{where}: expected {name} to be a file path, got {path}, under the file "
                          f"{_nearest_existing(path.parent)}")
    require_writable_dir(path.parent, where=where, name=name, shown=path)
    return path
