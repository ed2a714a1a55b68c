"""Checks of a checkpoint's contents and of its directory, for [`equican.train`][equican.train].

A checkpoint with the right format tag can still be wrong inside (edited by hand, written by another version, or
forged): every field is checked for its type and range before anything is built from it, and a state that does not
fit the model its config builds is a [`DataError`][equican.errors.DataError] naming the file, not torch's
``RuntimeError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import DataError

__all__ = ["check_fields", "load_states", "remove_stale_temporaries"]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# field -> (what it must be, in words; the test)
_FIELDS: dict[str, tuple[str, Any]] = {
    "config": ("a mapping", lambda v: isinstance(v, Mapping)),
    "epoch": ("an int >= 1", _positive_int),
    "objective": ("a mapping of names to tensors",
                  lambda v: isinstance(v, Mapping) and all(isinstance(t, torch.Tensor) for t in v.values())),
    "optimizer": ("a mapping", lambda v: isinstance(v, Mapping)),
    "scheduler": ("a mapping", lambda v: isinstance(v, Mapping)),
    "history": ("a list", lambda v: isinstance(v, list)),
    "input_shape": ("three ints >= 1 (C, H, W)",
                    lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_positive_int, v))),
    "num_classes": ("an int >= 1", _positive_int),
}


def check_fields(payload: Mapping[str, Any], path: Path) -> None:
    """Raise [`DataError`][equican.errors.DataError] unless every field of the checkpoint ``payload`` is present and
    of its type."""
    for key, (expected, ok) in _FIELDS.items():
        if key not in payload:
            raise DataError(f"checkpoint {path}: expected a field {key!r} ({expected}), got none")
        if not ok(payload[key]):
            got = repr(payload[key]) if not isinstance(payload[key], Mapping) else type(payload[key]).__name__
            raise DataError(f"checkpoint {path}: expected field {key!r} to be {expected}, got {got[:80]}")


def load_states(path: Path, **pairs: tuple[Any, Any]) -> None:
    """``module.load_state_dict(state)`` for each ``name=(module, state)``; a state that does not fit (missing or
    unexpected keys, other tensor shapes, another optimizer's layout) raises [`DataError`][equican.errors.DataError]."""
    for name, (module, state) in pairs.items():
        try:
            module.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            # torch's load_state_dict puts its title on line 1 and the first mismatch on line 2.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:2]
            raise DataError(f"checkpoint {path}: expected the {name} state to fit the run's {name}, got one that "
                            f"does not ({type(exc).__name__}: {' '.join(lines)[:240]})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files beside ``path`` left by writers that died mid-write (kill -9 skips the
    cleanup of an atomic save); files of live processes, this one included, are kept. Returns the deleted paths."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.tmp$")
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
