"""Atomic file writes: a reader (or a process started after a crash) sees the old file or the new one, never half of
one, and a writer that fails or is killed leaves no temporary file behind for long.

A file is written to ``.<name>.<pid>.tmp`` beside its target, flushed to disk (``fsync``), then renamed over the
target (``os.replace``, atomic on POSIX), and the directory entry is flushed too, so a power loss after the rename
cannot bring the old name back pointing at nothing. A writer killed before the rename leaves its temporary file;
the next writer to the same target deletes the temporaries of processes that are no longer alive.

A directory of files that belong together (a saved model's config and weights) is replaced as a whole by
[`write_directory_atomic`][equican._atomic.write_directory_atomic]: the new files are written into a sibling
``.<name>.<pid>.tmp`` directory, flushed, and the two directories are exchanged in one step (Linux
``renameat2(RENAME_EXCHANGE)``), or renamed into place when there was none. Where the exchange is not available, two
renames do it (the old directory to ``.<name>.<pid>.old``, the new one into place); a process killed between them
leaves no directory at the name, and [`recover_directory`][equican._atomic.recover_directory] (called by the next
writer and by readers that find nothing) renames the old one back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic", "write_text_atomic", "fsync_directory", "remove_stale_temporaries", "temporary_name",
           "write_directory_atomic", "recover_directory", "exchange", "read_directory", "ReplacedWhileReading"]


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


# ---------------------------------------------------------------------------------------------- whole directories
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_RENAMEAT2: list = []  # the libc function, looked up once ([None] where there is none)


def exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` (both must exist) in one atomic step: Linux ``renameat2`` with
    ``RENAME_EXCHANGE``. Returns False, having changed nothing, where the platform, the C library or the file system
    cannot (then two renames must do); raises ``OSError`` for any other failure."""
    if not _RENAMEAT2:
        function = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
                function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                function.restype = ctypes.c_int
            except (OSError, AttributeError):
                function = None
        _RENAMEAT2.append(function)
    function = _RENAMEAT2[0]
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # no such call, or not on this fs
        return False
    raise OSError(code, os.strerror(code), str(b))


def recover_directory(path: str | os.PathLike[str]) -> bool:
    """Finish the swap of a writer killed between the two renames of the fallback (no ``path``, its old contents in
    ``.<name>.<pid>.old`` of a dead process): rename the old directory back. Returns whether it did. Safe to call at any
    time; it changes nothing while ``path`` exists or the writer is alive."""
    path = Path(path)
    if os.path.lexists(path) or not path.name:
        return False
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.old$")
    backups = [c for c in path.parent.glob(f".{path.name}.*.old")
               if (m := pattern.match(c.name)) and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))]
    for backup in sorted(backups, key=lambda c: c.stat().st_mtime, reverse=True):
        try:
            os.rename(backup, path)
        except OSError:
            continue
        fsync_directory(path.parent)
        return True
    return False


def _fsync_tree(directory: Path) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_directory(Path(root))


def write_directory_atomic(path: str | os.PathLike[str], fill: Callable[[Path], object]) -> Path:
    """Replace the directory ``path`` as a whole: ``fill(tmp)`` writes the new contents into a fresh sibling directory
    ``.<name>.<pid>.tmp``, which is flushed (every file and the directory) and swapped in (see the module docstring).

    Whatever happens (an exception from ``fill``, a full disk, kill -9 at any instant), ``path`` afterwards holds the
    old contents or the new ones, complete, never a mix; a failure removes the temporary directory, and the
    temporaries of a killed writer are removed by the next call. Everything in the old directory is replaced: the
    caller makes sure that it holds nothing else worth keeping. A symbolic link at ``path`` is kept, and the
    directory it points to is replaced. The new directory takes the old one's permission bits. Returns ``path``.
    """
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    for suffix in ("tmp", "old"):
        remove_stale_temporaries(target, suffix)
    tmp = temporary_name(target)
    shutil.rmtree(tmp, ignore_errors=True)  # one of this process's, left by an interrupted cleanup
    tmp.mkdir()
    old: Path | None = None
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if target.is_dir():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        old = _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _swap_in(new: Path, target: Path) -> Path | None:
    """Put the complete directory ``new`` at ``target``; returns where the old contents now lie (to delete)."""
    if not os.path.lexists(target):
        os.rename(new, target)  # atomic; fails if another writer created a non-empty target meanwhile
        return None
    if exchange(new, target):
        return new
    backup = temporary_name(target, "old")
    os.rename(target, backup)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(backup, target)
        raise
    return backup


# ---------------------------------------------------------------------------------------------- reading them back
class ReplacedWhileReading(OSError):
    """[`read_directory`][equican._atomic.read_directory] found its directory replaced by a writer on every attempt."""


class _Swapped(Exception):
    pass


def _open_directory(path: Path) -> int | None:
    """A descriptor of the directory ``path`` (after [`recover_directory`][equican._atomic.recover_directory] where
    it is missing), or None where there is none or the platform cannot read relative to one."""
    if os.open not in os.supports_dir_fd:
        return None
    for attempt in range(2):
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            if attempt or not recover_directory(path):  # a writer killed mid-swap: put the old one back
                return None
        except OSError:
            return None
    return None


def read_directory(path: str | os.PathLike[str], read: Callable[[Callable[[str], int]], object], *,
                   attempts: int = 5) -> object:
    """The reading side of [`write_directory_atomic`][equican._atomic.write_directory_atomic]: ``read(open_file)``,
    where ``open_file(name)`` returns a read-only descriptor (the caller closes it) of the file ``name`` in ``path``.

    Every file comes from the one directory opened at the start (``dir_fd``), so a writer that swaps in a new directory
    meanwhile cannot give the reader some files of the old model and some of the new one. A file missing because the
    old directory was deleted after the swap restarts ``read`` on the new one; any other ``FileNotFoundError`` (a file
    really missing) and every other error propagate. Where the platform cannot open files relative to a directory,
    files are opened by path.

    Raises:
        ReplacedWhileReading: the directory was replaced during each of ``attempts`` reads.
    """
    path = Path(path)
    for _ in range(attempts):
        fd = _open_directory(path)

        def open_file(name: str) -> int:
            try:
                return os.open(name, os.O_RDONLY, dir_fd=fd) if fd is not None else os.open(path / name, os.O_RDONLY)
            except FileNotFoundError:
                if fd is not None and _replaced(path, fd):
                    raise _Swapped from None
                raise

        try:
            return read(open_file)
        except _Swapped:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    raise ReplacedWhileReading(errno.EAGAIN, f"replaced by a writer during each of {attempts} reads", str(path))


def _replaced(path: Path, fd: int) -> bool:
    try:
        now, then = os.stat(path), os.fstat(fd)
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)
