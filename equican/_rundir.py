"""Run directories that protect themselves: one writer at a time, and no run replaced without being asked.

* **A lock per directory in use.** [`RunLock`][equican._rundir.RunLock] takes an exclusive ``flock`` on ``.lock``
  inside the directory for as long as a run (``equican train``, a comparison, a merge) writes there. A second
  writer gets a [`ConfigError`][equican.errors.ConfigError] naming the directory and the process that holds it. The
  operating system releases a ``flock`` when its holder dies, however it dies (``kill -9`` included), so a crash
  never leaves a stale lock: the ``.lock`` file a killed run leaves behind is locked by nobody and is taken over by
  the next run. A run that ends normally removes it. Under ``torchrun`` only rank 0 takes it. ``flock`` is
  advisory and local: it keeps equican processes on one machine apart, not other programs, and on network file
  systems it is only as good as the server's lock support.
* **No silent replacement.** A fresh run (no ``resume``) into a directory that already holds a run (a
  ``checkpoint.pt`` or a ``metrics.json``) is refused unless ``overwrite`` is given; with it, the old run's files
  are removed under the lock before the new run starts, so the directory never mixes two runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from ._checkpoint import read_checkpoint
from ._paths import require_path
from .config import TrainConfig
from .errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the other checks still hold
    fcntl = None  # type: ignore[assignment]

__all__ = ["CHECKPOINT", "METRICS", "EVALUATION", "LOCK", "RUNTIME_FIELDS", "RunLock", "run_files",
           "check_run_directory", "clear_run", "resume_payload"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
EVALUATION = "evaluation.json"
LOCK = ".lock"
RUNTIME_FIELDS = ("out", "device", "threads", "workers", "progress", "eval")
"""Fields that may differ between a run and the checkpoint it resumes: they change where and how it runs, not what
it computes."""


class RunLock:
    """An exclusive lock on a directory, held from ``__enter__`` (or [`acquire`][equican._rundir.RunLock.acquire])
    to ``__exit__`` (or [`release`][equican._rundir.RunLock.release]); the directory is created if needed.

    Args:
        directory: the directory to lock.
        where: the caller, for the message (``"train"``, ``"compare"``).

    Raises:
        ConfigError: another process holds the lock (the message names the directory and that process), or the
            lock file cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str], *, where: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.where = where
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.where}: expected a run directory that can be created, got {self.directory} "
                              f"({exc.strerror or exc})") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"{self.where}: expected to create the lock {self.path}, got "
                                  f"{exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"{self.where}: expected the run directory {self.directory} to be free, got one in use by "
                    f"another run ({f'process {holder}, ' if holder else ''}lock {self.path}); wait for it to "
                    f"finish or choose another output directory") from None
            # The previous holder removes the file just before it unlocks: a lock on a file that is no longer
            # (or no longer the same file) at the path protects nothing, so take the one that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and unlock (in that order: see ``acquire``); a no-op when not held."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def run_files(out: Path) -> list[str]:
    """The files in ``out`` that make it hold a run: ``checkpoint.pt`` and ``metrics.json``, those present."""
    return [name for name in (CHECKPOINT, METRICS) if os.path.lexists(out / name)]


def _resume_source(out: Path, resume: Any) -> Path | None:
    if resume is True:
        return out / CHECKPOINT
    return Path(resume) if resume not in (False, None) else None


def check_run_directory(out: str | os.PathLike[str], *, resume: Any, overwrite: bool, where: str = "train") -> None:
    """Refuse a fresh run into a directory that holds one, unless ``overwrite``.

    A run that resumes its own directory's checkpoint (``resume=True``, or the path of ``out/checkpoint.pt``) may
    write there; one that resumes another directory's checkpoint into ``out`` is a fresh run as far as ``out`` is
    concerned.

    Raises:
        ConfigError: ``overwrite`` not a bool or ``resume`` neither a bool nor a path; ``overwrite`` with
            ``resume=True`` (nothing to overwrite: the run continues); or ``out`` holds a run and neither
            ``overwrite`` nor a resume of that run was asked for.
    """
    if not isinstance(overwrite, bool):
        raise ConfigError(f"{where}: expected overwrite to be a bool, got {overwrite!r}")
    if not (resume is None or isinstance(resume, bool)):
        require_path(resume, where=where, name="resume (a checkpoint path, or True or False)")
    out = Path(out)
    if overwrite and resume is True:
        raise ConfigError(f"{where}: expected --overwrite (overwrite=True) or --resume (resume=True), got both: "
                          f"resuming continues the run in {out}, so there is nothing to overwrite")
    source = _resume_source(out, resume)
    if overwrite or (source is not None and _same_file(source, out / CHECKPOINT)):
        return
    found = run_files(out)
    if found:
        raise ConfigError(f"{where}: expected the output directory {out} to hold no run, got one that does "
                          f"({', '.join(found)}); pass --overwrite (overwrite=True) to replace it, --resume to "
                          f"continue it, or choose another output directory")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def clear_run(out: str | os.PathLike[str], *, resume: Any, where: str = "train") -> None:
    """Remove the run files of ``out`` (``checkpoint.pt``, ``metrics.json``, ``evaluation.json``) before an
    ``overwrite`` run starts, keeping a checkpoint the run resumes from. Call it under the lock.

    Raises:
        ConfigError: a file cannot be removed (e.g. a directory in its place).
    """
    out = Path(out)
    source = _resume_source(out, resume)
    for name in (METRICS, EVALUATION, CHECKPOINT):
        path = out / name
        if name == CHECKPOINT and source is not None and _same_file(source, path):
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"{where}: expected to remove the previous run's {path} (--overwrite), got "
                              f"{exc.strerror or exc}") from None


def resume_payload(config: TrainConfig, resume: Any) -> dict[str, Any] | None:
    """The checkpoint ``resume`` names (None for a fresh run), once its config is known to match ``config`` in
    everything but [`RUNTIME_FIELDS`][equican._rundir.RUNTIME_FIELDS].

    Raises:
        DataError: a missing or corrupt checkpoint. ConfigError: a config that differs from the checkpoint's.
    """
    if resume is False or resume is None:
        return None
    path = Path(config.out) / CHECKPOINT if resume is True else Path(resume)
    payload = read_checkpoint(path)
    saved = TrainConfig.from_dict(payload["config"], source=f"checkpoint {path}").to_dict()
    now = config.to_dict()
    differ = [k for k in now if k not in RUNTIME_FIELDS and now[k] != saved[k]]
    if differ:
        raise ConfigError(f"resume: the config differs from the checkpoint {path} in {differ}; a run can only "
                          f"resume with the settings it started with (except {list(RUNTIME_FIELDS)})")
    return payload
