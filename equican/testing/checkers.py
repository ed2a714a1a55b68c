"""Equivariance and invariance checkers for functions of images (networks, canonicalizers, features).

Both return the measured error and the tolerance as a [`LawResult`][equican.testing.laws.LawResult] and raise
``AssertionError`` with both numbers when the check fails, so a passing check can still be logged and a failing one
says by how much it failed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import validation as V
from ..errors import ConfigError, DTypeError, ShapeError
from ..group import Group
from .laws import LawResult

__all__ = ["assert_equivariant", "assert_invariant"]

ImageFn = Callable[[torch.Tensor], torch.Tensor]


def _describe(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _prepare(fn: object, group: object, x: torch.Tensor, g: torch.Tensor | None,
             generator: torch.Generator | None, *, where: str) -> torch.Tensor:
    """Validate the common arguments and return the element batch ``g: (B, *param_shape)`` to test with."""
    if not callable(fn):
        raise ConfigError(f"{where}: expected fn to be callable, got {type(fn).__name__}")
    V.require_group(group, where=where)
    V.require_batch_images(x, where=where, name="x")
    if g is None:
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        elif not isinstance(generator, torch.Generator):
            raise DTypeError(f"{where}: expected generator to be a torch.Generator or None, "
                             f"got {type(generator).__name__}")
        return group.sample(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    group.check(g, where=where)
    V.require_same_placement(g, x, where=where, names=("g", "x"))
    return g


def _output(value: object, *, where: str, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise DTypeError(f"{where}: expected {what} to be a torch.Tensor, got {type(value).__name__}")
    return value


def _compare(law: str, lhs: torch.Tensor, rhs: torch.Tensor, *, atol: float, rtol: float, margin: int,
             where: str, equation: str) -> LawResult:
    """Largest ``|lhs - rhs|`` against ``atol + rtol·max|rhs|``; raise AssertionError when it exceeds it."""
    if lhs.shape != rhs.shape:
        raise AssertionError(f"{where}: {equation} compares tensors of different shapes, "
                             f"{V.fmt_shape(lhs.shape)} and {V.fmt_shape(rhs.shape)}")
    if margin:
        if lhs.ndim < 2 or min(lhs.shape[-2:]) <= 2 * margin:
            raise ShapeError(f"{where}: expected outputs of shape (..., H, W) with H, W > 2·margin = {2 * margin}, "
                             f"got {V.fmt_shape(lhs.shape)}")
        lhs = lhs[..., margin:-margin, margin:-margin]
        rhs = rhs[..., margin:-margin, margin:-margin]
    diff = (lhs.detach().double() - rhs.detach().double()).abs()
    error = float(diff.max()) if diff.numel() else 0.0
    scale = float(rhs.detach().double().abs().max()) if rhs.numel() else 0.0
    result = LawResult(law, error, atol + rtol * scale)
    if not result.passed:
        worst = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if diff.numel() else ()
        raise AssertionError(
            f"{where}: {equation} fails: max |difference| = {error:.4g} at index {worst}, above the tolerance "
            f"{result.tolerance:.4g} (atol {atol:.3g} + rtol {rtol:.3g} × max |reference| {scale:.3g})"
        )
    return result


def _tolerances(group: Group, dtype: torch.dtype, atol: float | None, rtol: float | None,
                where: str) -> tuple[float, float]:
    atol = group.tolerance(dtype).action if atol is None else atol
    rtol = 1e3 * torch.finfo(dtype).eps if rtol is None else rtol
    for key, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"{where}: expected {key} to be a non-negative number, got {value!r}")
    return float(atol), float(rtol)


def assert_equivariant(fn: ImageFn, group: Group, x: torch.Tensor, *, g: torch.Tensor | None = None,
                       generator: torch.Generator | None = None,
                       act_out: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                       atol: float | None = None, rtol: float | None = None, margin: int = 0) -> LawResult:
    """Assert ``fn(act(g, x)) ≈ act_out(g, fn(x))`` and return the measured error with its tolerance.

    Args:
        fn: the function under test, ``(B, C, H, W) -> (B, ...)``.
        group: the group acting on the input.
        x: input images ``(B, C, H, W)``.
        g: elements ``(B, *group.param_shape)``; None samples them with ``generator``.
        generator: used when ``g`` is None; None means ``torch.Generator(x.device).manual_seed(0)``.
        act_out: the action on outputs, ``act_out(g, y)``; default ``group.act`` (outputs are images).
        atol: absolute tolerance; default ``group.tolerance(x.dtype).action`` (the group's resampling error on
            band-limited images; 0 for exact groups).
        rtol: tolerance relative to ``max |act_out(g, fn(x))|``; default ``1e3·eps(x.dtype)``, room for the
            different summation order of a computation on transformed inputs.
        margin: pixels dropped from each side of the last two output dimensions before comparing (for functions
            with border effects, e.g. zero-padded convolutions under rotation).

    Returns:
        ``LawResult("equivariance", error, tolerance)`` with ``error = max |fn(act(g, x)) - act_out(g, fn(x))|``
        and ``tolerance = atol + rtol·max |act_out(g, fn(x))|``.

    Raises:
        AssertionError: when the error exceeds the tolerance (the message gives both and where the error peaks).
    """
    where = "assert_equivariant"
    g = _prepare(fn, group, x, g, generator, where=where)
    atol, rtol = _tolerances(group, x.dtype, atol, rtol, where)
    if act_out is None:
        act_out = group.act
    elif not callable(act_out):
        raise ConfigError(f"{where}: expected act_out to be callable or None, got {type(act_out).__name__}")
    name = _describe(fn)
    lhs = _output(fn(group.act(g, x)), where=where, what=f"{name}(act(g, x))")
    rhs = _output(act_out(g, _output(fn(x), where=where, what=f"{name}(x)")), where=where,
                  what="act_out(g, fn(x))")
    return _compare("equivariance", lhs, rhs, atol=atol, rtol=rtol, margin=margin, where=where,
                    equation=f"{name}(act(g, x)) = act_out(g, {name}(x)) under {group!r}")


def assert_invariant(fn: ImageFn, group: Group, x: torch.Tensor, *, g: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, atol: float | None = None,
                     rtol: float | None = None) -> LawResult:
    """Assert ``fn(act(g, x)) ≈ fn(x)`` and return the measured error with its tolerance.

    Arguments and defaults as in [`assert_equivariant`][equican.testing.checkers.assert_equivariant]; ``fn`` may return
    any shape ``(B, ...)``.

    Returns:
        ``LawResult("invariance", error, tolerance)`` with ``error = max |fn(act(g, x)) - fn(x)|`` and
        ``tolerance = atol + rtol·max |fn(x)|``.

    Raises:
        AssertionError: when the error exceeds the tolerance.
    """
    where = "assert_invariant"
    g = _prepare(fn, group, x, g, generator, where=where)
    atol, rtol = _tolerances(group, x.dtype, atol, rtol, where)
    name = _describe(fn)
    lhs = _output(fn(group.act(g, x)), where=where, what=f"{name}(act(g, x))")
    rhs = _output(fn(x), where=where, what=f"{name}(x)")
    return _compare("invariance", lhs, rhs, atol=atol, rtol=rtol, margin=0, where=where,
                    equation=f"{name}(act(g, x)) = {name}(x) under {group!r}")
