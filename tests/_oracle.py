"""The fuzz and regression tests' oracle: what counts as a correct answer to bad or extreme input.

Either a typed error (a subclass of ``EquicanError``) whose message follows the house pattern "Where: expected X,
got Y", or a finite result of the expected shape. Never an untyped exception, never a silent NaN/inf. The CLI's
version: exit status 2 and exactly one line on stderr, no traceback; or success.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from equican.cli import main
from equican.errors import EquicanError, UnknownNameError

_PATTERN = re.compile(r"expected .+ got ", re.DOTALL)


def check_typed(exc: BaseException) -> None:
    """Fail unless ``exc`` is an ``EquicanError`` with an "expected ... got ..." message."""
    if not isinstance(exc, EquicanError):
        raise AssertionError(f"untyped exception {type(exc).__name__}: {exc}") from exc
    if isinstance(exc, UnknownNameError) and str(exc).startswith("unknown "):
        return  # the registry-miss form: "unknown group 'x': registered groups are ...; did you mean ...?"
    if not _PATTERN.search(str(exc)):
        raise AssertionError(f"{type(exc).__name__} without 'expected ... got ...': {exc}")


def outcome(fn: Callable[[], Any], *, shape: Sequence[int] | None = None) -> Any:
    """Run ``fn``: return its result when that is acceptable, None when it raised an acceptable typed error.

    Acceptable results: tensors (or a ``CanonResult``'s ``x`` and ``g``) that are finite, of ``shape`` when given.

    Raises:
        AssertionError: an untyped exception, a typed one without the house message, a non-finite or misshapen
            result.
    """
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - the oracle judges every exception
        check_typed(exc)
        return None
    tensors = [result] if isinstance(result, torch.Tensor) else [
        getattr(result, key) for key in ("x", "g") if isinstance(getattr(result, key, None), torch.Tensor)]
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AssertionError(f"silent non-finite result: {int((~torch.isfinite(t)).sum())} NaN/inf entries")
    if shape is not None and tensors and tuple(tensors[0].shape) != tuple(shape):
        raise AssertionError(f"result of shape {tuple(tensors[0].shape)}, expected {tuple(shape)}")
    return result


def run_cli(*argv: object) -> tuple[int, str, str]:
    """``equican *argv`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def check_cli_rejects(status: int, stdout: str, stderr: str, command: str | None = None, *,
                      quiet: bool = True) -> None:
    """Exit 2 and exactly one line on stderr, ``equican COMMAND: error: ...`` (``command`` None: any prefix, as
    argparse words it for the top-level parser), no traceback; with ``quiet``, nothing on stdout (no work started)."""
    assert status == 2, (status, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    prefix = f"equican {command}: error: " if command is not None else "equican"
    assert lines[0].startswith(prefix) and ": error: " in lines[0], lines[0]
    if quiet:
        assert stdout == "", stdout
