"""The registry of canonicalizer kinds: build any canonicalizer by name, as [`make_group`][equican.group.make_group]
builds a group.

A *kind* is a builder ``build(group, in_channels, options) -> Canonicalizer`` and a frozen dataclass of its options
(the fields are the accepted option names, their defaults the kind's defaults). Registering one makes it known
everywhere a canonicalizer is chosen by name: [`make_canonicalizer`][equican.canon.registry.make_canonicalizer], the
``canonicalizer`` argument of [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized], the training methods
(every kind is also a method of that name, ``equican train --method <kind>``) and ``equican list``:

```python
from dataclasses import dataclass
from equican.canon import register_canonicalizer

@dataclass(frozen=True)
class MineOptions:
    width: int = 16

@register_canonicalizer("mine", options=MineOptions)
def build_mine(group, in_channels, opts):
    return MyCanonicalizer(group, in_channels, opts.width)
```

The built-in kinds ([`equican.canon.kinds`][equican.canon.kinds]) are registered on the first lookup, so that
``import equican`` imports neither torchdeq nor escnn; so are the kinds of installed packages, through the entry-point
group [`ENTRY_POINT_GROUP`][equican.canon.registry.ENTRY_POINT_GROUP] (``"equican.canonicalizers"``).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import validation as V
from ..errors import ConfigError, EquicanWarning, RegistrationError, UnknownNameError
from ..group import Group, load_plugins
from .base import Canonicalizer

__all__ = ["CanonicalizerKind", "NoOptions", "register_canonicalizer", "canonicalizer_kind", "list_canonicalizers",
           "make_canonicalizer", "ENTRY_POINT_GROUP"]


@dataclass(frozen=True)
class NoOptions:
    """The options of a kind that takes none."""


@dataclass(frozen=True)
class CanonicalizerKind:
    """A registered kind.

    Attributes:
        name: the registry name.
        build: ``build(group, in_channels, options) -> Canonicalizer``; ``options`` is an instance of ``options``.
        options: a frozen dataclass whose fields are the kind's options.
        needs_channels: False for kinds that read nothing (the identity): ``in_channels`` may then be None.
        exact: True for kinds equivariant by construction; the training methods then leave out the
            self-supervised canonicalization loss unless asked (``canon_weight`` defaults to 0).
        aliases: other names that find this kind.
    """

    name: str
    build: Callable[[Group, Any, Any], Canonicalizer]
    options: type = NoOptions
    needs_channels: bool = True
    exact: bool = False
    aliases: tuple[str, ...] = ()

    def parse(self, options: Mapping[str, Any] | None, *, where: str) -> Any:
        """The kind's options dataclass from a mapping (lists become tuples; unknown names raise ConfigError)."""
        from ..config import from_options

        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"{where}: expected options to be a mapping of option names to values, "
                              f"got {type(options).__name__}")
        return from_options(self.options, dict(options or {}), where=where)

    def option_names(self) -> tuple[str, ...]:
        """The names of the kind's options."""
        return tuple(f.name for f in dataclasses.fields(self.options) if f.init)


_KINDS: dict[str, CanonicalizerKind] = {}
_ALIASES: dict[str, str] = {}
_BUILTINS = "equican.canon.kinds"
_BUILTINS_LOADED = False
ENTRY_POINT_GROUP = "equican.canonicalizers"
"""The entry-point group through which installed packages register canonicalizer kinds: a package that declares
``[project.entry-points."equican.canonicalizers"] mine = "my_package.canon"`` has ``my_package.canon`` imported on
the first lookup of a kind, so ``equican train --method mine`` finds it."""


def register_canonicalizer(name: str, *, options: type = NoOptions, needs_channels: bool = True,
                           exact: bool = False, aliases: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator registering ``build(group, in_channels, options) -> Canonicalizer`` as the kind ``name``.

    Re-registering the same builder (same module and qualified name, as when a notebook cell runs again) replaces
    the earlier entry with a warning; another builder under a taken name raises.

    Raises:
        RegistrationError: ``name`` or an alias is taken by another builder, or ``options`` is not a dataclass.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise RegistrationError(f"register_canonicalizer: expected a name such as 'mine', got {name!r}")
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise RegistrationError(f"register_canonicalizer({name!r}): expected options to be a dataclass type, got "
                                f"{options!r}")

    def register(build: Callable) -> Callable:
        kind = CanonicalizerKind(name, build, options, needs_channels, exact, tuple(aliases))
        for key in (name, *aliases):
            taken = _KINDS.get(_ALIASES.get(key, key))
            if taken is None:
                continue
            if _qualified(taken.build) != _qualified(build):
                raise RegistrationError(f"register_canonicalizer: the name {key!r} is taken by "
                                        f"{_qualified(taken.build)}")
            warnings.warn(EquicanWarning(f"register_canonicalizer: {key!r} re-registered by "
                                         f"{_qualified(build)}; the earlier definition is replaced"), stacklevel=3)
        _KINDS[name] = kind
        _ALIASES.update({alias: name for alias in aliases})
        return build

    return register


def _qualified(build: Callable) -> str:
    return f"{getattr(build, '__module__', '?')}.{getattr(build, '__qualname__', repr(build))}"


def _describe(value: object) -> str:
    """``value``'s type and a short repr, for an error message."""
    try:
        text = repr(value)
    except Exception:  # a plugin's object whose repr itself fails must not hide the error being reported
        text = "<repr failed>"
    return f"{type(value).__module__}.{type(value).__qualname__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module(_BUILTINS)
        load_plugins(ENTRY_POINT_GROUP, "canonicalizer")


def list_canonicalizers() -> list[str]:
    """The registered kind names, sorted (aliases not included)."""
    _load_builtins()
    return sorted(_KINDS)


def canonicalizer_kind(name: str) -> CanonicalizerKind:
    """The kind registered under ``name`` (or an alias of it).

    Raises:
        UnknownNameError: no such kind (the message lists the kinds and the closest name).
    """
    _load_builtins()
    kind = _KINDS.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if kind is None:
        raise UnknownNameError(f"unknown canonicalizer kind {name!r}: registered kinds are "
                               f"{', '.join(list_canonicalizers())}"
                               f"{V.did_you_mean(name, list(_KINDS)) or V.did_you_mean(name, list(_ALIASES))}")
    return kind


def make_canonicalizer(kind: str, group: Group, in_channels: int | None = None,
                       options: Mapping[str, Any] | None = None) -> Canonicalizer:
    """Build a canonicalizer of the registered ``kind`` for ``group``, reading ``in_channels``-channel images.

    The built-in kinds and their options are listed in [`equican.canon.kinds`][equican.canon.kinds].

    Args:
        kind: a name from [`list_canonicalizers`][equican.canon.registry.list_canonicalizers] (or an alias).
        group: the group whose elements are predicted.
        in_channels: channels of the images the canonicalizer reads (None only for kinds that read nothing).
        options: the kind's options by name; None for its defaults.

    Returns:
        The canonicalizer, with its arguments recorded in ``canonicalizer_config`` (a dict: ``kind``, ``group``,
        ``group_options``, ``in_channels``, ``options``) so that
        [`save_pretrained`][equican.canon.base.Canonicalizer.save_pretrained] can write them.

    Raises:
        UnknownNameError: an unknown kind. ConfigError: an unknown option, an invalid value, or a group the kind
            does not support. RegistrationError: the kind's builder returned something that is not a
            [`Canonicalizer`][equican.canon.base.Canonicalizer] (the message names the kind, the builder and what
            it returned).
    """
    spec = canonicalizer_kind(kind)
    where = f"canonicalizer {spec.name!r}"
    V.require_group(group, where=where)
    opts = spec.parse(options, where=where)
    if spec.needs_channels:
        if in_channels is None:
            raise ConfigError(f"{where}: expected in_channels (the channels of what it reads), got None")
        V.require_int(in_channels, low=1, where=where, name="in_channels")
    module = spec.build(group, in_channels, opts)
    if not isinstance(module, Canonicalizer):
        # A plugin's bug, named as such: otherwise the first attribute access below fails with an AttributeError
        # that names neither the kind nor the builder.
        raise RegistrationError(f"{where}: expected its builder {_qualified(spec.build)} to return a Canonicalizer "
                                f"(an equican.canon.Canonicalizer instance), got {_describe(module)}")
    # What rebuilds it (save_pretrained / from_pretrained): the kind, the group by name and constructor options, the
    # channels and the options as given (JSON-checked only when saved).
    module.canonicalizer_config = {"kind": spec.name, "group": group.name, "group_options": group._config(),
                                   "in_channels": in_channels, "options": dict(options or {})}
    if not group.name:
        module.canonicalizer_config["group_class"] = type(group).__name__
    return module
