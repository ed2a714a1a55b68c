"""Mixed precision: group actions, canonicalizers and the latent wrapper take bfloat16/float16 inputs and run under
``torch.autocast``; elements and solves stay in float32, results come back in the input's dtype.

Tolerances: bfloat16 keeps 8 significant bits, so rounding an image in [0, 1] costs at most half an ulp of 1,
2⁻⁹ ≈ 0.002, on the way in and again on the way out: an action of a bfloat16 image is within 2⁻⁸ ≈ 0.0039 of the
float32 action of the same image (bilinear weights sum to at most 1, so the input's rounding is not amplified).
float16 keeps 11 bits: 2⁻¹¹ ≈ 0.0005. Under autocast with float32 inputs nothing is rounded (the element and the
sampling run in float32 with autocast off), so the results are bit-identical. Measured maxima are in docs/concepts/amp.md.
"""

from __future__ import annotations

import pytest
import torch

import equican
from equican.canon import make_canonicalizer
from equican.errors import DTypeError

REDUCED = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def autocast_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device == "cpu" else torch.float16


def images(b, c, size, device):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(0)).to(device)


@pytest.mark.parametrize("low", list(REDUCED))
def test_every_group_acts_on_reduced_precision_images(group, low, device):
    g = group.sample(3, generator=torch.Generator().manual_seed(1), device=device)
    x = images(3, 2, 24, device)
    reference = group.act(g, x.to(low).float())  # the same (rounded) image in float32
    out = group.act(g, x.to(low))
    assert out.dtype == low and out.shape == x.shape
    assert (out.float() - reference).abs().max() <= REDUCED[low]
    back = group.act_inverse(g, x.to(low))
    assert back.dtype == low


def test_every_group_under_autocast_is_float32_exact(group, device):
    g = group.sample(3, generator=torch.Generator().manual_seed(1), device=device)
    x = images(3, 2, 24, device)
    with torch.autocast(device, autocast_dtype(device)):
        out = group.act(g, x)
        h = group.compose(g, group.inverse(g))
    assert out.dtype == torch.float32 and h.dtype == torch.float32
    assert torch.equal(out, group.act(g, x))


def test_elements_must_stay_float32_or_float64():
    rotation = equican.make_group("rotation")
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(DTypeError, match="expected g of dtype float32 or float64, got torch.bfloat16"):
        rotation.act(torch.zeros(1, 1, dtype=torch.bfloat16), x.bfloat16())
    with pytest.raises(DTypeError, match="expected x of dtype float32 or float64, got torch.int64"):
        rotation.act(torch.zeros(1, 1), x.long())


def dec(group_name: str, device: str):
    torch.manual_seed(0)
    canon = make_canonicalizer("dec", equican.make_group(group_name), 2, {"channels": [8, 8]})
    with torch.no_grad():
        for p in canon.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return canon.to(device).eval()


@pytest.mark.parametrize("group_name", ["monotone", "affine"])
def test_dec_with_bfloat16_input_and_under_autocast(group_name, device):
    canon = dec(group_name, device)
    x = images(4, 2, 24, device)
    low = autocast_dtype(device)
    rounded = x.to(low)
    reference = canon(rounded.float())
    result = canon(rounded)
    assert result.x.dtype == low and result.g.dtype == torch.float32
    # The solve ran in float32 on the same rounded values: the element is identical, the image differs by the
    # output's rounding only.
    assert torch.equal(result.g, reference.g)
    assert (result.x.float() - reference.x).abs().max() <= REDUCED[low]
    assert (reference.g - canon(x).g).abs().max() > 0  # the element is not trivially the identity
    with torch.autocast(device, low):
        under = canon(x)
    assert under.x.dtype == torch.float32 and torch.equal(under.x, canon(x).x)


def test_latent_model_under_autocast(device):
    pytest.importorskip("timm")
    from equican.latent import create_model

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", group="rotation", canonicalizer="dec", at=(0, 1),
                         canonicalizer_input=["latent", "image"], img_size=32, patch_size=8, depth=2, embed_dim=48,
                         num_heads=3, num_classes=5, canonicalizer_options={"channels": [8]}).to(device).eval()
    with torch.no_grad():
        for p in model.canonicalizers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = images(2, 3, 32, device)
    reference = model(x)
    low = autocast_dtype(device)
    with torch.autocast(device, low):
        out, results = model.forward_canon(x)
    assert out.dtype == low
    assert all(r.g.dtype == torch.float32 for r in results.values())
    # The whole ViT runs in reduced precision (its matmuls round to 8 bits): the logits agree to a few percent of
    # their scale, not to the action's rounding.
    scale = reference.abs().max()
    assert (out.float() - reference).abs().max() <= 0.1 * scale
