"""equican: equivariance by canonicalization over many groups.

The core (this package) is group-agnostic; concrete groups live in the package ``equican_groups`` and are found
through the registry ([`make_group`][equican.group.make_group], [`list_groups`][equican.group.list_groups]), which
imports them on first lookup.

The names below load on first access (PEP 562), so ``import equican`` and the ``equican`` command's ``--help`` do
not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
"""The package version (PEP 440), the same as the installed distribution's."""

# name -> the submodule that defines it
_LAZY = {
    "EquicanError": "errors",
    "Group": "group", "Tolerance": "group", "group_class": "group", "list_groups": "group", "make_group": "group",
    "Canonicalized": "canon", "Canonicalizer": "canon", "CanonResult": "canon",
    "LatentCanonicalized": "latent", "create_model": "latent",
}

__all__ = ["EquicanError", "Group", "Tolerance", "group_class", "list_groups", "make_group", "Canonicalized",
           "Canonicalizer", "CanonResult", "LatentCanonicalized", "create_model", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .canon import Canonicalized, Canonicalizer, CanonResult
    from .errors import EquicanError
    from .group import Group, Tolerance, group_class, list_groups, make_group
    from .latent import LatentCanonicalized, create_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
