"""equican: equivariance by canonicalization over many groups.

The core (this package) is group-agnostic; concrete groups live in the top-level package ``groups`` and are found
through the registry (:func:`make_group`, :func:`list_groups`), which imports them on first lookup.
"""

from .errors import EquicanError
from .group import Group, Tolerance, group_class, list_groups, make_group
from .canon import Canonicalized, Canonicalizer, CanonResult
from .latent import LatentCanonicalized, create_model

__version__ = "0.1.0"

__all__ = ["EquicanError", "Group", "Tolerance", "group_class", "list_groups", "make_group", "Canonicalized",
           "Canonicalizer", "CanonResult", "LatentCanonicalized", "create_model", "__version__"]
