"""Low precision after ``.to(dtype)``: canonicalizers of every registered kind and latent models (the package's small
ViT, a timm resnet18) converted to bfloat16/float16 take inputs of their dtype, and latent models take
reduced-precision inputs under ``torch.autocast`` as the bare timm model does (issue 25, item 1).

Tolerances: a converted canonicalizer solves with float32 copies of its (rounded) weights, so its element equals
the float32 canonicalizer's on the same rounded weights and input bit for bit, and its canonical image differs by
the output's rounding only: half an ulp of values below 1, 2⁻⁹ in bfloat16 and 2⁻¹² in float16 (2⁻⁸/2⁻¹¹ allowed,
as tests/test_amp.py allows for actions). A whole network run in bfloat16 rounds every matmul to 8 bits: its
logits are held to 10% of their scale, as tests/test_amp.py holds the latent ViT under autocast.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import equican
from equican.canon import list_canonicalizers, make_canonicalizer
from equican.errors import DTypeError

# Canonicalizer weights are moved off their initialization (where every element is the identity) by this much:
# elements of 0.1-0.2 rad. A larger move (0.05) leaves the DEQ unconverged and chaotic: rounding the features to
# bfloat16 then changes its element by radians, in float32 as much as in bfloat16.
SCALE = 0.01
REDUCED = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def kinds() -> list[str]:
    out = []
    for kind in list_canonicalizers():
        if kind == "escnn" and importlib.util.find_spec("escnn") is None:
            continue
        out.append(kind)
    return out


def built(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    canon = make_canonicalizer(kind, equican.make_group("rotation"), 2, {})
    with torch.no_grad():
        for p in canon.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return canon.eval()


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", kinds())
def test_every_kind_after_to_reduced_dtype(kind, low):
    canon = built(kind)
    x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1)).to(low)
    converted = built(kind).to(low)
    result = converted(x)
    assert result.x.dtype == low and result.g.dtype == torch.float32
    # The float32 canonicalizer with the same (rounded) weights on the same rounded input: the same element.
    canon.load_state_dict({k: v.float() for k, v in converted.state_dict().items()})
    reference = canon(x.float())
    assert torch.equal(result.g, reference.g)
    assert (result.x.float() - reference.x).abs().max() <= REDUCED[low]
    # Training in bfloat16 reaches the converted weights.
    if any(True for _ in converted.parameters()):
        converted.train()
        converted(x).x.float().square().sum().backward()
        assert all(p.grad is not None and p.grad.dtype == low for p in converted.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", [k for k in kinds() if k != "identity"])
def test_converted_kind_refuses_an_input_of_another_dtype(kind):
    # Negative control: the check compares with the parameters' dtype; a float32 input to a bfloat16
    # canonicalizer (no autocast) is refused, naming both dtypes.
    converted = built(kind).to(torch.bfloat16)
    with pytest.raises(DTypeError, match="expected x of the parameters' dtype torch.bfloat16, got torch.float32"):
        converted(torch.rand(1, 2, 16, 16))
    with torch.autocast("cpu", torch.bfloat16):  # under autocast, the same input is taken
        assert converted(torch.rand(1, 2, 16, 16)).x.dtype == torch.float32


def latent(name: str) -> torch.nn.Module:
    pytest.importorskip("timm")
    from equican.latent import LatentCanonicalized
    from equican.models import build_model

    torch.manual_seed(0)
    if name == "vit":
        model = build_model("vit", in_channels=3, num_classes=5, image_size=32,
                            options={"embed_dim": 48, "depth": 2, "num_heads": 3})
        at = (0, 1)
    else:
        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=5)
        at = (0,)
    wrapped = LatentCanonicalized(model, at=at, group="rotation", canonicalizer="dec",
                                  canonicalizer_options={"channels": [8]})
    with torch.no_grad():
        for p in wrapped.canonicalizers.parameters():
            p.add_(SCALE * torch.randn_like(p))
    return wrapped.eval()


@pytest.mark.parametrize("name", ["vit", "resnet18"])
def test_latent_model_after_to_bfloat16_and_under_autocast(name):
    model = latent(name)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    converted = latent(name).to(torch.bfloat16)
    rounded = latent(name)  # float32, with the converted model's rounded weights
    rounded.load_state_dict({k: v.float() for k, v in converted.state_dict().items()})
    with torch.no_grad():
        reference, _ = model.forward_canon(x)
        with torch.autocast("cpu", torch.bfloat16):
            under, _ = model.forward_canon(x.bfloat16())  # the bare timm model takes this; so does the wrapped one
        after, results = converted.forward_canon(x.bfloat16())
        exact, exact_results = rounded.forward_canon(x.bfloat16().float())
    assert under.dtype == torch.bfloat16 and after.dtype == torch.bfloat16
    assert all(r.g.dtype == torch.float32 for r in results.values())
    scale = reference.abs().max()
    assert (under.float() - reference).abs().max() <= 0.1 * scale
    assert (after.float() - exact).abs().max() <= 0.1 * scale
    # The elements are not the identity, and bfloat16 features move them by less than 0.01 rad (measured: 3e-3).
    for k, r in results.items():
        assert exact_results[k].g.abs().max() > 0.02
        assert (r.g - exact_results[k].g).abs().max() < 0.01


def test_latent_model_refuses_a_reduced_input_without_autocast():
    # Negative control: outside autocast a float32 model takes float32 only, as timm's convolutions do.
    model = latent("resnet18")
    with pytest.raises(DTypeError, match="expected x of the model's dtype torch.float32 .*got torch.bfloat16"):
        model(torch.rand(1, 3, 32, 32).bfloat16())
    with torch.autocast("cpu", torch.bfloat16):  # float16 is not the autocast dtype here
        with pytest.raises(DTypeError, match="got torch.float16"):
            model(torch.rand(1, 3, 32, 32).half())
