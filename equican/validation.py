"""Input validation for public entry points: the checks equican's own groups and canonicalizers use, public so that
a group or canonicalizer written outside this repository can reject bad input the same way.

Each helper raises a typed error from [`equican.errors`][equican.errors] whose message names the caller (``where``), the
argument, what was expected and what was received. Helpers never modify or copy their input; the scalar checks
return the value they accepted.

A group written outside this package needs none of them for its six members: [`Group`][equican.group.Group] already
checks every element and image argument. They serve its constructor (``require_int``, ``require_number``), a
canonicalizer's ``forward`` (``require_batch_images``) and error messages (``did_you_mean``)::

    from equican import validation as V

    class Shear(Group, name="shear"):
        def __init__(self, max_shear: float = 0.3):
            self.max_shear = V.require_number(max_shear, low=0.0, high=1.0, where="Shear", name="max_shear")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError, DeviceError, DTypeError, NonFiniteError, ShapeError

if TYPE_CHECKING:  # equican.group imports this module; require_group imports the class when it runs
    from .group import Group

__all__ = ["FLOAT_DTYPES", "REDUCED_FLOAT_DTYPES", "SEED_MAX", "autocast_enabled", "fmt_shape", "require_tensor",
           "require_device", "require_float", "require_finite", "require_batch_images", "require_same_placement",
           "require_batch_size", "require_positive", "require_number", "require_int", "require_widths",
           "did_you_mean", "short", "require_group", "MAX_CHANNELS", "MAX_WIDTH", "MAX_DEPTH", "MAX_ORDER",
           "MAX_ELEMENT_SIZE"]

FLOAT_DTYPES = (torch.float32, torch.float64)
"""The dtypes of group elements, solver state and full-precision images."""

REDUCED_FLOAT_DTYPES = (torch.float16, torch.bfloat16)
"""Image dtypes accepted by group actions and canonicalizers but computed in float32 (mixed precision): elements and
solver state stay in ``FLOAT_DTYPES``; a reduced-precision image is upcast, and the result cast back to its dtype."""


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for the device type of ``x`` (a tensor of any shape; False on devices autocast
    does not know)."""
    kind = x.device.type
    return kind in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(kind)


def fmt_shape(shape: Sequence[int | str]) -> str:
    """Format a shape as ``(B, 2, 33, 33)``; works for torch.Size and tuples mixing ints and symbols."""
    items = [str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def require_tensor(value: object, *, where: str, name: str) -> torch.Tensor:
    """``value`` if it is a tensor (of any shape) on a device that holds data; DTypeError or DeviceError otherwise."""
    if not isinstance(value, torch.Tensor):
        raise DTypeError(f"{where}: expected {name} to be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta:  # no data to check or compute with: every later check would fail inside torch
        raise DeviceError(f"{where}: expected {name} on a device with data (cpu or cuda), got the meta device")
    return value


def require_device(device: object, *, where: str) -> torch.device:
    """``device`` (None: the CPU) as a ``torch.device`` that holds data and is present on this machine."""
    if device is None:
        return torch.device("cpu")
    try:
        resolved = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{where}: expected device to be a torch device such as 'cpu' or 'cuda', "
                          f"got {device!r}") from None
    if resolved.type == "meta":
        raise DeviceError(f"{where}: expected a device with data (cpu or cuda), got the meta device")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{where}: expected a device present on this machine, got {device!r} "
                          f"(torch sees no CUDA device)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise DeviceError(f"{where}: expected a CUDA index below {torch.cuda.device_count()}, got {device!r}")
    return resolved


def require_float(x: torch.Tensor, *, where: str, name: str) -> None:
    """``x`` (a tensor of any shape) is float32 or float64, else DTypeError. Half precision is refused here: the
    group laws' tolerances do not hold in it (images in half precision are upcast instead, see
    ``REDUCED_FLOAT_DTYPES``)."""
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{where}: expected {name} of dtype float32 or float64, got {x.dtype}")


def require_finite(x: torch.Tensor, *, where: str, name: str) -> None:
    """No NaN or infinite entry in ``x`` (a tensor of any shape), else NonFiniteError with the count and the index of
    the first. One host synchronisation when ``x`` is finite."""
    # A sum propagates NaN/inf and costs about 2% of a grid_sample over the same tensor, where
    # torch.isfinite(x).all() costs 60-150% (measured on this CPU). A non-finite sum is confirmed elementwise,
    # so finite values large enough to overflow the sum are never reported as non-finite.
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise NonFiniteError(
            f"{where}: expected finite values in {name}, got {count} NaN/inf entries (first at index {first})"
        )


def require_batch_images(x: torch.Tensor, *, where: str, name: str = "x") -> None:
    """An image batch ``(B, C, H, W)`` of float32/float64 with ``H, W >= 2``; finiteness is checked too."""
    require_tensor(x, where=where, name=name)
    if x.ndim != 4:
        raise ShapeError(f"{where}: expected {name} of shape (B, C, H, W), got {fmt_shape(x.shape)}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ShapeError(f"{where}: expected {name} with H, W >= 2, got {fmt_shape(x.shape)}")
    require_float(x, where=where, name=name)
    require_finite(x, where=where, name=name)


def require_same_placement(a: torch.Tensor, b: torch.Tensor, *, where: str, names: tuple[str, str]) -> None:
    """``a`` ``(B, ...)`` and ``b`` ``(B, ...)`` share device and dtype, and their leading (batch) sizes agree;
    DeviceError, DTypeError or ShapeError otherwise."""
    if a.device != b.device:
        raise DeviceError(f"{where}: expected {names[0]} and {names[1]} on one device, got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise DTypeError(f"{where}: expected {names[0]} and {names[1]} of one dtype, got {a.dtype} and {b.dtype}")
    if a.shape[0] != b.shape[0]:
        raise ShapeError(
            f"{where}: expected {names[0]} and {names[1]} with the same batch size, "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def require_batch_size(batch: object, *, where: str) -> int:
    """``batch`` if it is an int ``>= 0`` (bools are rejected); ShapeError otherwise."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ShapeError(f"{where}: expected batch to be a non-negative int, got {batch!r}")
    return batch


def short(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (with ``...``) for an error message: the value is shortened, never
    the message, whose context (a file path, a field) can be long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def require_positive(value: object, *, where: str, name: str) -> float:
    """A configuration number, finite and ``> 0`` (bools are rejected); raises
    [`ConfigError`][equican.errors.ConfigError]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: expected {name} to be a positive finite number, got {value!r}")
    return value


def require_number(value: object, *, low: float, high: float, where: str, name: str,
                   high_open: bool = False) -> float:
    """A configuration number in ``[low, high]`` (``[low, high)`` with ``high_open``); bools are rejected (``True``
    is an int to Python, but never a meaningful strength or angle); raises
    [`ConfigError`][equican.errors.ConfigError]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (high_open and value == high):
        bound = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{where}: expected {name} to be a number in {bound}, got {value!r}")
    return float(value)


SEED_MAX = 2**63 - 1
"""The largest seed: torch's generators take a signed 64-bit integer."""


def require_int(value: object, *, low: int, where: str, name: str, high: int | None = None) -> int:
    """A configuration integer ``>= low`` (and ``<= high`` when given; bools are rejected); raises
    [`ConfigError`][equican.errors.ConfigError]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{where}: expected {name} to be an int {bound}, got {value!r}")
    return value


def require_widths(value: object, *, where: str, name: str = "channels", high: int | None = None,
                   max_length: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of positive ints (layer widths), as a tuple; ConfigError otherwise. With ``high``, every
    width must be ``<= high``; with ``max_length``, at most that many widths (the builders of the registered kinds
    pass [`MAX_WIDTH`][equican.validation.MAX_WIDTH] and [`MAX_DEPTH`][equican.validation.MAX_DEPTH])."""
    widths = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    if not widths or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in widths):
        shown = widths if widths else value
        raise ConfigError(f"{where}: expected {name} to be a non-empty sequence of positive ints, got {shown!r}")
    if max_length is not None and len(widths) > max_length:
        raise ConfigError(f"{where}: expected {name} to list at most {max_length} widths, got {len(widths)}")
    if high is not None and max(widths) > high:
        raise ConfigError(f"{where}: expected every width of {name} to be at most {high}, got {max(widths)} "
                          f"(in {short(list(widths))})")
    return widths


# Size bounds. A config from disk or the command line that asks for a layer of 10^6 channels or a group of order
# 10^12 is refused with a ConfigError by the option's validation, before anything is allocated; each bound is
# generous against every model and group the package ships or documents.
MAX_CHANNELS = 16384
"""The most channels a canonicalizer may read (``in_channels``): an image, or the features of a timm model at an
insertion point (the widest timm feature maps have 3072 channels, convnext_xxlarge's last stage)."""

MAX_WIDTH = 4096
"""The widest layer of a canonicalizer's own network: each of its ``channels``, its ``reduce`` width, and (for the
escnn kind) its regular fields times the trunk's group order. The paper's widths are 32 and 64."""

MAX_DEPTH = 64
"""The most layers (entries of ``channels``) of a canonicalizer's own network."""

MAX_ORDER = 1024
"""The largest order ``n`` of a finite rotation group (``cyclic`` C_n, ``dihedral`` D_n) and the most rotations of
an escnn trunk."""

MAX_ELEMENT_SIZE = 65536
"""The most unconstrained parameters per element (``prod(group.unconstrained_shape)``, the outputs of a
canonicalizer's head) a registered kind builds a network for."""


def did_you_mean(name: object, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the registered name closest to a misspelt ``name``, else ``""``: the hint every
    unknown-name error ends with."""
    import difflib

    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def require_group(group: object, *, where: str) -> Group:
    """``group`` if it is an [`equican.Group`][equican.group.Group] instance, else a ConfigError."""
    from .group import Group

    if not isinstance(group, Group):
        raise ConfigError(f"{where}: expected group to be an equican.Group instance (e.g. make_group(name)), "
                          f"got {type(group).__name__}")
    return group
