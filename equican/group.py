"""The [`Group`][equican.group.Group] interface, its registry, and the conventions every group follows.

A group here is a family of spatial transformations of images, with elements held as plain batched tensors.

Convention:
    Stated once, for every group; the law tests in [`equican.testing`][equican.testing] enforce it.

    * **Elements** are tensors ``g`` of shape ``(B, *group.param_shape)``, float32 or float64. There are no element
      objects; a batch of ``B`` elements is one tensor.
    * **Composition** ``compose(g, h)`` is the element ``gh`` that applies ``h`` first, then ``g``:
      ``act(compose(g, h), x) == act(g, act(h, x))``.
    * **Action on images** ``x`` of shape ``(B, C, H, W)``: ``act(g, x)(u) = x(g⁻¹·u)``, where ``u`` is a point in
      normalized coordinates ``[-1, 1]²`` (``u = (u_x, u_y)``, x along the width, y along the height and pointing
      *down* the rows), with ``-1`` and ``1`` at the centres of the border pixels (``align_corners=True``).
      Element ``g`` of the batch acts on image ``b`` of the batch.
    * **Borders**: where ``g⁻¹·u`` leaves the image the value is 0 (zero padding); groups that map the square onto
      itself (monotone scaling, rot90) never sample outside it.
    * **Differentiability**: ``act`` is differentiable in both ``g`` and ``x`` (bilinear sampling); discrete groups
      (``discrete = True``) only in ``x``.
    * **Randomness** comes only from the ``generator`` passed to [`Group.sample`][equican.group.Group.sample]; the
      global RNG is never used.

Registration: ``class MyGroup(Group, name="mine")`` registers ``MyGroup`` under ``"mine"``;
[`make_group`][equican.group.make_group] builds one by name and [`list_groups`][equican.group.list_groups] lists the
names. Every registered group must be constructible with no arguments (at a small default). A duplicate name raises
[`RegistrationError`][equican.errors.RegistrationError]. Installed packages register groups through the entry-point
group [`ENTRY_POINT_GROUP`][equican.group.ENTRY_POINT_GROUP] (``"equican.groups"``), loaded on the first lookup.

Validation is written once, here: every ``compose``, ``inverse``, ``act``, ``distance``, ``to_unconstrained`` and
``from_unconstrained`` a subclass defines is wrapped so that its tensor arguments are checked (shape, dtype, device,
finiteness, [`Group.invalid_reason`][equican.group.Group.invalid_reason]) before the subclass's code runs, and its
result is checked to be finite. A call that passes costs one host synchronisation for the finiteness of all its
arguments, one for a group's own ``invalid_reason`` (if it has one) and one for the result; a failing check is
re-run in the documented order so that the error and its message are the same as ever. A member that a validated
member of the same group calls with the very tensors it validated skips the repeated checks. Internal loops call
[`Group.unchecked`][equican.group.Group.unchecked] members, which check nothing and never synchronise.
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from . import validation as V
from ._member_checks import Unchecked, validated, wrap_factory
from .errors import (ConfigError, DTypeError, EquicanWarning, InvalidElementError, RegistrationError, ShapeError,
                     UnknownNameError)

__all__ = ["Group", "Tolerance", "make_group", "list_groups", "group_class", "default_group", "ENTRY_POINT_GROUP"]


@dataclass(frozen=True)
class Tolerance:
    """How closely a group's laws hold in a given dtype.

    Attributes:
        element: bound on [`Group.distance`][equican.group.Group.distance] for the algebraic laws (identity, inverse,
            associativity).
        action: bound on the largest absolute pixel difference in the action laws (``act(identity) = id``, homomorphism,
            inverse action), measured by [`equican.testing.check_group_laws`][equican.testing.laws.check_group_laws] on
            its test images (band-limited for approximate groups, white noise for exact ones) with values in ``[0, 1]``.
    """

    element: float
    action: float


_REGISTRY: dict[str, type[Group]] = {}
_BUILTINS_LOADED = False

# Methods whose tensor arguments are validated, and the role of each positional argument.
_VALIDATED: dict[str, tuple[str, ...]] = {
    "compose": ("g", "h"),
    "inverse": ("g",),
    "act": ("g", "x"),
    "act_inverse": ("g", "x"),
    "distance": ("g", "h"),
    "to_unconstrained": ("g",),
    "from_unconstrained": ("z",),
}


class Group(abc.ABC):
    """Abstract base of every group; subclass it and fill in six members.

    A subclass writes ``param_shape``, ``identity``, ``sample``, ``compose``, ``inverse`` and ``act``; everything
    else has a working default that may be overridden. See the module docstring for the conventions.

    Attributes:
        name: class attribute, the registry name (set by ``class X(Group, name="x")``).
        exact: class attribute, True when the action laws hold to floating-point precision on any image; False
            when bilinear resampling (or a discretized element) makes them hold only approximately, on band-limited
            images.
        discrete: class attribute, True for finite groups (no tangent directions: ``act`` is not differentiable in
            ``g``).
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    discrete: ClassVar[bool] = False

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method, roles in _VALIDATED.items():
            if method in cls.__dict__:
                setattr(cls, method, validated(method, roles, cls.__dict__[method], Group))
        for method in ("identity", "sample"):
            if method in cls.__dict__:
                setattr(cls, method, wrap_factory(cls.__dict__[method], method))
        if name is not None:
            _register(cls, name)

    # ------------------------------------------------------------------ the six members a group must write
    @property
    @abc.abstractmethod
    def param_shape(self) -> tuple[int, ...]:
        """Shape of one element; a batch of elements has shape ``(B, *param_shape)``."""

    @abc.abstractmethod
    def identity(self, batch: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` copies of the identity element, shape ``(batch, *param_shape)``."""

    @abc.abstractmethod
    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` random elements at the group's configured strength, shape ``(batch, *param_shape)``.

        All randomness comes from ``generator``; with ``generator=None`` a freshly seeded one is used.
        """

    @abc.abstractmethod
    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The product ``gh`` (``h`` applied first), shape ``(B, *param_shape)``."""

    @abc.abstractmethod
    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        """The inverse ``g⁻¹``, shape ``(B, *param_shape)``."""

    @abc.abstractmethod
    def act(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The transformed images ``act(g, x)(u) = x(g⁻¹·u)``: ``x`` and the result have shape ``(B, C, H, W)``."""

    # ------------------------------------------------------------------ defaults, overridable
    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """Shape of the unconstrained parameters ``z`` consumed by
        [`from_unconstrained`][equican.group.Group.from_unconstrained] (per element)."""
        return self.param_shape

    @property
    def chart_transposed(self) -> tuple[int, ...]:
        """For a grid chart (``unconstrained_shape == (C, h, w)``): the channels whose logits sit transposed on the
        image, ``z[c, i, j]`` describing image column ``i`` at row-band ``j`` (e.g. monotone scaling's y-warps, one
        row of logits per coarse *column*). A network that predicts ``z`` from image features reads those channels
        from features pooled onto a ``w × h`` grid and transposes them. Default: none."""
        return ()

    def from_unconstrained(self, z: torch.Tensor) -> torch.Tensor:
        """Map unconstrained parameters ``z: (B, *unconstrained_shape)`` to valid elements ``(B, *param_shape)``.

        Canonicalizer heads and optimizers work in this chart. ``z = 0`` must give the identity. The default is the
        identity map, for groups whose every parameter tensor is a valid element.
        """
        return z

    def to_unconstrained(self, g: torch.Tensor) -> torch.Tensor:
        """A right inverse of [`from_unconstrained`][equican.group.Group.from_unconstrained]:
        ``from_unconstrained(to_unconstrained(g)) ≈ g``.

        Maps elements ``g: (B, *param_shape)`` to chart parameters ``(B, *unconstrained_shape)``. The default is the
        identity map, matching the default [`from_unconstrained`][equican.group.Group.from_unconstrained].
        """
        return g

    def distance(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """A distance between elements, shape ``(B,)``; the default is the Euclidean distance of the parameters."""
        return (g - h).flatten(1).norm(dim=1)

    def tolerance(self, dtype: torch.dtype) -> Tolerance:
        """How closely the laws hold in ``dtype`` (see [`Tolerance`][equican.group.Tolerance]); groups override with
        measured values."""
        eps = torch.finfo(dtype).eps
        return Tolerance(element=1e3 * eps, action=1e2 * eps)

    def invalid_reason(self, g: torch.Tensor) -> str | None:
        """Why ``g: (B, *param_shape)`` (finite) is not a batch of valid elements, or None if it is. Override to
        restrict."""
        return None

    def check(self, g: torch.Tensor, *, name: str = "g", where: str | None = None) -> None:
        """Raise a typed error unless ``g`` is a batch of valid elements of shape ``(B, *param_shape)``."""
        where = where or f"{type(self).__name__}.check"
        self._check_params(g, self.param_shape, where=where, name=name)
        reason = self.invalid_reason(g)
        if reason is not None:
            raise InvalidElementError(f"{where}: expected {name} to be valid elements of {self!r}, got {reason}")

    def check_shape(self, g: torch.Tensor, *, name: str = "g", where: str | None = None) -> None:
        """Raise a typed error (DTypeError, DeviceError, ShapeError) unless ``g`` is a float32/float64 tensor of shape
        ``(B, *param_shape)``: the checks of [`check`][equican.group.Group.check] that need no host synchronisation.

        Neither finiteness nor validity is checked: for entry points whose elements may be degenerate by design (a
        canonicalizer's prediction during training, which must cost loss rather than raise) before they reach
        [`unchecked`][equican.group.Group.unchecked] members, which accept such elements but not other shapes.
        """
        self._check_layout(g, self.param_shape, where=where or f"{type(self).__name__}.check_shape", name=name)

    # ------------------------------------------------------------------ helpers derived from the six members
    def act_inverse(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``act(inverse(g), x)``: the canonicalizing direction; groups may override with a faster route.

        Args:
            g: elements ``(B, *param_shape)``.
            x: images ``(B, C, H, W)``.

        Returns:
            The transformed images, ``(B, C, H, W)``.
        """
        return self.act(self.inverse(g), x)

    @property
    def unchecked(self) -> Unchecked:
        """The group's members without argument validation, for internal loops whose inputs were validated once.

        ``group.unchecked.act(g, x)`` runs the group's own ``act`` without the shape, dtype, finiteness and validity
        checks that every public call makes (and without their host synchronisation, which stalls a GPU), and
        without checking that its result is finite. A solver that validated ``x`` at its entry point and builds
        every ``g`` itself calls the members this way in its iterations. Numerics are those of the public call:
        under ``torch.autocast`` the member runs with autocast off, in its arguments' own dtype.

        The caller guarantees what the public call would have checked; nothing else is promised:

        * every element ``g``/``h`` is a tensor of shape ``(B, *param_shape)``, float32 or float64; ``z`` of
          ``from_unconstrained`` is ``(B, *unconstrained_shape)``, float32 or float64;
        * images ``x`` are ``(B, C, H, W)`` with ``H, W >= 2``, of the elements' dtype (float32 or float64: a
          float16/bfloat16 image is widened only by the public members) and device, with the elements' batch size;
        * the tensors of one call share one device and one dtype;
        * every value is finite (``from_unconstrained`` may map a large finite ``z`` to a non-finite element).

        Within that, an element may be invalid (an affine map with ``det <= 0``, a log-scale beyond what the dtype
        represents): the result is then meaningless or non-finite, which the library's unchecked callers detect with
        ``torch.isfinite`` and answer with the identity, or a member that cannot proceed raises its own typed error
        (the monotone inverse: [`ConvergenceError`][equican.errors.ConvergenceError]). Arguments outside the list
        give undefined behaviour: a wrong result, or whatever torch raises (``RuntimeError``, ``IndexError``: a
        discrete group's ``to_unconstrained`` of NaN, a monotone ``compose`` of NaN), never a typed equican error.
        So never pass user input: every public function of equican that calls unchecked members validates what it
        was given first (with [`check`][equican.group.Group.check], or
        [`check_shape`][equican.group.Group.check_shape] where the values are the library's own).
        """
        return Unchecked(self)

    def identity_like(self, g: torch.Tensor) -> torch.Tensor:
        """Identity elements with the batch size, device and dtype of ``g``: shape ``(B, *param_shape)``."""
        return self.identity(g.shape[0], device=g.device, dtype=g.dtype)

    @staticmethod
    def uniform(shape: tuple[int, ...], low: float, high: float, *, generator: torch.Generator,
                device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """Uniform draws in ``[low, high)`` of shape ``shape``, for writing [`sample`][equican.group.Group.sample].

        Drawn from ``generator`` on the generator's own device, then moved to ``device``: the same seed gives the same
        elements on every device. Inside ``sample`` the arguments are already resolved (``generator`` is never None).
        """
        u = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
        return (low + (high - low) * u).to(device)

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _check_layout(t: torch.Tensor, shape: tuple[int, ...], *, where: str, name: str) -> None:
        V.require_tensor(t, where=where, name=name)
        if t.ndim != 1 + len(shape) or tuple(t.shape[1:]) != tuple(shape):
            raise ShapeError(f"{where}: expected {name} of shape {V.fmt_shape(('B', *shape))}, "
                             f"got {V.fmt_shape(t.shape)}")
        V.require_float(t, where=where, name=name)

    @staticmethod
    def _check_params(t: torch.Tensor, shape: tuple[int, ...], *, where: str, name: str) -> None:
        Group._check_layout(t, shape, where=where, name=name)
        V.require_finite(t, where=where, name=name)

    @staticmethod
    def _resolve(device: torch.device | str | None, dtype: torch.dtype | None, *,
                 where: str) -> tuple[torch.device, torch.dtype]:
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in V.FLOAT_DTYPES:
            raise DTypeError(f"{where}: expected dtype float32 or float64, got {dtype}")
        return V.require_device(device, where=where), dtype

    def _config(self) -> dict[str, Any]:
        """The constructor arguments of this instance (read back from same-named attributes)."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config() == other._config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._config().items()))))


# The defaults written on Group itself are validated too: __init_subclass__ only wraps what a subclass defines, so a
# group keeping the default chart or distance (Rotation2d, Scale2d) would otherwise accept any shape, NaN included.
for _method in ("act_inverse", "distance", "to_unconstrained", "from_unconstrained"):
    setattr(Group, _method, validated(_method, _VALIDATED[_method], Group.__dict__[_method], Group))
del _method


def _register(cls: type[Group], name: str) -> None:
    """Register ``cls`` under ``name``.

    A class with the same module and qualified name as the registered one replaces it, with a warning: that is the
    same class defined again (a notebook cell re-run, ``importlib.reload``), and refusing it would leave the old,
    stale class in the registry. Two different classes under one name still raise.
    """
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"{cls.__name__}: expected a non-empty string name, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name]
        if (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RegistrationError(
                f"cannot register {cls.__module__}.{cls.__qualname__} as {name!r}: the name is taken by "
                f"{other.__module__}.{other.__qualname__}"
            )
        warnings.warn(EquicanWarning(
            f"group {name!r}: {cls.__module__}.{cls.__qualname__} was defined again; the new definition replaces "
            f"the registered one"), stacklevel=4)
    cls.name = name
    _REGISTRY[name] = cls


ENTRY_POINT_GROUP = "equican.groups"
"""The entry-point group through which installed packages register their groups: a package that declares
``[project.entry-points."equican.groups"] shear = "my_package.shear"`` has ``my_package.shear`` imported on the
first registry lookup, so its groups are known to [`make_group`][equican.group.make_group], the ``equican``
command and the registry-parametrized tests, like the built-in ones."""


def load_plugins(entry_point_group: str, what: str) -> None:
    """Import every installed module declared under ``entry_point_group`` (e.g. ``"equican.groups"``); a module that
    fails to import is skipped with an [`EquicanWarning`][equican.errors.EquicanWarning] naming it (``what``: the
    word for its entries in that message, e.g. ``"group"``)."""
    for entry in importlib.metadata.entry_points(group=entry_point_group):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must not take the built-in ones down with it
            warnings.warn(EquicanWarning(
                f"equican: skipped the {what} plugin {entry.name!r} ({entry.value}): importing it raised "
                f"{type(exc).__name__}: {exc}"), stacklevel=4)


def _load_builtins() -> None:
    # The core never imports concrete groups at module load; the first registry lookup does, once: the built-in
    # package, then every installed plugin module.
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("equican_groups")
        load_plugins(ENTRY_POINT_GROUP, "group")


def list_groups() -> list[str]:
    """The registered group names, sorted (built-in groups and any user group imported so far)."""
    _load_builtins()
    return sorted(_REGISTRY)


def default_group() -> str:
    """The name of the group used where none is named: the built-in package's ``DEFAULT_GROUP``
    ([`equican_groups.DEFAULT_GROUP`][equican_groups.DEFAULT_GROUP]), so that the core never names a concrete group."""
    _load_builtins()
    return importlib.import_module("equican_groups").DEFAULT_GROUP


def group_class(name: str) -> type[Group]:
    """The class registered under ``name``; an unknown name raises
    [`UnknownNameError`][equican.errors.UnknownNameError]."""
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown group {name!r}: registered groups are {', '.join(sorted(_REGISTRY))}"
                               f"{V.did_you_mean(name, _REGISTRY)}")
    return _REGISTRY[name]


def make_group(name: str, **kwargs: Any) -> Group:
    """Build the group registered under ``name`` with keyword arguments, e.g. ``make_group("monotone", cells=8)``."""
    cls = group_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(p for p in inspect.signature(cls).parameters) or "none"
        raise ConfigError(f"make_group({name!r}): {exc}; accepted arguments: {accepted}") from None
    return cls(**kwargs)
