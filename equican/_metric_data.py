"""The plumbing shared by the metrics of [`equican.metrics`][equican.metrics]: the accepted data forms, batching,
devices, the keyed elements of the group metrics, and the interior crop. Private: the metrics are the API."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch
from torch import nn

from . import validation as V
from .data.seeding import keyed_elements
from .errors import DTypeError, ShapeError
from .group import Group
from .modes import evaluating

Model = Callable[[torch.Tensor], torch.Tensor]
Data = Union[torch.Tensor, tuple[torch.Tensor, ...], Iterable[Any]]
Result = Union[float, tuple[float, torch.Tensor]]


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


def _interior(t: torch.Tensor, border: int) -> torch.Tensor:
    """``t (..., H, W)`` without ``border`` pixels on each side (all of it when the image is too small)."""
    if border and min(t.shape[-2:]) > 2 * border:
        return t[..., border:-border, border:-border]
    return t
