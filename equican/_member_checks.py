"""The argument checks wrapped around every [`Group`][equican.group.Group] member (private to ``equican.group``).

[`Group`][equican.group.Group] wraps each tensor member a subclass defines with ``validated`` and its
``identity``/``sample`` with ``wrap_factory``; [`Group.unchecked`][equican.group.Group.unchecked] hands out
``Unchecked`` members. What is checked, and what it costs, is stated in the docstring of ``equican.group``.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import validation as V
from .errors import DTypeError, InvalidElementError

if TYPE_CHECKING:
    from .group import Group


def validated(method: str, roles: tuple[str, ...], fn: Callable[..., Any], base: type[Group]) -> Callable[..., Any]:
    """Wrap a group method so that its tensor arguments are validated before it runs.

    ``roles`` names each positional argument (``g``, ``h``, ``x`` or ``z``); ``base`` is the
    [`Group`][equican.group.Group] class itself, whose default ``check`` the fast path knows how to replace.

    Two paths accept exactly the same arguments. The fast path makes the Python-level checks (types, shapes, dtypes,
    devices, batch sizes) and one finiteness test over the sum of every tensor argument, a single host
    synchronisation where the strict path makes one per argument. Whenever the fast path is not sure (any check
    fails, or a sum of finite values overflows), the strict path (``_check_arguments``) runs the checks one by one
    in their documented order and raises the typed error with its message, exactly as before.
    """

    @functools.wraps(fn)
    def wrapper(self: Group, *args: Any, **kwargs: Any) -> Any:
        if _TRUSTED.get():  # inside a Group.unchecked call: the caller vouches for the arguments
            return fn(self, *args, **kwargs)
        where = f"{type(self).__name__}.{method}"
        if kwargs:
            bound = dict(zip(roles, args))
            bound.update({k: v for k, v in kwargs.items() if k in roles})
        else:
            bound = dict(zip(roles, args))
        if len(bound) != len(roles):
            missing = [r for r in roles if r not in bound]
            raise TypeError(f"{where}() missing argument(s): {', '.join(missing)}")
        x = bound.get("x")
        if isinstance(x, torch.Tensor) and x.dtype in V.REDUCED_FLOAT_DTYPES:
            # Mixed precision: a float16/bfloat16 image is acted on in the element's dtype (float32 for anything
            # else, which then fails the element's own dtype check) and the result is cast back to the image's.
            g = bound["g"]
            wide = g.dtype if isinstance(g, torch.Tensor) and g.dtype in V.FLOAT_DTYPES else torch.float32
            return wrapper(self, g, x.to(wide)).to(x.dtype)
        outer = _VALIDATED_ARGS.get()
        if outer and outer[0] is self and all(any(v is t and _KIND[r] == k for k, t in outer[1])
                                                  for r, v in bound.items()):
            # A member called by a validated member of the same group with the very tensors that call validated, in
            # the same roles (Affine2d.act inverting its own g): the checks would repeat exactly. Its result is
            # still checked.
            pass
        elif not _fast_accept(self, bound, base):
            _check_arguments(self, roles, bound, where)
        elif type(self).invalid_reason is not base.invalid_reason:
            for role in ("g", "h"):
                if role in bound:
                    reason = self.invalid_reason(bound[role])
                    if reason is not None:
                        raise InvalidElementError(
                            f"{where}: expected {role} to be valid elements of {self!r}, got {reason}")
        token = _VALIDATED_ARGS.set((self, tuple((_KIND[r], v) for r, v in bound.items())))
        first = bound[roles[0]]
        try:
            if V.autocast_enabled(first):
                # Elements are computed in their own dtype: autocast would run their matrix products in reduced
                # precision.
                with torch.autocast(first.device.type, enabled=False):
                    out = fn(self, *args, **kwargs)
            else:
                out = fn(self, *args, **kwargs)
        finally:
            _VALIDATED_ARGS.reset(token)
        if isinstance(out, torch.Tensor) and out.numel() and not math.isfinite(out.detach().sum().item()):
            # Finite inputs can still overflow (exp of a large log-scale, products of huge translations): say so
            # here, typed, rather than hand a silent NaN/inf to the caller. One sum, like the input check; a sum
            # that overflows although every entry is finite is confirmed entry by entry (require_finite).
            V.require_finite(out.detach(), where=where,
                             name=f"the result (inputs beyond what {out.dtype} can represent for this group)")
        return out

    wrapper.__wrapped_validation__ = True  # type: ignore[attr-defined]
    return wrapper


def _check_arguments(self: Group, roles: tuple[str, ...], bound: dict[str, Any], where: str) -> None:
    """The strict validation of ``validated``: every check in its documented order, raising the first failure."""
    for role in roles:
        value = bound[role]
        if role in ("g", "h"):
            self.check(value, name=role, where=where)
        elif role == "z":
            self._check_params(value, self.unconstrained_shape, where=where, name="z")
        elif role == "x":
            V.require_batch_images(value, where=where, name="x")
            V.require_same_placement(bound["g"], value, where=where, names=("g", "x"))
    if "h" in bound:
        V.require_same_placement(bound["g"], bound["h"], where=where, names=("g", "h"))


def _fast_accept(self: Group, bound: dict[str, Any], base: type[Group]) -> bool:
    """True when every argument passes the checks of ``_check_arguments`` other than ``invalid_reason``, decided
    with one host synchronisation; False when any check fails or cannot be decided this way."""
    cls = type(self)
    if cls.check is not base.check or cls._check_params is not base._check_params:
        return False  # a group with its own checks always gets them, in the strict order
    tensors = []
    first = None
    for role, value in bound.items():
        if type(value) is not torch.Tensor and not isinstance(value, torch.Tensor):
            return False
        if value.is_meta or value.dtype not in V.FLOAT_DTYPES:
            return False
        if role == "x":
            if value.ndim != 4 or value.shape[-1] < 2 or value.shape[-2] < 2:
                return False
        else:
            shape = self.unconstrained_shape if role == "z" else self.param_shape
            if value.shape[1:] != shape or value.ndim != 1 + len(shape):
                return False
        if first is None:
            first = value
        elif value.device != first.device or value.dtype != first.dtype or value.shape[0] != first.shape[0]:
            return False  # only g with x or h shares a call: all must agree
        if value.numel():
            tensors.append(value)
    if not tensors:
        return True
    total = tensors[0].detach().sum()
    for value in tensors[1:]:
        total = total + value.detach().sum()
    return math.isfinite(total.item())


_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("equican_group_trusted", default=False)
# The group and the (kind, argument) pairs of the validated call now running (empty outside one): see validated.
# g and h are both elements, checked alike.
_KIND = {"g": "element", "h": "element", "x": "x", "z": "z"}
_VALIDATED_ARGS: contextvars.ContextVar[tuple] = contextvars.ContextVar("equican_group_validated", default=())


class Unchecked:
    """[`Group.unchecked`][equican.group.Group.unchecked]: attribute access returns the bound member, called with
    validation switched off for the duration of the call (members it calls in turn included)."""

    __slots__ = ("_group",)

    def __init__(self, group: Group) -> None:
        self._group = group

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._group, name)
        if not callable(member):
            return member

        def call(*args: Any, **kwargs: Any) -> Any:
            # The flag reaches the members this one calls in turn (an act_inverse that inverts through the public
            # inverse), so nothing inside an unchecked call validates or synchronises with the host.
            token = _TRUSTED.set(True)
            try:
                first = next((a for a in args if isinstance(a, torch.Tensor)), None)
                if first is not None and V.autocast_enabled(first):
                    # The same numerics as a validated call, only without its checks: elements are computed in
                    # their own dtype with autocast off (under bfloat16 autocast a monotone inverse's Newton step
                    # mixed bfloat16 and float32 tensors and raised; an affine compose lost 8 bits).
                    with torch.autocast(first.device.type, enabled=False):
                        return member(*args, **kwargs)
                return member(*args, **kwargs)
            finally:
                _TRUSTED.reset(token)

        return call


def wrap_factory(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    """Validate ``batch``/``device``/``dtype`` and supply a seeded generator for identity/sample."""

    @functools.wraps(fn)
    def wrapper(self: Group, batch: int, *, device: Any = None, dtype: torch.dtype | None = None,
                **kwargs: Any) -> torch.Tensor:
        where = f"{type(self).__name__}.{method}"
        V.require_batch_size(batch, where=where)
        device, dtype = self._resolve(device, dtype, where=where)
        if method == "sample":
            generator = kwargs.pop("generator", None)
            if generator is None:
                generator = torch.Generator()
                generator.seed()
            elif not isinstance(generator, torch.Generator):
                raise DTypeError(f"{where}: expected generator to be a torch.Generator or None, "
                                   f"got {type(generator).__name__}")
            kwargs["generator"] = generator
        return fn(self, batch, device=device, dtype=dtype, **kwargs)

    return wrapper
