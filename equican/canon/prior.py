"""Canonicalization priors that train: losses toward the identity element through a canonicalizer's own scores or
vector field.

The plain prior, [`Canonicalizer.prior_loss`][equican.canon.base.Canonicalizer.prior_loss] of an element tensor, is the
squared distance of ``g`` to the identity. For a discrete group the element comes out of an arg-max, so that distance
has no gradient; for a continuous one it is flat far from the identity. The losses here read what the canonicalizer
computed before choosing (Mondal et al. 2023, "Equivariance with learned canonicalization functions", sec. 4):

* [`score_prior`][equican.canon.prior.score_prior]: the cross-entropy of a discrete group's scores toward the
  identity's score, differentiable whatever element the arg-max picked;
* [`vector_prior`][equican.canon.prior.vector_prior]: ``1 - cos θ`` of the angle ``θ`` of a predicted vector (and
  ``1 - sin φ`` of the angle ``φ`` from the first vector to a second, whose orientation is the reflection),
  scale-free and smooth at every angle but the opposite one.

[`Canonicalizer.prior_loss`][equican.canon.base.Canonicalizer.prior_loss] of a
[`CanonResult`][equican.canon.base.CanonResult] uses them through
[`Canonicalizer.result_prior`][equican.canon.base.Canonicalizer.result_prior].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from ..group import Group

__all__ = ["identity_index", "score_prior", "vector_prior"]


def identity_index(group: Group) -> int:
    """The index ``i`` of the score that selects the identity of a discrete group with scores ``(n,)``.

    Found from the group itself: the one-hot score vector whose element
    (``from_unconstrained``) is nearest to the identity, so no labelling is assumed.

    Raises:
        ConfigError: the group is not discrete with a score chart ``(n,)``.
    """
    shape = tuple(group.unconstrained_shape)
    if not group.discrete or len(shape) != 1:
        raise ConfigError(f"identity_index: expected a discrete group with scores of shape (n,), got {group!r} "
                          f"(discrete={group.discrete}, unconstrained shape {shape})")
    with torch.no_grad():
        elements = group.unchecked.from_unconstrained(torch.eye(shape[0], dtype=torch.float64))  # (n, *param_shape)
        e = group.unchecked.identity(shape[0], device=elements.device, dtype=torch.float64)
        return int(group.unchecked.distance(elements, e).argmin())


def score_prior(logits: torch.Tensor, index: int) -> torch.Tensor:
    """Cross-entropy of the scores ``logits: (B, n)`` toward the score ``index`` (the identity's): ``(B,)``.

    Its gradient ``softmax(logits) - onehot(index)`` is non-zero until the identity wins by a margin, whichever element
    the arg-max picks.
    """
    if logits.ndim != 2 or not 0 <= index < logits.shape[1]:
        raise ShapeError(f"score_prior: expected logits of shape (B, n) with n > index = {index}, "
                         f"got {tuple(logits.shape)}")
    target = torch.full((logits.shape[0],), index, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="none")


def vector_prior(v: torch.Tensor, w: torch.Tensor | None = None, *, eps: float = 1e-12) -> torch.Tensor:
    """``1 - cos θ`` of the angle ``θ`` of ``v: (B, 2)``, plus ``1 - sin φ`` of the angle ``φ`` from ``v`` to ``w``
    when ``w: (B, 2)`` is given: ``(B,)``, in ``[0, 2]`` (``[0, 4]`` with ``w``).

    ``θ = 0`` is the identity rotation and ``sin φ > 0`` (``v × w > 0``) the identity's orientation (no mirror), as
    [`VectorFieldCanonicalizer`][equican.canon.vector.VectorFieldCanonicalizer] reads them. Invariant to the vectors'
    lengths (only their directions are the element), so the prior does not shrink or inflate the field.
    """
    if v.ndim != 2 or v.shape[1] != 2 or (w is not None and w.shape != v.shape):
        raise ShapeError(f"vector_prior: expected v (and w) of shape (B, 2), got {tuple(v.shape)}"
                         f"{'' if w is None else f' and {tuple(w.shape)}'}")
    norm = v.norm(dim=1).clamp_min(eps)
    loss = 1 - v[:, 0] / norm
    if w is not None:
        cross = v[:, 0] * w[:, 1] - v[:, 1] * w[:, 0]
        loss = loss + 1 - cross / (norm * w.norm(dim=1).clamp_min(eps))
    return loss
