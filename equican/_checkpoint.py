"""Checkpoint files of [`equican.train`][equican.train]: written atomically, read back with every field checked.

A checkpoint with the right format tag can still be wrong inside (edited by hand, written by another version, or
forged): every field is checked for its type and range before anything is built from it, and a state that does not
fit the model its config builds is a [`DataError`][equican.errors.DataError] naming the file, not torch's
``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._atomic import remove_stale_temporaries, write_atomic
from .errors import DataError

__all__ = ["FORMAT", "save_atomic", "read_checkpoint", "check_fields", "load_states", "remove_stale_temporaries"]

FORMAT = "equican-checkpoint-1"
"""The format tag every checkpoint written by [`equican.train`][equican.train] carries."""


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


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` with ``torch.save`` to a temporary file beside ``path``, then rename it over ``path``
    ([`write_atomic`][equican._atomic.write_atomic])."""
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, its format tag and fields checked (``check_fields``).

    Raises:
        DataError: a missing, unreadable or foreign file, or a field of the wrong type (the message names it).
    """
    if not path.is_file():
        raise DataError(f"checkpoint {path}: expected a checkpoint file, got none ({path} does not exist)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        # Only the first line: torch's own message goes on to suggest weights_only=False, wrong for a torn file.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"checkpoint {path}: expected a file written by torch.save, got one that cannot be read "
                        f"({type(exc).__name__}: {first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"checkpoint {path} is not an equican checkpoint: expected format {FORMAT!r}, got "
                        f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}")
    check_fields(payload, path)
    return payload
