"""The canonicalization objective: train a canonicalizer to canonicalize, with or without labels.

A canonicalizer is good when it maps an input and every transformed copy of it to the same canonical form:
``canon(act(k, x)).x = canon(x).x`` for every ``k`` of the group. Nothing in a classification loss asks for that, so
this module states it as a loss that any learned kind ([`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer],
[`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer],
[`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer], a latent canonicalizer) can minimize
for any registered group:

```text
equivariance(x, k) = distance(compose(h(act(k, x)), k), h(x))²          (target "element")
                   = mean over the interior of (c(act(k, x)) − c(x))²     (target "input")
round_trip(x)      = ‖act(h(x)⁻¹, c(x)) − x‖² / ‖x‖²                     (relative round-trip error)
centre             = ‖mean over the batch of to_unconstrained(h(x))‖²        (the gauge)
loss               = equivariance + guard · max(round_trip − threshold, 0) + centre_weight · centre
```

with ``h(x)`` the canonicalizing element (``c(x) = act(h(x), x)``, ``h = g⁻¹``). ``h(kx) k = h(x)`` is the same
statement as ``g(kx) = k g(x)``, but needs no inversion: the sampled ``k`` enters through one ``compose``.

Why a guard: both targets are also minimized by a canonicalizer that maps every input to one blank image (for warps:
shrinking the content to nothing), which is invariant and useless. The round trip ``act(h⁻¹, act(h, x))`` gives back
``x`` for any invertible canonicalization, and loses the content that a collapsing one throws away, so its relative
error is near 0 for the first and near 1 for the second. It is computed with the group's own inverse action
([`Group.act_inverse`][equican.group.Group.act_inverse]). The guard is a hinge: resampling twice blurs a little
(a relative error of a few percent for moderate warps of digits), and a penalty on that would pull every
canonicalizer toward the identity; only a loss of content beyond ``threshold`` is penalized.

Why a centre term: equivariance fixes ``h`` only up to one element per orbit family: if ``h`` is equivariant, so is
``c·h`` for a constant ``c`` (for scaling, "canonical size" is any size). Left free, that constant drifts, typically
toward shrinking (smaller canonical forms also have smaller pixel differences). The centre term asks the canonical
form to be, on average over the data, the input itself, which pins the constant without penalizing the variation of
``h`` from input to input (unlike a prior toward the identity, which pulls every ``h`` to ``e``).

Both halves (``x`` and ``act(k, x)``) go through the canonicalizer in one call of ``2B`` inputs, so a training step
stays one forward call (as ``DistributedDataParallel`` requires).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import validation as V
from ..metrics import _interior
from ..errors import ConfigError, ShapeError
from .base import CanonResult, Canonicalizer

__all__ = ["TARGETS", "CanonicalizationLoss", "CanonicalizationTerms", "canonicalization_loss", "split_result"]

TARGETS = ("element", "input")
"""What [`canonicalization_loss`][equican.canon.objective.canonicalization_loss] compares: the predicted elements or the
canonical inputs."""


@dataclass(frozen=True)
class CanonicalizationLoss:
    """Settings of the canonicalization loss; validated when made.

    Attributes:
        target: ``"element"`` (squared group distance between ``h(act(k, x))·k`` and ``h(x)``: works for every group
            whose ``compose`` is differentiable in its first argument) or ``"input"`` (squared difference of the
            canonical inputs over their interior: for groups whose elements are not comparable, e.g. discrete ones).
        guard: weight of the round-trip (collapse) guard, ``>= 0``.
        threshold: relative round-trip error below which the guard costs nothing, in ``[0, 1)``.
        centre: weight of the centre (gauge) term, ``>= 0``.
        border: pixels on each side left out of the ``"input"`` target and of the round trip, where the action
            resamples from outside the image.
    """

    target: str = "element"
    guard: float = 1.0
    threshold: float = 0.2
    centre: float = 1.0
    border: int = 4

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"CanonicalizationLoss: expected target in {TARGETS}, got {self.target!r}")
        for key in ("guard", "centre"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"CanonicalizationLoss: expected {key} to be a finite number >= 0, got {value!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold < 1:
            raise ConfigError(f"CanonicalizationLoss: expected threshold in [0, 1), got {self.threshold!r}")
        V.require_int(self.border, low=0, where="CanonicalizationLoss", name="border")


@dataclass(frozen=True)
class CanonicalizationTerms:
    """Per-input terms of the loss for a batch of ``B`` inputs.

    Attributes:
        loss: ``equivariance + guard · max(round_trip − threshold, 0) + centre · ‖mean z‖²``, shape ``(B,)`` (the
            last term is one number for the batch, added to every input).
        equivariance: the target's term, ``(B,)``.
        round_trip: the collapse guard's relative error, ``(B,)`` (zeros when ``guard`` is 0: not computed).
        result: the canonicalizer's result on the untransformed inputs (``x``, ``h``, ``info`` of the first ``B``),
            for a task loss on ``result.x``.
    """

    loss: torch.Tensor
    equivariance: torch.Tensor
    round_trip: torch.Tensor
    result: CanonResult

    def stats(self) -> dict[str, float]:
        """Batch means for progress lines and histories: ``canon``, ``equivariance``, ``round_trip``."""
        return {"canon": float(self.loss.detach().mean()), "equivariance": float(self.equivariance.detach().mean()),
                "round_trip": float(self.round_trip.detach().mean())}


def split_result(result: CanonResult, batch: int) -> tuple[CanonResult, CanonResult]:
    """Split a result of ``2B`` inputs into the results of its first and last ``B``.

    Args:
        result: a [`CanonResult`][equican.canon.base.CanonResult] with ``h`` for ``2B`` inputs.
        batch: ``B``.

    Returns:
        The two halves; ``info`` tensors with leading size ``2B`` are split too, other entries are shared.
    """
    if result.h is None:
        raise ConfigError("split_result: expected a result that carries h (every built-in kind sets it)")

    def half(i: int) -> CanonResult:
        part = slice(i * batch, (i + 1) * batch)
        info = {k: (v[part] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == 2 * batch else v)
                for k, v in result.info.items()}
        return CanonResult(x=result.x[part], info=info, h=result.h[part], group=result._group)

    return half(0), half(1)


def canonicalization_loss(canonicalizer: Canonicalizer, x: torch.Tensor, k: torch.Tensor,
                          config: CanonicalizationLoss | None = None) -> CanonicalizationTerms:
    """The canonicalization loss of ``canonicalizer`` on ``x`` under the elements ``k`` (see the module docstring).

    Args:
        canonicalizer: any [`Canonicalizer`][equican.canon.base.Canonicalizer] whose result carries ``h`` (every built-in
            kind).
        x: inputs ``(B, C, H, W)``.
        k: one group element per input, ``(B, *group.param_shape)``, e.g. ``group.sample(B, generator=...)``; treated
            as data (no gradient flows into it).
        config: target, guard weight and border.

    Returns:
        [`CanonicalizationTerms`][equican.canon.objective.CanonicalizationTerms]: per-input loss and terms, and the
        result on ``x``. Differentiable in the canonicalizer's parameters.

    Raises:
        ShapeError, DTypeError, NonFiniteError: invalid ``x``; ShapeError: ``k`` not ``(B, *param_shape)``.
    """
    config = CanonicalizationLoss() if config is None else config
    group = canonicalizer.group
    V.require_batch_images(x, where="canonicalization_loss", name="x")
    if not isinstance(k, torch.Tensor) or tuple(k.shape) != (x.shape[0], *group.param_shape):
        got = V.fmt_shape(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        raise ShapeError(f"canonicalization_loss: expected k of shape ({x.shape[0]}, "
                         f"{', '.join(map(str, group.param_shape))}), got {got}")
    k = k.detach().to(dtype=x.dtype, device=x.device)
    b = x.shape[0]
    # Unchecked group calls: x was validated above, k is the caller's sample, and h comes from the canonicalizer,
    # which may predict a degenerate element (an affine map whose scale underflowed) that must cost loss, not raise.
    u = group.unchecked
    with torch.no_grad():
        kx = u.act(k, x)
    both = canonicalizer(torch.cat([x, kx]))
    res_x, res_kx = split_result(both, b)
    if config.target == "element":
        equivariance = u.distance(u.compose(res_kx.h, k), res_x.h).pow(2)
    else:
        diff = _interior(res_kx.x - res_x.x, config.border)
        equivariance = diff.pow(2).flatten(1).mean(dim=1)
    round_trip = torch.zeros_like(equivariance)
    if config.guard:
        back = _interior(u.act_inverse(res_x.h, res_x.x), config.border)
        ref = _interior(x, config.border)
        # Relative to the input's own energy, so the guard reads 1 for a blank canonical form at any contrast.
        round_trip = ((back - ref).pow(2).flatten(1).sum(dim=1)
                      / ref.pow(2).flatten(1).sum(dim=1).clamp_min(torch.finfo(x.dtype).tiny))
    loss = equivariance + config.guard * (round_trip - config.threshold).clamp_min(0)
    if config.centre:
        z = u.to_unconstrained(res_x.h)
        loss = loss + config.centre * z.mean(dim=0).pow(2).sum()
    return CanonicalizationTerms(loss=loss, equivariance=equivariance,
                                 round_trip=round_trip, result=res_x)

