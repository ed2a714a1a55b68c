"""Atomic file writes: a reader (or a process started after a crash) sees the old file or the new one, never half of
one, and a writer that fails or is killed leaves no temporary file behind for long.

A file is written to ``.<name>.<pid>.tmp`` beside its target, flushed to disk (``fsync``), then renamed over the
target (``os.replace``, atomic on POSIX), and the directory entry is flushed too, so a power loss after the rename
cannot bring the old name back pointing at nothing. A writer killed before the rename leaves its temporary file;
the next writer to the same target deletes the temporaries of processes that are no longer alive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic", "write_text_atomic", "fsync_directory", "remove_stale_temporaries", "temporary_name"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def temporary_name(path: Path, suffix: str = "tmp") -> Path:
    """``.<name>.<pid>.<suffix>`` beside ``path``: the name this process writes to before the rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.{suffix}")


def remove_stale_temporaries(path: Path, suffix: str = "tmp") -> list[Path]:
    """Delete ``.<name>.<pid>.<suffix>`` files beside ``path`` left by writers that died mid-write (kill -9 skips the
    cleanup of an atomic save); those of live processes, this one included, are kept. Returns the deleted paths."""
    import shutil

    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.{re.escape(suffix)}$")
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.{suffix}"):
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries to disk (a no-op where the platform cannot open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which is flushed and renamed over
    ``path``. On any failure (an exception from ``write``, a full disk, a signal) the temporary file is removed and
    the old ``path``, if any, is left as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """[`write_atomic`][equican._atomic.write_atomic] of UTF-8 ``text``."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
