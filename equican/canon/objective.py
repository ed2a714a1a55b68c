"""The canonicalization objective: train a canonicalizer to canonicalize, with or without labels.

A canonicalizer is good when it maps an input and every transformed copy of it to the same canonical form:
``canon(act(k, x)).x = canon(x).x`` for every ``k`` of the group. Nothing in a classification loss asks for that, so
this module states it as a loss that any learned kind ([`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer],
[`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer],
[`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer], a latent canonicalizer) can minimize
for any registered group:

```text
equivariance(x, x') = mean over the interior of (c(x') − c(x))²                  (target "input", the default)
                    = distance(e, h(x)⁻¹ · h(x') · k)²                            (target "element", x' = act(k, x))
round_trip(x)       = ‖act(h(x)⁻¹, c(x)) − x‖² / ‖x‖²                            (relative round-trip error)
ink                 = (mean log m)² + (mean log r)²,  m = ink mass of c(x) / of x,  r = ink radius of c(x) / of x
loss                = equivariance + guard · max(round_trip − threshold, 0) + ink_weight · ink (+ centre · ‖mean z‖²)
```

with ``h(x)`` the canonicalizing element (``c(x) = act(h(x), x)``, ``h = g⁻¹``) and ``x'`` the second view of ``x``:
``act(k, x)`` for elements ``k`` drawn from the group (by an
[`ElementDistribution`][equican.canon.objective.ElementDistribution]), or a second rendering of the same content
given by the data (``pair``: Locally Scaled MNIST's rescalings, the nuisance itself).

Every term is invariant to the choice of frame. Equivariance fixes ``h`` only up to a constant: if ``h`` is
equivariant, so is ``c·h`` (for scaling, "canonical size" is any size). The element target compares
``h(x)⁻¹·h(x')·k`` with the identity, a left-invariant distance (``(c·a)⁻¹(c·b) = a⁻¹b``), so the constant cannot
change it; comparing ``h(x')·k`` with ``h(x)`` directly would not be (for an affine ``c = s·I`` that distance scales
as ``s²``, which a canonicalizer lowers by shrinking everything). The input target does depend on the constant: a
canonicalizer that shrinks every input to a dot also has small pixel differences. That is what the ink term prices:
a constant shrink by ``s`` multiplies every canonical form's ink mass by ``s²`` and its ink radius (the RMS distance
of the ink from its centroid) by ``s``, so it costs ``5 log² s``, while per-input normalization (a small digit
enlarged, a large one shrunk) costs nothing as long as the batch's mean log ratios stay 0. Ink is ``|x|`` summed over
channels, so the term applies to signed feature maps too; for groups that preserve both (rotations) it is 0.

The round-trip guard sees what the ink term cannot: content lost to a non-invertible canonicalization (a warp that
folds or pushes content out of the image). It is a hinge, since resampling twice blurs a little (a few percent for
moderate warps of digits). The ``centre`` term (off by default) asks the mean chart parameter to be 0: it pins the
constant too, but in a chart-dependent way, and is kept for comparison with earlier runs.

Both views go through the canonicalizer in one call of ``2B`` inputs, so a training step stays one forward call (as
``DistributedDataParallel`` requires).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import validation as V
from .._metric_data import _interior
from ..metrics import ink_moments
from ..errors import ConfigError, ShapeError
from ..group import Group
from .base import CanonResult, Canonicalizer

__all__ = ["TARGETS", "CanonicalizationLoss", "CanonicalizationTerms", "ElementDistribution", "canonicalization_loss",
           "split_result"]

TARGETS = ("element", "input")
"""What [`canonicalization_loss`][equican.canon.objective.canonicalization_loss] compares: the predicted elements or the
canonical inputs."""


def _require_weight(value: object, *, where: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}: expected {name} to be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class CanonicalizationLoss:
    """Settings of the canonicalization loss; validated when made.

    Attributes:
        target: ``"input"`` (squared difference of the canonical inputs over their interior: any group, and the
            only target for a ``pair`` given by the data) or ``"element"`` (squared left-invariant group distance
            from ``h(x)⁻¹·h(act(k, x))·k`` to the identity: needs ``compose`` and ``inverse`` differentiable in their
            arguments). Measured on one-digit Locally Scaled MNIST, the input target trains the monotone
            canonicalizer to a lower canonical-form error (see ``docs/results/canonicalization.md``).
        guard: weight of the round-trip (lost content) guard, ``>= 0``.
        threshold: relative round-trip error below which the guard costs nothing, in ``[0, 1)``.
        ink: weight of the ink term (the batch's mean log ink mass and radius ratios, squared), ``>= 0``: the guard
            against a canonicalizer that shrinks (or blows up) every input.
        centre: weight of the chart-dependent centre term ``‖mean z‖²``, ``>= 0`` (0 by default; see the module
            docstring).
        border: pixels on each side left out of the ``"input"`` target and of the round trip, where the action
            resamples from outside the image.
        blur: standard deviation in pixels of a Gaussian blur applied to both canonical forms before the
            ``"input"`` target compares them (0: none). Two thin strokes that do not overlap have no pixel gradient
            toward each other; blurred, they do, so a blur widens the range of misalignments the loss can correct.
    """

    target: str = "input"
    guard: float = 1.0
    threshold: float = 0.2
    ink: float = 1.0
    centre: float = 0.0
    border: int = 4
    blur: float = 0.0

    def __post_init__(self) -> None:
        where = "CanonicalizationLoss"
        if self.target not in TARGETS:
            raise ConfigError(f"{where}: expected target in {TARGETS}, got {self.target!r}")
        for key in ("guard", "ink", "centre", "blur"):
            _require_weight(getattr(self, key), where=where, name=key)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold < 1:
            raise ConfigError(f"{where}: expected threshold in [0, 1), got {self.threshold!r}")
        V.require_int(self.border, low=0, where=where, name="border")


@dataclass(frozen=True)
class ElementDistribution:
    """The distribution of the loss's elements ``k``: the group's own sampler, rescaled in its chart.

    A draw ``k`` of the group's sampler becomes ``from_unconstrained(t · to_unconstrained(k))``: ``t = 1`` keeps the
    sampler, ``t = 4`` draws monotone warps with four times the logit range (or rotations of four times the angle,
    scalings of four times the log factor), ``t = 0`` the identity. ``strengths`` with several values is an equal
    mixture (element ``i`` of a batch uses ``strengths[i % len(strengths)]``); ``warmup`` is a curriculum: the
    strengths grow linearly from 0 over the first ``warmup`` steps (``progress`` counts them).

    Why: a group's default sampler is sized for evaluating invariance, and may be far weaker than the nuisance in
    the data (monotone scaling's sampler moves strokes by about half a pixel at 24 px, while undoing a digit's
    rescaling needs logit ranges 5-10 times larger); a canonicalizer trained on it learns to predict small warps.

    Attributes:
        strengths: non-negative chart scales, at least one.
        warmup: steps of the curriculum, ``>= 0`` (0: none).
    """

    strengths: tuple[float, ...] = (1.0,)
    warmup: int = 0

    def __post_init__(self) -> None:
        where = "ElementDistribution"
        values = (self.strengths,) if isinstance(self.strengths, (int, float)) else self.strengths
        if not isinstance(values, (tuple, list)) or not values:
            raise ConfigError(f"{where}: expected strengths to be a non-empty tuple of numbers, got {self.strengths!r}")
        for value in values:
            _require_weight(value, where=where, name="every strength")
        object.__setattr__(self, "strengths", tuple(float(v) for v in values))
        V.require_int(self.warmup, low=0, where=where, name="warmup")

    def scale(self, k: torch.Tensor, group: Group, step: int = 0) -> torch.Tensor:
        """Rescale the sampler's draws ``k: (B, *param_shape)`` (see the class docstring) at curriculum ``step``.

        Raises:
            ConfigError: ``group`` is not a Group or ``step`` not an int ``>= 0``.
            ShapeError: ``k`` is not ``(B, *param_shape)``; DTypeError, NonFiniteError, InvalidElementError: not
                float32/float64, not finite, not valid elements of ``group`` (checked before the group's members
                run unchecked on it).
        """
        where = "ElementDistribution.scale"
        V.require_group(group, where=where)
        group.check(k, name="k", where=where)
        V.require_int(step, low=0, where=where, name="step")
        return self.scale_draws(k, group, step)

    def scale_draws(self, k: torch.Tensor, group: Group, step: int = 0) -> torch.Tensor:
        """``scale`` of the group's own draws ``k: (B, *param_shape)`` (from its ``sample``, e.g. through
        ``keyed_elements``), unchecked: the caller guarantees they are valid elements (a training step should not pay
        a full element check for what the sampler made)."""
        ramp = min(1.0, step / self.warmup) if self.warmup else 1.0
        if self.strengths == (1.0,) and ramp == 1.0:
            return k
        t = torch.tensor(self.strengths, dtype=k.dtype, device=k.device).repeat(math.ceil(k.shape[0] / len(self.strengths)))
        t = (ramp * t[:k.shape[0]]).view(-1, *([1] * len(group.unconstrained_shape)))
        u = group.unchecked
        return u.from_unconstrained(t * u.to_unconstrained(k))

    def sample(self, group: Group, batch: int, *, generator: torch.Generator | None = None, step: int = 0,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` elements ``(batch, *param_shape)`` of ``group`` from ``generator`` at curriculum ``step``."""
        V.require_group(group, where="ElementDistribution.sample")
        V.require_int(step, low=0, where="ElementDistribution.sample", name="step")
        return self.scale_draws(group.sample(batch, generator=generator, device=device, dtype=dtype), group, step)


@dataclass(frozen=True)
class CanonicalizationTerms:
    """Per-input terms of the loss for a batch of ``B`` inputs.

    Attributes:
        loss: ``equivariance + guard · max(round_trip − threshold, 0) + ink · ink_term + centre · ‖mean z‖²``, shape
            ``(B,)`` (the last two are one number for the batch, added to every input).
        equivariance: the target's term, ``(B,)``.
        round_trip: the collapse guard's relative error, ``(B,)`` (zeros when ``guard`` is 0: not computed).
        ink: ``(mean log m)² + (mean log r)²``, a scalar (0 when its weight is 0: not computed).
        result: the canonicalizer's result on the first view ``x`` (``x``, ``h``, ``info`` of the first ``B``), for a
            task loss on ``result.x``.
    """

    loss: torch.Tensor
    equivariance: torch.Tensor
    round_trip: torch.Tensor
    ink: torch.Tensor
    result: CanonResult

    def stats(self) -> dict[str, float]:
        """Batch means for progress lines and histories: ``canon``, ``equivariance``, ``round_trip``, ``ink``."""
        return {"canon": float(self.loss.detach().mean()), "equivariance": float(self.equivariance.detach().mean()),
                "round_trip": float(self.round_trip.detach().mean()), "ink": float(self.ink.detach())}


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


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x: (B, C, H, W)`` convolved with a normalized Gaussian of ``sigma`` pixels (zero padding), per channel."""
    if not sigma:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    # Separable: one pass along each axis; linear, so blurring the difference is the difference of the blurs.
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def _log_ink_ratios(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log`` of the ink mass and radius ratios of canonical forms ``c`` to inputs ``x`` (both ``(B, C, H, W)``):
    ``(2, B)``."""
    tiny = torch.finfo(x.dtype).tiny
    (mc, rc), (mx, rx) = ink_moments(c), ink_moments(x)
    return torch.stack([torch.log(mc.clamp_min(tiny) / mx.clamp_min(tiny)),
                        torch.log(rc.clamp_min(tiny) / rx.clamp_min(tiny))])


def canonicalization_loss(canonicalizer: Canonicalizer, x: torch.Tensor, k: torch.Tensor | None = None,
                          config: CanonicalizationLoss | None = None, *,
                          pair: torch.Tensor | None = None) -> CanonicalizationTerms:
    """The canonicalization loss of ``canonicalizer`` on ``x`` and a second view of it (see the module docstring).

    Args:
        canonicalizer: any [`Canonicalizer`][equican.canon.base.Canonicalizer] whose result carries ``h`` (every built-in
            kind).
        x: inputs ``(B, C, H, W)``.
        k: one group element per input, ``(B, *group.param_shape)``, e.g. from an
            [`ElementDistribution`][equican.canon.objective.ElementDistribution]; the second view is ``act(k, x)``.
            Treated as data (no gradient flows into it).
        config: target, guard and ink weights, border.
        pair: instead of ``k``, the second view itself, ``(B, C, H, W)``: the same content under the data's own
            nuisance (e.g. the same digits at other scales); needs the ``"input"`` target.

    Returns:
        [`CanonicalizationTerms`][equican.canon.objective.CanonicalizationTerms]: per-input loss and terms, and the
        result on ``x``. Differentiable in the canonicalizer's parameters.

    Raises:
        ShapeError: ``x``, ``pair`` or ``k`` of the wrong shape (``k``: not ``(B, *param_shape)``).
        DTypeError: ``x``, ``pair`` or ``k`` not float32/float64.
        NonFiniteError: non-finite values in ``x``, ``pair`` or ``k``.
        InvalidElementError: ``k`` not valid elements of the group (``k`` is checked in full before the group's
            members run unchecked on it).
        ConfigError: ``canonicalizer`` not a Canonicalizer, ``config`` not a CanonicalizationLoss, neither or both of
            ``k`` and ``pair``, or ``pair`` with the element target.
    """
    where = "canonicalization_loss"
    config = CanonicalizationLoss() if config is None else config
    if not isinstance(canonicalizer, Canonicalizer):
        raise ConfigError(f"{where}: expected canonicalizer to be an equican Canonicalizer, "
                          f"got {type(canonicalizer).__name__}")
    if not isinstance(config, CanonicalizationLoss):
        raise ConfigError(f"{where}: expected config to be a CanonicalizationLoss or None, got {type(config).__name__}")
    group = canonicalizer.group
    V.require_batch_images(x, where=where, name="x")
    if (k is None) == (pair is None):
        raise ConfigError(f"{where}: expected exactly one of k (group elements) and pair (a second view), got "
                          f"{'both' if k is not None else 'neither'}")
    u = group.unchecked
    if pair is not None:
        V.require_batch_images(pair, where=where, name="pair")
        if pair.shape != x.shape:
            raise ShapeError(f"{where}: expected pair of the shape of x {V.fmt_shape(x.shape)}, "
                             f"got {V.fmt_shape(pair.shape)}")
        if config.target != "input":
            raise ConfigError(f"{where}: a pair has no element relating its views; expected target 'input', "
                              f"got {config.target!r}")
        second = pair.detach().to(dtype=x.dtype, device=x.device)
    else:
        if not isinstance(k, torch.Tensor) or tuple(k.shape) != (x.shape[0], *group.param_shape):
            got = V.fmt_shape(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
            raise ShapeError(f"{where}: expected k of shape ({x.shape[0]}, "
                             f"{', '.join(map(str, group.param_shape))}), got {got}")
        group.check(k, name="k", where=where)  # dtype, finiteness, validity: the unchecked members below trust k
        k = k.detach().to(dtype=x.dtype, device=x.device)
        # Unchecked group calls: x and k were validated above, and h comes from the canonicalizer, which may
        # predict a degenerate element (an affine map whose scale underflowed) that must cost loss, not raise.
        with torch.no_grad():
            second = u.act(k, x)
    b = x.shape[0]
    inputs = torch.cat([x, second])
    both = canonicalizer(inputs)
    res_x, res_kx = split_result(both, b)
    if config.target == "element":
        # h(x)⁻¹·h(kx)·k against the identity: a left-invariant distance (see the module docstring).
        relative = u.compose(u.inverse(res_x.h), u.compose(res_kx.h, k))
        equivariance = u.distance(relative, u.identity_like(relative)).pow(2)
    else:
        diff = _interior(_blur(res_kx.x - res_x.x, config.blur), config.border)
        equivariance = diff.pow(2).flatten(1).mean(dim=1)
    loss = equivariance
    round_trip = torch.zeros_like(equivariance)
    if config.guard:
        back = _interior(u.act_inverse(res_x.h, res_x.x), config.border)
        ref = _interior(x, config.border)
        # Relative to the input's own energy, so the guard reads 1 for a blank canonical form at any contrast.
        round_trip = ((back - ref).pow(2).flatten(1).sum(dim=1)
                      / ref.pow(2).flatten(1).sum(dim=1).clamp_min(torch.finfo(x.dtype).tiny))
        loss = loss + config.guard * (round_trip - config.threshold).clamp_min(0)
    ink = equivariance.new_zeros(())
    if config.ink:
        # Both views: a shrink of either is a shrink.
        ink = _log_ink_ratios(both.x, inputs).mean(dim=1).pow(2).sum()
        loss = loss + config.ink * ink
    if config.centre:
        z = u.to_unconstrained(res_x.h)
        loss = loss + config.centre * z.mean(dim=0).pow(2).sum()
    return CanonicalizationTerms(loss=loss, equivariance=equivariance, round_trip=round_trip, ink=ink, result=res_x)
