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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch
from torch import nn

from . import validation as V
from .modes import evaluating
from .data.seeding import keyed_elements
from .errors import ConfigError, DTypeError, ShapeError
from .group import Group, make_group

__all__ = ["accuracy", "invariance_error", "local_scale_error", "equivariance_error", "paper_invariance_group",
           "canonicalization_error", "canonical_spread", "solver_statistics", "summarize_solver_statistics"]

Model = Callable[[torch.Tensor], torch.Tensor]
Data = Union[torch.Tensor, tuple[torch.Tensor, ...], Iterable[Any]]
Result = Union[float, tuple[float, torch.Tensor]]


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
def _require_group(group: object, *, where: str) -> Group:
    return V.require_group(group, where=where)


def _model_device(model: Model, device: torch.device | str | None) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    if isinstance(model, nn.Module):
        first = next(model.parameters(), None)
        if first is not None:
            return first.device
    return None


def _batches(data: Data, batch_size: int, *, where: str) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches of ``data`` as tuples of tensors (see the module docstring for the accepted forms)."""
    V.require_int(batch_size, low=1, where=where, name="batch_size")
    if isinstance(data, torch.Tensor):
        data = (data,)
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        sizes = {t.shape[0] if t.ndim else None for t in data}
        if len(sizes) != 1 or None in sizes:
            raise ShapeError(f"{where}: expected tensors with one common first (sample) dimension, got shapes "
                             f"{', '.join(V.fmt_shape(t.shape) for t in data)}")
        n = data[0].shape[0]
        for start in range(0, n, batch_size):
            yield tuple(t[start:start + batch_size] for t in data)
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DTypeError(f"{where}: expected data to be a tensor, a tuple of tensors or an iterable of batches, "
                         f"got {type(data).__name__}")
    for batch in data:
        items = (batch,) if isinstance(batch, torch.Tensor) else batch
        if not isinstance(items, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in items):
            raise DTypeError(f"{where}: expected each batch to be a tensor or a tuple/list of tensors, "
                             f"got {type(batch).__name__}")
        yield tuple(items)


def _entries(batch: tuple[torch.Tensor, ...], count: int, *, where: str, names: str) -> tuple[torch.Tensor, ...]:
    if len(batch) < count:
        raise ShapeError(f"{where}: expected batches of at least {count} tensors ({names}), got {len(batch)}")
    return batch[:count]


def _move(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return t if device is None else t.to(device)


def _logits(model: Model, x: torch.Tensor, *, where: str) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = V.fmt_shape(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"{where}: expected the model to return logits of shape ({x.shape[0]}, K) for a batch of "
                         f"{x.shape[0]}, got {shape}")
    V.require_finite(out, where=where, name="the model's logits")
    return out


def _transformed_pairs(model: Model, data: Data, group: Group, *, seed: int, batch_size: int,
                       device: torch.device | str | None, where: str
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, g, act(g, x))`` per batch, with the ``n``-th sample's element drawn from ``(seed, n)``.

    Shared by the group metrics so that they draw the same elements for the same data, whatever the batching;
    the model is in eval mode while the generator runs.
    """
    _require_group(group, where=where)
    V.require_int(seed, where=where, name="seed", low=0)
    device = _model_device(model, device)
    seen = 0
    with evaluating(model):
        for batch in _batches(data, batch_size, where=where):
            x = _move(_entries(batch, 1, where=where, names="x")[0], device)
            V.require_batch_images(x, where=where, name="x")
            g = keyed_elements(group, seed, [(n,) for n in range(seen, seen + x.shape[0])], device=x.device,
                               dtype=x.dtype)
            yield x, g, group.act(g, x)
            seen += x.shape[0]


def _finish(values: list[torch.Tensor], per_sample: bool, *, where: str) -> Result:
    if not values or sum(v.shape[0] for v in values) == 0:
        raise ShapeError(f"{where}: expected at least one sample, got empty data")
    per = torch.cat([v.detach().cpu() for v in values])
    mean = float(per.double().mean())
    return (mean, per) if per_sample else mean


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
    device = _model_device(canonicalizer, device)
    spreads = []
    with evaluating(canonicalizer):
        for batch in _batches(data, batch_size, where=where):
            x = _move(_entries(batch, 1, where=where, names="x")[0], device)
            if x.shape[0] < 2:
                continue
            c = canonicalizer(x).x
            spreads.append(_interior(c - c.roll(1, dims=0), border).abs().flatten(1).mean(dim=1))
    return _finish(spreads, False, where=where)  # type: ignore[return-value]


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


def _interior(t: torch.Tensor, border: int) -> torch.Tensor:
    if border and min(t.shape[-2:]) > 2 * border:
        return t[..., border:-border, border:-border]
    return t
