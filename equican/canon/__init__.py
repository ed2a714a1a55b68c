"""Canonicalizers: networks and solvers that predict, for each input, the group element that canonicalizes it.

Every kind shares one interface, [`Canonicalizer`][equican.canon.base.Canonicalizer]: ``forward(x)`` returns a
[`CanonResult`][equican.canon.base.CanonResult] holding the canonical input ``act(inverse(g), x)``, the element ``g`` and
solver statistics. The kinds differ only in how they find ``g``:

* [`IdentityCanonicalizer`][equican.canon.base.IdentityCanonicalizer]: ``g = e`` (the baseline without canonicalization).
* [`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer]: one pass of an update network (the "no fixed point"
  ablation).
* [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]: the fixed point of that update, solved with torchdeq (the
  paper's DEC).
* [`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer]: gradient descent (or Adam) on an
  energy of the canonical input.
* [`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer]: an escnn C_n-equivariant network
  scoring the n rotations (needs escnn).

Convention:
    Shared by every kind. A canonicalizer works in the group's unconstrained chart
    ([`from_unconstrained`][equican.group.Group.from_unconstrained]), and the chart parametrizes the *canonicalizing*
    element ``h = g⁻¹``: ``z ↦ h = from_unconstrained(z)``, canonical input ``act(h, x)``, returned element
    ``g = inverse(h)``. Searching over ``h`` rather than ``g`` means every solver iteration costs one action and no
    inversion; the single inversion happens once, at the end. ``z = 0`` is the identity, the starting point of every
    iterative kind.

    For discrete groups (``group.discrete``) the chart must be one score per element, shape ``(n,)``, with
    ``from_unconstrained`` picking the highest score (as [`CyclicRotation2d`][equican_groups.rotation.CyclicRotation2d] does).
    The canonical input then carries a straight-through gradient: its value is the action of the arg-max element, its
    gradient that of the softmax-weighted mixture of all ``n`` actions, so that the scores can be trained.

Nothing is stored on the module between calls; the caller keeps the [`CanonResult`][equican.canon.base.CanonResult] to map
outputs back ([`Canonicalizer.uncanonicalize`][equican.canon.base.Canonicalizer.uncanonicalize], used by
[`Canonicalized`][equican.canon.wrapper.Canonicalized]).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConvergenceWarning
from .base import CanonResult, Canonicalizer, IdentityCanonicalizer
from .registry import canonicalizer_kind, list_canonicalizers, make_canonicalizer, register_canonicalizer

__all__ = ["CanonResult", "Canonicalizer", "IdentityCanonicalizer", "DirectCanonicalizer", "DEQCanonicalizer",
           "DEQConfig", "SolverSettings", "ConvergenceWarning", "OptimizationCanonicalizer", "OptimizationConfig",
           "UpdateNet", "Canonicalized", "EquivariantCanonicalizer", "make_canonicalizer", "list_canonicalizers",
           "register_canonicalizer", "canonicalizer_kind"]

# The kinds load on first use (PEP 562): the DEQ imports torchdeq, the equivariant kind escnn (optional), and
# `import equican` stays light.
_LAZY = {"DirectCanonicalizer": "direct", "DEQCanonicalizer": "deq", "DEQConfig": "deq", "SolverSettings": "deq",
         "OptimizationCanonicalizer": "optimize", "OptimizationConfig": "optimize", "UpdateNet": "nets",
         "Canonicalized": "wrapper", "EquivariantCanonicalizer": "equivariant"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
