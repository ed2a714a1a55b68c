"""Checkers for canonicalizers: invariance of the canonical input, equivariance of the element, round trip.

Each checker draws group elements ``k`` with a seeded generator, transforms the inputs by them and compares; each
``assert_*`` raises ``AssertionError`` with the worst case when the error exceeds ``atol``. Errors are measured on an
interior crop (``crop`` pixels removed from every side) so that content the zero-padded actions of some groups move
across the border does not count. Exact for the equivariant canonicalizer on C_n; for learned canonicalizers use
them statistically (``reduction="mean"``) after training.
"""

from __future__ import annotations

import torch

from ..canon.base import Canonicalizer
from ..errors import ConfigError

__all__ = ["canonicalizer_invariance_error", "g_equivariance_error", "round_trip_error",
           "assert_canonicalizer_invariant", "assert_g_equivariant", "assert_round_trip"]


def _crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    return x[..., crop:x.shape[-2] - crop, crop:x.shape[-1] - crop] if crop else x


def _elements(canon: Canonicalizer, batch: int, x: torch.Tensor, generator: torch.Generator | None,
              seed: int) -> torch.Tensor:
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    return canon.group.sample(batch, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def canonicalizer_invariance_error(canon: Canonicalizer, x: torch.Tensor, *, generator: torch.Generator | None = None,
                                   seed: int = 0, crop: int = 0) -> torch.Tensor:
    """``max |canon(act(k, x)).x - canon(x).x|`` per input over the interior crop, shape ``(B,)``.

    Args:
        canon: the canonicalizer (used in its current train/eval mode).
        x: inputs ``(B, C, H, W)``.
        generator: draws the ``k`` (default: a generator seeded with ``seed``).
        seed: the seed of the default generator.
        crop: pixels ignored at every border.
    """
    k = _elements(canon, x.shape[0], x, generator, seed)
    diff = canon(canon.group.act(k, x)).x - canon(x).x
    return _crop(diff, crop).abs().flatten(1).amax(dim=1)


@torch.no_grad()
def g_equivariance_error(canon: Canonicalizer, x: torch.Tensor, *, generator: torch.Generator | None = None,
                         seed: int = 0) -> torch.Tensor:
    """``distance(canon(act(k, x)).g, compose(k, canon(x).g))`` per input, shape ``(B,)``."""
    group = canon.group
    k = _elements(canon, x.shape[0], x, generator, seed)
    return group.distance(canon(group.act(k, x)).g, group.compose(k, canon(x).g))


@torch.no_grad()
def round_trip_error(canon: Canonicalizer, x: torch.Tensor, *, crop: int = 0) -> torch.Tensor:
    """``max |act(g, canonical x) - x|`` per input over the interior crop, shape ``(B,)``."""
    res = canon(x)
    return _crop(canon.group.act(res.g, res.x) - x, crop).abs().flatten(1).amax(dim=1)


def _assert(name: str, err: torch.Tensor, atol: float, reduction: str) -> None:
    if reduction not in ("max", "mean"):
        raise ConfigError(f"{name}: expected reduction 'max' or 'mean', got {reduction!r}")
    value = float(err.max() if reduction == "max" else err.mean())
    if not value <= atol:  # also fails on NaN
        worst = int(err.argmax())
        raise AssertionError(f"{name}: {reduction} error {value:.3g} exceeds atol {atol:.3g} "
                             f"(worst input {worst}: {float(err[worst]):.3g}; errors {err.tolist()})")


def assert_canonicalizer_invariant(canon: Canonicalizer, x: torch.Tensor, *, atol: float,
                                   generator: torch.Generator | None = None, seed: int = 0, crop: int = 0,
                                   reduction: str = "max") -> None:
    """Assert ``canon(act(k, x)).x ≈ canon(x).x`` for random ``k`` (see
    [`canonicalizer_invariance_error`][equican.testing.canon.canonicalizer_invariance_error]).

    Args:
        canon: the canonicalizer (used in its current train/eval mode).
        x: inputs ``(B, C, H, W)``.
        atol: the largest accepted error (of the reduction).
        generator: draws the ``k`` (default: a generator seeded with ``seed``).
        seed: the seed of the default generator.
        crop: pixels ignored at every border.
        reduction: ``"max"`` (every input within ``atol``) or ``"mean"`` (on average, for learned canonicalizers)
            over the per-input errors ``(B,)``.

    Raises:
        AssertionError: the reduced error exceeds ``atol`` (or is NaN); the message lists the per-input errors.
    """
    err = canonicalizer_invariance_error(canon, x, generator=generator, seed=seed, crop=crop)
    _assert("assert_canonicalizer_invariant", err, atol, reduction)


def assert_g_equivariant(canon: Canonicalizer, x: torch.Tensor, *, atol: float,
                         generator: torch.Generator | None = None, seed: int = 0, reduction: str = "max") -> None:
    """Assert ``canon(act(k, x)).g ≈ compose(k, canon(x).g)`` for random ``k`` (see
    [`g_equivariance_error`][equican.testing.canon.g_equivariance_error]).

    Args:
        canon: the canonicalizer (used in its current train/eval mode).
        x: inputs ``(B, C, H, W)``.
        atol: the largest accepted ``group.distance`` (of the reduction).
        generator: draws the ``k`` (default: a generator seeded with ``seed``).
        seed: the seed of the default generator.
        reduction: ``"max"`` or ``"mean"`` over the per-input errors ``(B,)``.

    Raises:
        AssertionError: the reduced error exceeds ``atol`` (or is NaN); the message lists the per-input errors.
    """
    err = g_equivariance_error(canon, x, generator=generator, seed=seed)
    _assert("assert_g_equivariant", err, atol, reduction)


def assert_round_trip(canon: Canonicalizer, x: torch.Tensor, *, atol: float, crop: int = 0,
                      reduction: str = "max") -> None:
    """Assert ``act(g, canon(x).x) ≈ x`` (see [`round_trip_error`][equican.testing.canon.round_trip_error]).

    Args:
        canon: the canonicalizer.
        x: inputs ``(B, C, H, W)``.
        atol: the largest accepted pixel error (of the reduction).
        crop: pixels ignored at every border.
        reduction: ``"max"`` or ``"mean"`` over the per-input errors ``(B,)``.

    Raises:
        AssertionError: the reduced error exceeds ``atol`` (or is NaN); the message lists the per-input errors.
    """
    _assert("assert_round_trip", round_trip_error(canon, x, crop=crop), atol, reduction)
