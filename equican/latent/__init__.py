"""Latent canonicalization: canonicalize -> block -> uncanonicalize around chosen blocks of a timm model.

The paper's key move (Rahman et al., ICCV 2025) is to canonicalize intermediate feature maps, not only the input.
[`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] does it for any timm model without copying any
architecture's forward pass: it registers a forward pre-hook and a forward hook on each chosen block (stage), and at
insertion point ``k`` the features go

```text
features f → canonical features act(h_k, f) → block k → act(g_k, ·)
```

with ``h_k = g_k⁻¹`` the canonicalizing element; the last step
([`uncanonicalize`][equican.canon.base.Canonicalizer.uncanonicalize]) is switchable per point.

The element goes from the pre-hook to the post-hook of the same block call through a per-call record that is
created when the call starts and dropped when it ends: nothing is kept between calls. Because only hooks are added,
the timm model's parameter names do not change: a bare timm ``state_dict`` loads into ``wrapper.model``, and the
wrapper's own ``state_dict`` is the model's under ``model.`` plus the canonicalizers' under ``canonicalizers.<k>.``.

For example:

```python
import equican
model = equican.create_model("vit_small_patch16_224", group="monotone", canonicalizer="deq", at=(0, 1))
logits = model(images)                       # (B, 1000), timm's contract
logits, results = model.forward_canon(images)  # and the CanonResult of every insertion point
```

Layouts (found from the model; the groups only ever see ``(B, C, H, W)`` images):

* **tokens** (ViT, DeiT, BEiT, EVA, CaiT, MLP-Mixer and other models with ``model.blocks`` and a token grid,
  ``model.patch_embed.grid_size`` or ``model.stem.grid_size``): block inputs ``(B, P + H·W, C)``. The
  ``P = model.num_prefix_tokens`` prefix tokens (class, distillation, register tokens; 0 where the attribute is
  absent, or where the tokens fill the grid exactly, as in CaiT, which appends its class token after the blocks) pass
  through unchanged; the patch tokens are reshaped row-major to ``(B, C, H, W)`` on the patch grid and back. The grid
  is ``grid_size`` (any ``H ≠ W``), or, for a model built with ``dynamic_img_size=True``, the patch embedding's
  ``dynamic_feat_size`` of the input's size.
* **NHWC** stage features (Swin: ``model.layers[i]``, any model with ``model.output_fmt == "NHWC"``): stage inputs
  and outputs ``(B, H, W, C)``, permuted to ``(B, C, H, W)`` and back. A Swin stage starts with its patch merging,
  so its output is on a coarser grid than its input; the group acts in normalized coordinates ``[-1, 1]²``, so one
  element means the same transformation at both resolutions.
* **NCHW** stage features (ResNet ``layer1 … layer4``, ConvNeXt ``model.stages[i]``, any ``model.stages`` or
  ``model.layers`` without ``output_fmt == "NHWC"``): used as they are.

Insertion points are indices into that list, as timm numbers them: ``model.blocks[k]``, ``model.layers[k]``,
``model.stages[k]``, or ``layer{k+1}`` for ResNets (index 0 is ``layer1``). Other layouts can be named explicitly
(``blocks="blocks", layout="NCHW"`` for EfficientNet's stages, for example).

How channel counts are found: the learned canonicalizers need the channels of what they read. For
``canonicalizer_input="image"`` that is the image's channels (``in_channels``, else ``model.in_chans`` /
``in_channels``, else the stem named by timm's ``pretrained_cfg["first_conv"]``, else the first ``Conv2d``). For
``"latent"`` it is measured by one dry forward pass of a zero image (batch 1, ``torch.no_grad``, every submodule in
evaluation mode and restored afterwards, stopped as soon as the last insertion point's input has been seen). Its
size is ``example_input``'s if given, else the patch embedding's ``img_size``, else timm's
``pretrained_cfg["input_size"]``, else 64×64. This works for every layout alike, which reading per-family attributes
(``embed_dim``, ``feature_info``, ...) would not.

Pretrained weights, offline: ``create_model(name, pretrained_file="weights.safetensors", ...)`` loads a local file
through the same adaptation as [`equican.models.build_model`][equican.models.build_model]
(``options={"pretrained_file": ...}``: timm's ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)``, plus
the file's own class and channel counts), before the hooks are added. Or load a bare timm ``state_dict`` afterwards:
``wrapper.model.load_state_dict(sd)``. Nothing is downloaded unless ``pretrained=True`` is passed without a file (as
with ``timm.create_model``).

Limitations:

* Models whose blocks are none of the above (EfficientNet/MobileNet ``blocks`` without a token grid, NaFlexViT's
  variable token sets, models whose stages live under other names) raise [`ConfigError`][equican.errors.ConfigError]
  unless ``blocks=`` and ``layout=`` describe them. Only the listed containers are insertion points: CaiT's
  class-attention blocks (``blocks_token_only``) are not.
* Token models with patch dropout active in training (``patch_drop_rate > 0``) have no patch grid in their blocks
  and raise [`ShapeError`][equican.errors.ShapeError] there.
* ``canonicalizer_input="image"`` needs the input image: call the wrapper (``forward``, ``forward_features``,
  ``forward_canon``) or ``wrapper.model(x)``; calling ``wrapper.model.forward_features`` directly raises
  [`ConfigError`][equican.errors.ConfigError], and so does gradient checkpointing (``set_grad_checkpointing``), which
  recomputes blocks in the backward pass when the image is gone. (Latent input works with checkpointing.)
* Block features must have the canonicalizer's dtype (no reduced-precision autocast of stage features).
* A model is wrapped once: wrapping a wrapped model (or a deepcopy of one, which carries the hooks along) raises.
* A group that changes a feature map's shape (rotations by ±90° of a non-square grid) cannot map it back; the
  group's ``act`` raises.

The package, by job: ``blocks`` finds the insertion points and the layout, ``_probe`` runs the dry forward pass,
``_layout`` converts features to images and back, ``wrapper`` holds the hooks, ``create`` builds from a timm name.
Canonicalizers are built by kind through the registry
([`make_canonicalizer`][equican.canon.registry.make_canonicalizer]).
"""

from .blocks import INPUTS, LAYOUTS, find_blocks
from .create import WRAPPABLE_MODULES, create_model, list_models
from .wrapper import LatentCanonicalized

__all__ = ["LatentCanonicalized", "create_model", "list_models", "WRAPPABLE_MODULES", "find_blocks", "LAYOUTS",
           "INPUTS"]
