"""The built-in groups of equican; importing this package registers them.

Each module holds one group, a plain subclass of [`equican.Group`][equican.group.Group]:

* ``monotone``: [`MonotoneScaling`][equican_groups.monotone.MonotoneScaling], local (spatially varying) scaling by monotone
  piecewise-linear warps.
* ``rotation`` / ``cyclic``: [`Rotation2d`][equican_groups.rotation.Rotation2d] (SO(2)) and
  [`CyclicRotation2d`][equican_groups.rotation.CyclicRotation2d] (C_n, exact rot90 for n=4).
* ``o2`` / ``dihedral``: [`O2`][equican_groups.reflection.O2] (rotations and mirror images) and
  [`Dihedral`][equican_groups.reflection.Dihedral] (D_n, exact flip and rot90 for n=4).
* ``scale``: [`Scale2d`][equican_groups.scale.Scale2d], global isotropic scaling about the image centre.
* ``affine``: [`Affine2d`][equican_groups.affine.Affine2d], GL⁺(2) ⋉ R², orientation-preserving affine maps.
"""

from .affine import Affine2d
from .monotone import MonotoneScaling
from .reflection import O2, Dihedral
from .rotation import CyclicRotation2d, Rotation2d
from .scale import Scale2d

__all__ = ["Affine2d", "CyclicRotation2d", "Dihedral", "MonotoneScaling", "O2", "Rotation2d", "Scale2d",
           "DEFAULT_GROUP"]

DEFAULT_GROUP = "monotone"
"""The group used where none is named (the training methods, ``create_model``, ``LatentCanonicalized``): the one
place that names it; the core reads it through [`default_group`][equican.group.default_group]."""
