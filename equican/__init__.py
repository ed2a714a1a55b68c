"""equican: equivariance by canonicalization over many groups.

The core (this package) is group-agnostic; concrete groups live in the top-level package ``groups`` and are found
through the registry ([`make_group`][equican.group.make_group], [`list_groups`][equican.group.list_groups]), which
imports them on first lookup.
"""

from .errors import EquicanError
from .group import Group, Tolerance, group_class, list_groups, make_group
from .canon import Canonicalized, Canonicalizer, CanonResult
from .latent import LatentCanonicalized, create_model

__version__ = "0.1.0"
"""The package version (PEP 440), the same as the installed distribution's."""

__all__ = ["EquicanError", "Group", "Tolerance", "group_class", "list_groups", "make_group", "Canonicalized",
           "Canonicalizer", "CanonResult", "LatentCanonicalized", "create_model", "__version__"]
