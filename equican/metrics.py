"""Evaluation metrics: accuracy, group invariance and equivariance errors, and the paper's local-scale error.

Every metric is one function taking

* ``model``: any callable ``x -> output``, an ``nn.Module`` or a plain function. Classification metrics need logits of
  shape ``(B, K)``; [`equivariance_error`][equican.metrics.equivariance_error] needs dense outputs ``(B, C', H', W')``
  that the group can act on. ``nn.Module`` models are switched to ``eval()`` for the call and their training flags
  restored afterwards.
* ``data``: either in-memory tensors, a ``torch.Tensor`` or a *tuple* of tensors with equal first dimension, which
  the metric splits into batches of ``batch_size``; or any other iterable of batches (a ``DataLoader``, a list of
  batches), each batch a tensor or a tuple/list of tensors. Each metric documents which entries of a batch it reads.
* ``device``: where batches are moved; by default the device of the model's first parameter (for a module with
  parameters), otherwise wherever the batch already is.

They run under ``torch.no_grad()`` and return a Python float, the mean over samples, or with ``per_sample=True`` the
pair ``(mean, per-sample tensor)`` (on the CPU). Random group elements come from
[`index_generator`][equican.data.seeding.index_generator] keyed by ``(seed, n)`` for the ``n``-th sample seen, so a
metric's value does not depend on the batch size, only on the order of the samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from . import validation as V
from ._metric_data import (Data, Model, Result, _batches, _entries, _finish, _interior, _model_device, _move,
                           _transformed_pairs)
from .modes import evaluating
from .errors import ConfigError, DTypeError, ShapeError
from .group import Group, make_group
from .sampling import linspace_grid

__all__ = ["accuracy", "invariance_error", "local_scale_error", "equivariance_error", "paper_invariance_group",
           "canonicalization_error", "canonical_spread", "ink_moments", "canonical_ink", "pair_ratio",
           "canonicalization_report",
           "solver_statistics", "summarize_solver_statistics"]


def paper_invariance_group() -> Group:
    """The group of the invariance evaluation of the packaged configurations (``equican/configs/paper.toml``).

    Read from the packaged ``paper`` configuration's ``[eval]`` section, the one place it is written:
    monotone scaling with ``R = 8`` segments and logits from ``U[0, 0.25)``. The strength and the temperature are
    the paper's; its evaluation warps (``warping_resolution: 8`` in the reference implementation) count 8 knots,
    i.e. 7 segments, one fewer than here.
    """
    from .config import load_config  # the config module is light, but metrics should not need it at import

    ev = load_config("paper").eval
    return make_group(ev.invariance_group, **ev.group_options(ev.invariance_group))


# ---------------------------------------------------------------------------------------------- plumbing
def _logits(model: Model, x: torch.Tensor, *, where: str) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = V.fmt_shape(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"{where}: expected the model to return logits of shape ({x.shape[0]}, K) for a batch of "
                         f"{x.shape[0]}, got {shape}")
    V.require_finite(out, where=where, name="the model's logits")
    return out


# ---------------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def accuracy(model: Model, data: Data, *, batch_size: int = 256, device: torch.device | str | None = None,
             per_sample: bool = False) -> Result:
    """Top-1 accuracy: the fraction of samples whose largest logit is at the label.

    Args:
        model: ``x (B, ...) -> logits (B, K)``.
        data: batches ``(x, y, ...)`` with labels ``y (B,)`` of an integer dtype in ``[0, K)``.
        batch_size: for in-memory tensors.
        device: where to evaluate (default: the model's).
        per_sample: also return the per-sample correctness, bool ``(N,)``.

    Returns:
        The accuracy in ``[0, 1]`` (and the per-sample tensor).

    Raises:
        ShapeError, DTypeError: malformed data or logits, labels out of range, or no samples.
    """
    where = "accuracy"
    device = _model_device(model, device)
    correct = []
    with evaluating(model):
        for batch in _batches(data, batch_size, where=where):
            x, y = (_move(t, device) for t in _entries(batch, 2, where=where, names="x, y"))
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ShapeError(f"{where}: expected labels of shape ({x.shape[0]},), got {V.fmt_shape(y.shape)}")
            if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
                raise DTypeError(f"{where}: expected integer labels, got {y.dtype}")
            logits = _logits(model, x, where=where)
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
                raise ShapeError(f"{where}: expected labels in [0, {logits.shape[1]}) for {logits.shape[1]} logits, "
                                 f"got values in [{int(y.min())}, {int(y.max())}]")
            correct.append(logits.argmax(dim=1) == y)
    return _finish(correct, per_sample, where=where)


@torch.no_grad()
def invariance_error(model: Model, data: Data, group: Group, *, seed: int = 0, batch_size: int = 64,
                     device: torch.device | str | None = None, per_sample: bool = False) -> Result:
    """Group invariance error: the mean of ``‖softmax(f(x)) − softmax(f(act(g, x)))‖₂`` over the samples.

    Each sample gets its own random element ``g = group.sample(...)`` at the group's configured strength; equican
    evaluates with the group its configuration names (the packaged ones: monotone scaling, see
    [`paper_invariance_group`][equican.metrics.paper_invariance_group]). The value lies
    in ``[0, √2]``; 0 means the predicted distribution did not move.

    Args:
        model: ``x (B, C, H, W) -> logits (B, K)``.
        data: batches whose first entry is ``x (B, C, H, W)``, float32/float64 (further entries are ignored).
        group: any [`Group`][equican.group.Group], e.g. ``make_group("rotation")``.
        seed: the ``n``-th sample's element is drawn from ``index_generator(seed, n)``.
        batch_size: for in-memory tensors.
        device: where to evaluate (default: the model's).
        per_sample: also return the per-sample errors, ``(N,)``.

    Returns:
        The mean error (and the per-sample tensor).

    Raises:
        ConfigError: ``group`` is not a Group, or an invalid ``seed``/``batch_size``.
        ShapeError, DTypeError, NonFiniteError: malformed data or logits, or no samples.
    """
    where = "invariance_error"
    errors = []
    for x, _, gx in _transformed_pairs(model, data, group, seed=seed, batch_size=batch_size, device=device,
                                       where=where):
        p = torch.softmax(_logits(model, x, where=where), dim=1)
        p_g = torch.softmax(_logits(model, gx, where=where), dim=1)
        errors.append((p - p_g).norm(dim=1))
    return _finish(errors, per_sample, where=where)


@torch.no_grad()
def local_scale_error(model: Model, data: Data, *, batch_size: int = 16, device: torch.device | str | None = None,
                      per_sample: bool = False) -> Result:
    """The paper's local-scale error: relative L2 change of the prediction when the digits are rescaled.

    For each sample, ``p_ref = softmax(f(reference))`` on the composite with every digit at scale 1 and
    ``p_j = softmax(f(rescaled_j))`` on each of its ``k`` rescaled versions; the error is
    ``‖p_ref − p_j‖₂ / ‖p_ref‖₂``, averaged over the ``k`` rescalings and the samples. (``‖p_ref‖₂ >= 1/√K > 0``
    for a probability vector, so the ratio is always defined.)

    Args:
        model: ``x (B, C, H, W) -> logits (B, K)``.
        data: batches ``(reference, rescaled, ...)`` with ``reference (B, C, H, W)`` and ``rescaled (B, k, C, H, W)``,
            as
            [`equican.data.LocalScaleMNIST.rescaling_pairs`][equican.data.local_scale.LocalScaleMNIST.rescaling_pairs]
            yields them.
        batch_size: for in-memory tensors (samples per batch; the model sees ``batch_size · k`` rescaled images).
        device: where to evaluate (default: the model's).
        per_sample: also return the errors of every rescaling, ``(N, k)``.

    Returns:
        The mean error (and the ``(N, k)`` tensor).

    Raises:
        ShapeError, DTypeError, NonFiniteError: malformed data or logits, or no samples.
    """
    where = "local_scale_error"
    device = _model_device(model, device)
    errors = []
    with evaluating(model):
        for batch in _batches(data, batch_size, where=where):
            reference, rescaled = (_move(t, device)
                                   for t in _entries(batch, 2, where=where, names="reference, rescaled"))
            V.require_batch_images(reference, where=where, name="reference")
            V.require_tensor(rescaled, where=where, name="rescaled")
            if (rescaled.ndim != 5 or rescaled.shape[0] != reference.shape[0] or rescaled.shape[1] < 1
                    or rescaled.shape[2:] != reference.shape[1:]):
                raise ShapeError(f"{where}: expected rescaled of shape ({reference.shape[0]}, k, "
                                 f"{', '.join(map(str, reference.shape[1:]))}) with k >= 1 to match reference "
                                 f"{V.fmt_shape(reference.shape)}, got {V.fmt_shape(rescaled.shape)}")
            V.require_same_placement(reference, rescaled, where=where, names=("reference", "rescaled"))
            V.require_finite(rescaled, where=where, name="rescaled")
            b, k = rescaled.shape[:2]
            p_ref = torch.softmax(_logits(model, reference, where=where), dim=1)  # (B, K)
            p_s = torch.softmax(_logits(model, rescaled.flatten(0, 1), where=where), dim=1).view(b, k, -1)
            errors.append((p_ref[:, None] - p_s).norm(dim=2) / p_ref.norm(dim=1)[:, None])
    if errors and len({e.shape[1] for e in errors}) != 1:
        raise ShapeError(f"{where}: expected the same k in every batch, got {sorted({e.shape[1] for e in errors})}")
    return _finish(errors, per_sample, where=where)


@torch.no_grad()
def equivariance_error(model: Model, data: Data, group: Group, *, seed: int = 0, border: int = 0,
                       eps: float = 1e-12, batch_size: int = 64, device: torch.device | str | None = None,
                       per_sample: bool = False) -> Result:
    """Equivariance error of a dense model: the relative L2 distance ``‖f(act(g, x)) − act(g, f(x))‖ / ‖act(g, f(x))‖``.

    Normalization: per sample, both norms are taken over every entry (channels and pixels) of the output, after
    dropping ``border`` pixels on each side; the ratio is averaged over the samples. The denominator is clamped at
    ``eps``, so a sample whose transformed output is 0 contributes ``‖f(act(g, x))‖ / eps`` (0 when that is 0
    too). Relative error makes the value independent of the output's scale: 0 is exact equivariance, and 1 is as
    far off as an output of 0.

    Each sample gets its own random element ``g = group.sample(...)``; the same ``g`` acts on the input and on the
    output, so the output must be an image ``(B, C', H', W')`` the group can act on (normalized coordinates make
    any resolution work).

    Args:
        model: ``x (B, C, H, W) -> y (B, C', H', W')``.
        data: batches whose first entry is ``x (B, C, H, W)`` (further entries are ignored).
        group: any [`Group`][equican.group.Group].
        seed: the ``n``-th sample's element is drawn from ``index_generator(seed, n)``.
        border: output pixels excluded on each side, e.g. where zero padding meets rotated corners.
        eps: the clamp of the denominator, > 0.
        batch_size: for in-memory tensors.
        device: where to evaluate (default: the model's).
        per_sample: also return the per-sample errors, ``(N,)``.

    Returns:
        The mean relative error (and the per-sample tensor).

    Raises:
        ConfigError: ``group`` is not a Group, or an invalid ``seed``/``border``/``eps``/``batch_size``.
        ShapeError, DTypeError, NonFiniteError: malformed data or outputs, or no samples.
    """
    where = "equivariance_error"
    V.require_int(border, where=where, name="border", low=0)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ConfigError(f"{where}: expected eps > 0, got {eps!r}")
    errors = []
    for x, g, gx in _transformed_pairs(model, data, group, seed=seed, batch_size=batch_size, device=device,
                                       where=where):
        y = model(x)
        y_g = model(gx)
        for name, out in (("f(x)", y), ("f(act(g, x))", y_g)):
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
                shape = V.fmt_shape(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ShapeError(f"{where}: expected the model's output {name} of shape ({x.shape[0]}, C, H, W), "
                                 f"got {shape}")
        if y_g.shape != y.shape:
            raise ShapeError(f"{where}: expected f(act(g, x)) of the shape of f(x) {V.fmt_shape(y.shape)}, "
                             f"got {V.fmt_shape(y_g.shape)}")
        if y.shape[-1] <= 2 * border or y.shape[-2] <= 2 * border:
            raise ConfigError(f"{where}: expected border < half the output size {tuple(y.shape[-2:])}, "
                              f"got {border}")
        expected = group.act(g.to(y.dtype), y)
        crop = (slice(None), slice(None), slice(border, y.shape[-2] - border), slice(border, y.shape[-1] - border))
        diff = (y_g - expected)[crop].flatten(1).norm(dim=1)
        errors.append(diff / expected[crop].flatten(1).norm(dim=1).clamp_min(eps))
    return _finish(errors, per_sample, where=where)


# ---------------------------------------------------------------------------------------------- canonicalizers
@torch.no_grad()
def canonicalization_error(canonicalizer: Any, data: Data, group: Group | None = None, *, seed: int = 0,
                           border: int = 4, batch_size: int = 64, device: torch.device | str | None = None,
                           per_sample: bool = False) -> Result:
    """How far a canonicalizer is from invariant: the mean of ``|canon(act(k, x)).x − canon(x).x|`` over the interior.

    Per sample, the absolute difference of the two canonical inputs is averaged over channels and the pixels at least
    ``border`` from the edge (where the action resamples from outside the image). For the
    [`IdentityCanonicalizer`][equican.canon.base.IdentityCanonicalizer] it is ``|act(k, x) − x|``, the baseline that a
    canonicalizer should bring down; an exactly invariant canonicalizer scores 0.

    A canonicalizer that maps every input to one blank image scores 0 as well: read this number together with
    [`canonical_spread`][equican.metrics.canonical_spread], which is 0 for such a collapse.

    Args:
        canonicalizer: a [`Canonicalizer`][equican.canon.base.Canonicalizer] (any callable returning a result with ``x``).
        data: batches whose first entry is ``x (B, C, H, W)``.
        group: the sampler of ``k`` (default: the canonicalizer's own group).
        seed: the ``n``-th sample's ``k`` is drawn from ``index_generator(seed, n)``.
        border: pixels left out on each side.
        batch_size: for in-memory tensors.
        device: where to evaluate (default: the canonicalizer's).
        per_sample: also return the per-sample errors, ``(N,)``.

    Returns:
        The mean error (and the per-sample tensor).
    """
    where = "canonicalization_error"
    group = canonicalizer.group if group is None else group
    V.require_int(border, low=0, where=where, name="border")
    errors = []
    for x, _, gx in _transformed_pairs(canonicalizer, data, group, seed=seed, batch_size=batch_size, device=device,
                                       where=where):
        both = canonicalizer(torch.cat([x, gx])).x
        diff = _interior(both[x.shape[0]:] - both[:x.shape[0]], border)
        errors.append(diff.abs().flatten(1).mean(dim=1))
    return _finish(errors, per_sample, where=where)


@torch.no_grad()
def canonical_spread(canonicalizer: Any, data: Data, *, border: int = 4, batch_size: int = 64,
                     device: torch.device | str | None = None) -> float:
    """The collapse check beside [`canonicalization_error`][equican.metrics.canonicalization_error]: the mean of
    ``|canon(x_i).x − canon(x_j).x|`` over the interior, for each sample ``i`` and the next one ``j`` in its batch.

    Distinct inputs keep distinct canonical forms under a useful canonicalizer (about the identity's spread);
    a canonicalizer that maps everything to one image scores 0. Batches of one sample are skipped.

    Returns:
        The mean over the pairs.

    Raises:
        ShapeError: fewer than two samples in every batch.
    """
    where = "canonical_spread"
    V.require_int(border, low=0, where=where, name="border")
    spreads = [_spread_terms(c, border) for _, c in _canonical_forms(canonicalizer, data, batch_size=batch_size,
                                                                     device=device, where=where, least=2)]
    return _finish(spreads, False, where=where)  # type: ignore[return-value]


def _canonical_forms(canonicalizer: Any, data: Data, *, batch_size: int, device: torch.device | str | None,
                     where: str, least: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, canon(x).x)`` per batch of ``data`` with at least ``least`` samples, in evaluation mode: the one pass
    that the canonical-form statistics (spread, ink) share."""
    device = _model_device(canonicalizer, device)
    with evaluating(canonicalizer):
        for batch in _batches(data, batch_size, where=where):
            x = _move(_entries(batch, 1, where=where, names="x")[0], device)
            if x.shape[0] >= least:
                yield x, canonicalizer(x).x


def _spread_terms(c: torch.Tensor, border: int) -> torch.Tensor:
    """Per sample, the mean interior ``|c_i − c_{i-1}|`` of canonical forms ``c (B, C, H, W)``: ``(B,)``."""
    return _interior(c - c.roll(1, dims=0), border).abs().flatten(1).mean(dim=1)


def _ink_sums(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(Σ mass(c), Σ mass(x), Σ radius(c), Σ radius(x))`` of a batch, float64 on the CPU."""
    (mc, rc), (mx, rx) = ink_moments(c), ink_moments(x)
    return torch.stack([mc.sum(), mx.sum(), rc.sum(), rx.sum()]).double().cpu()


def _ink_ratios(sums: torch.Tensor, *, where: str) -> dict[str, float]:
    if not sums[1] > 0:
        raise ShapeError(f"{where}: expected inputs with some ink, got none (no samples, or blank images)")
    return {"ink": float(sums[0] / sums[1]), "radius": float(sums[2] / sums[3])}


def ink_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ink mass and ink radius of images ``x: (B, C, H, W)``, each ``(B,)``.

    Ink is ``|x|`` summed over channels (so signed feature maps have ink too). The mass is its mean over the pixels;
    the radius is the root-mean-square distance of the ink from its centroid, in normalized coordinates (``[-1, 1]``
    across the image). Scaling the content by ``s`` about any point multiplies the mass by ``s²`` and the radius by
    ``s``, which is why the two tell a shrinking canonicalizer apart. Differentiable; a blank image has mass 0 and
    radius 0.
    """
    ink = x.abs().sum(dim=1)  # (B, H, W)
    h, w = ink.shape[-2:]
    ys = linspace_grid(h, device=x.device, dtype=x.dtype).view(h, 1)
    xs = linspace_grid(w, device=x.device, dtype=x.dtype).view(1, w)
    mass = ink.sum(dim=(-2, -1))
    weight = ink / mass.clamp_min(torch.finfo(x.dtype).tiny).view(-1, 1, 1)
    cy, cx = (weight * ys).sum(dim=(-2, -1)), (weight * xs).sum(dim=(-2, -1))
    spread = (weight * ((ys - cy.view(-1, 1, 1)).pow(2) + (xs - cx.view(-1, 1, 1)).pow(2))).sum(dim=(-2, -1))
    return mass / (h * w), spread.clamp_min(0).sqrt()


@torch.no_grad()
def canonical_ink(canonicalizer: Any, data: Data, *, batch_size: int = 64,
                  device: torch.device | str | None = None) -> dict[str, float]:
    """The canonical forms' ink against the inputs': ``{"ink": mean mass ratio, "radius": mean radius ratio}``.

    Both near 1 mean the canonical forms keep the inputs' content at its size on average; a canonicalizer that
    shrinks everything scores well on [`canonicalization_error`][equican.metrics.canonicalization_error] (small
    forms have small differences) but has ratios well below 1 here (a shrink by ``s``: ``s²`` and ``s``). Per-input
    normalization moves single ratios away from 1 in both directions. Ratios are of the means over the data
    (``Σ mass(c) / Σ mass(x)``), so blank inputs do not divide by zero.

    Raises:
        ShapeError: no samples.
    """
    where = "canonical_ink"
    sums = torch.zeros(4, dtype=torch.float64)
    for x, c in _canonical_forms(canonicalizer, data, batch_size=batch_size, device=device, where=where):
        sums += _ink_sums(x, c)
    return _ink_ratios(sums, where=where)


@torch.no_grad()
def pair_ratio(canonicalizer: Any, data: Data, *, border: int = 4, batch_size: int = 64,
               device: torch.device | str | None = None, per_sample: bool = False) -> Result:
    """Canonicalization error on the data's own nuisance: ``|canon(x).x − canon(x').x|`` over ``|x − x'|``.

    ``data`` yields pairs ``(x, x', ...)`` of two renderings of the same content, both ``(B, C, H, W)`` (Locally
    Scaled MNIST: the same digits at two sets of per-digit scales). No group sampler is involved, so every group is
    compared on the same nuisance: 1 is no better than not canonicalizing, 0 is exact. The ratio is of the means over
    the interior (``border`` pixels left out on each side), so pairs that barely differ weigh little.

    Returns:
        The ratio (and, with ``per_sample``, the per-pair canonical-form errors ``(N,)``).

    Raises:
        ShapeError: the two views differ in shape, or no samples.
    """
    where = "pair_ratio"
    V.require_int(border, low=0, where=where, name="border")
    device = _model_device(canonicalizer, device)
    canonical, plain = [], []
    with evaluating(canonicalizer):
        for batch in _batches(data, batch_size, where=where):
            x, x2 = (_move(t, device) for t in _entries(batch, 2, where=where, names="x, x'"))
            if x.shape != x2.shape:
                raise ShapeError(f"{where}: expected the two views of one shape, got {V.fmt_shape(x.shape)} and "
                                 f"{V.fmt_shape(x2.shape)}")
            both = canonicalizer(torch.cat([x, x2])).x
            canonical.append(_interior(both[x.shape[0]:] - both[:x.shape[0]], border).abs().flatten(1).mean(dim=1))
            plain.append(_interior(x2 - x, border).abs().flatten(1).mean(dim=1))
    errors = torch.cat(canonical).double().cpu()
    if not errors.numel():
        raise ShapeError(f"{where}: expected at least one pair, got none")
    ratio = float(errors.mean() / torch.cat(plain).double().cpu().mean().clamp_min(torch.finfo(torch.float64).tiny))
    return (ratio, errors) if per_sample else ratio


@torch.no_grad()
def canonicalization_report(canonicalizer: Any, data: Data, *, pairs: Data | None = None, seed: int = 0,
                            border: int = 4, batch_size: int = 64) -> dict[str, float]:
    """Every canonicalization number of ``canonicalizer`` beside its collapse checks, on the inputs ``data``.

    Returns:
        ``invariance`` and ``invariance_identity`` ([`canonicalization_error`][equican.metrics.canonicalization_error]
        of the canonicalizer and of the identity, under the canonicalizer's group with ``seed``), ``spread`` and
        ``spread_identity`` ([`canonical_spread`][equican.metrics.canonical_spread]), ``ink`` and ``radius``
        ([`canonical_ink`][equican.metrics.canonical_ink]), and with ``pairs`` (batches of two views ``(x, x')``)
        ``pair_ratio`` ([`pair_ratio`][equican.metrics.pair_ratio]); every interior leaves ``border`` pixels out.
    """
    from .canon.base import IdentityCanonicalizer

    where = "canonicalization_report"
    V.require_int(border, low=0, where=where, name="border")
    identity = IdentityCanonicalizer(canonicalizer.group)
    # One pass of canonical forms serves the spread and the ink (what canonical_spread and canonical_ink compute).
    spreads, sums = [], torch.zeros(4, dtype=torch.float64)
    for x, c in _canonical_forms(canonicalizer, data, batch_size=batch_size, device=None, where=where):
        if x.shape[0] >= 2:
            spreads.append(_spread_terms(c, border))
        sums += _ink_sums(x, c)
    out = {"invariance": canonicalization_error(canonicalizer, data, seed=seed, border=border, batch_size=batch_size),
           "invariance_identity": canonicalization_error(identity, data, seed=seed, border=border,
                                                         batch_size=batch_size),
           "spread": _finish(spreads, False, where=where),
           "spread_identity": canonical_spread(identity, data, border=border, batch_size=batch_size),
           **_ink_ratios(sums, where=where)}
    if pairs is not None:
        out["pair_ratio"] = pair_ratio(canonicalizer, pairs, border=border, batch_size=batch_size)
    return out


@contextlib.contextmanager
def solver_statistics(model: Any) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the solver statistics of every canonicalizer inside ``model`` while the block runs.

    Yields a dict that fills with one tensor per canonicalizer call: ``"converged"`` (bool, ``(B,)``) and
    ``"residual"`` (the residual of the returned iterate, ``(B,)``), for the kinds that report them (the DEQ). Works
    for a canonicalized model, a latent timm wrapper, or a canonicalizer itself (forward hooks on every
    [`Canonicalizer`][equican.canon.base.Canonicalizer] submodule).
    """
    from .canon import Canonicalizer

    record: dict[str, list[torch.Tensor]] = {"converged": [], "residual": []}

    def hook(module: Any, args: Any, result: Any) -> None:
        info = getattr(result, "info", {})
        if "converged" in info and "residual_true" in info:
            record["converged"].append(info["converged"].detach().cpu())
            record["residual"].append(info["residual_true"].detach().float().cpu())

    modules = model.modules() if isinstance(model, nn.Module) else []
    handles = [m.register_forward_hook(hook) for m in modules if isinstance(m, Canonicalizer)]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def summarize_solver_statistics(record: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """``{"converged": fraction, "residual": mean}`` of a [`solver_statistics`][equican.metrics.solver_statistics]
    record (lists of ``(B,)`` tensors); empty when nothing was recorded."""
    if not record["converged"]:
        return {}
    converged = torch.cat(record["converged"]).float()
    residual = torch.cat(record["residual"]).double()
    finite = residual[torch.isfinite(residual)]
    return {"converged": float(converged.mean()), "residual": float(finite.mean()) if finite.numel() else float("inf")}
