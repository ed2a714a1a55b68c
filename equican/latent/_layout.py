"""Layout conversion: block features (tokens, NHWC or NCHW) to the ``(B, C, H, W)`` images the groups act on, and
back."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import validation as V
from ..errors import ShapeError
from .blocks import _feature_base, _num_prefix_tokens, _patch_embed


def to_image(features: torch.Tensor, layout: str, model: nn.Module, image: torch.Tensor | None, where: str,
             role: str) -> tuple[torch.Tensor, Any]:
    """``(B, C, H, W)`` view of block features in ``layout``, and the context ``from_image``
    needs to undo it (the prefix tokens of a token layout). ``image`` is the call's input image (for a dynamic token
    grid), or None; ``role`` names the features in errors (``"input"``/``"output"``)."""
    if layout == "tokens":
        if features.ndim != 3:
            raise ShapeError(f"{where}: expected token features (B, N, C) as the block's {role}, "
                             f"got {V.fmt_shape(features.shape)}")
        b, n, c = features.shape
        p, (gh, gw) = token_grid(model, n, image, where)
        return features[:, p:].reshape(b, gh, gw, c).permute(0, 3, 1, 2), features[:, :p]
    if features.ndim != 4:
        raise ShapeError(f"{where}: expected {layout} features as the block's {role}, "
                         f"got {V.fmt_shape(features.shape)}")
    return (features.permute(0, 3, 1, 2) if layout == "NHWC" else features), None


def from_image(image: torch.Tensor, layout: str, context: Any) -> torch.Tensor:
    """The inverse of ``to_image``: ``(B, C, H, W)`` back to ``layout``."""
    if layout == "tokens":
        return torch.cat([context, image.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)  # flatten: B may be 0
    return image.permute(0, 2, 3, 1) if layout == "NHWC" else image


def token_grid(model: nn.Module, tokens: int, image: torch.Tensor | None, where: str) -> tuple[int, tuple[int, int]]:
    """``(P, (H, W))``: the prefix tokens and the patch grid of a block's ``tokens`` tokens.

    ``P`` is ``model.num_prefix_tokens``, or 0 when the tokens fill the grid exactly: models that append their
    class token after the blocks (CaiT) have none in them.
    """
    patch_embed = _patch_embed(model)
    prefixes = dict.fromkeys((_num_prefix_tokens(model) or 0, 0))  # distinct, in order
    grid = getattr(patch_embed, "grid_size", None)
    if getattr(_feature_base(model), "dynamic_img_size", False):
        if image is not None and image.ndim == 4:
            grid = patch_embed.dynamic_feat_size(tuple(image.shape[-2:]))  # type: ignore[union-attr]
        elif grid is None or all(grid[0] * grid[1] != tokens - p for p in prefixes):
            # no image in this call (a block called on its own): a square grid is the only reading left
            squares = [(p, round((tokens - p) ** 0.5)) for p in prefixes if tokens > p]
            grid = next(((s, s) for p, s in squares if s * s == tokens - p), None)
    for p in prefixes:
        if grid is not None and grid[0] * grid[1] == tokens - p:
            return p, (int(grid[0]), int(grid[1]))
    raise ShapeError(f"{where}: {tokens} tokens are not {' or '.join(map(str, prefixes))} prefix tokens and the "
                     f"patch grid {tuple(grid) if grid is not None else None} (patch dropout and token pruning "
                     f"are not supported)")
