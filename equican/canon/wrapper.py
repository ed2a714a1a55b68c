"""``Canonicalized``: a model made invariant or equivariant by canonicalizing its input."""

from __future__ import annotations

import torch
from torch import nn

from .. import validation as V
from ..errors import ConfigError, ShapeError
from .base import Canonicalizer

__all__ = ["Canonicalized"]

_OUTPUTS = ("invariant", "equivariant")


class Canonicalized(nn.Module):
    """``model`` run on canonical inputs; for equivariant outputs, mapped back by the predicted element.

    ``invariant``: ``y = model(act(g⁻¹, x))``; any output shape. ``equivariant``: ``y = act(g, model(act(g⁻¹, x)))`` for
    dense outputs ``(B, C', H, W)`` on the input's grid (segmentation maps, feature maps), mapped back with
    [`uncanonicalize`][equican.canon.base.Canonicalizer.uncanonicalize] (the group's inverse action of the canonicalizing
    element).

    Args:
        model: the network to wrap.
        canonicalizer: a [`Canonicalizer`][equican.canon.base.Canonicalizer].
        output: ``"invariant"`` or ``"equivariant"``.

    Shapes:
        ``x: (B, C, H, W)`` -> ``model``'s output (invariant) or ``(B, C', H, W)`` (equivariant).
    """

    def __init__(self, model: nn.Module, canonicalizer: Canonicalizer, output: str = "invariant") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Canonicalized: expected model to be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(canonicalizer, Canonicalizer):
            raise ConfigError(f"Canonicalized: expected canonicalizer to be an equican Canonicalizer, "
                              f"got {type(canonicalizer).__name__}")
        if output not in _OUTPUTS:
            raise ConfigError(f"Canonicalized: expected output in {_OUTPUTS}, got {output!r}")
        self.model, self.canonicalizer, self.output = model, canonicalizer, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``model`` on the canonical inputs of ``x: (B, C, H, W)``.

        Returns:
            ``model``'s output (``"invariant"``, any shape), or that output ``(B, C', H, W)`` mapped back to the
            input's frame (``"equivariant"``).

        Raises:
            ShapeError: ``"equivariant"`` and the model's output is not ``(B, C', H, W)`` on the input's grid.
        """
        res = self.canonicalizer(x)
        y = self.model(res.x)
        if self.output == "invariant":
            return y
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]:
            got = V.fmt_shape(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ShapeError(f"Canonicalized.forward: expected an equivariant model output of shape "
                             f"({x.shape[0]}, C', {x.shape[-2]}, {x.shape[-1]}), got {got}")
        return self.canonicalizer.uncanonicalize(res, y)

    def extra_repr(self) -> str:
        return f"output={self.output!r}"
