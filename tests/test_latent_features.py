"""timm parity of the latent wrappers: ``features_only`` extractors (ViT, DeiT, Swin), ``forward_intermediates``
through the hooks, and the listing of wrappable models (issue 25, item 3)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from equican.errors import ConfigError
from equican.group import make_group
from _canon_helpers import FixedCanonicalizer
from equican.latent import WRAPPABLE_MODULES, LatentCanonicalized, create_model, find_blocks, list_models

timm = pytest.importorskip("timm")

_VIT = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2)
#: key -> (timm name, tiny kwargs, output_fmt of its feature extractor)
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "vit": ("vit_tiny_patch16_224", _VIT, "NCHW"),
    "deit": ("deit_tiny_distilled_patch16_224", _VIT, "NCHW"),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=4, depths=(1, 1), num_heads=(1, 2),
                                                  embed_dim=16), "NHWC"),
}


def fixed() -> FixedCanonicalizer:
    group = make_group("monotone")
    return FixedCanonicalizer(group, torch.randn(1, *group.unconstrained_shape,
                                                 generator=torch.Generator().manual_seed(3)))


def timm_model(key: str, **extra: Any) -> nn.Module:
    name, kwargs, _ = MODELS[key]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs, **extra).eval()


def images(key: str = "vit") -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def full_twin(key: str, features: nn.Module) -> nn.Module:
    """The whole timm model with the weights of the feature extractor ``features``."""
    full = timm_model(key)
    state = features.state_dict()
    state = {(k[len("model."):] if k.startswith("model.") else k.replace("layers_", "layers.", 1)): v
             for k, v in state.items()}
    missing, unexpected = full.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("head", "norm", "fc_norm")) for k in missing), missing
    return full


# ---------------------------------------------------------------------------------------------- features_only
@pytest.mark.parametrize("key", sorted(MODELS))
def test_features_only_builds_and_matches_timm(key):
    name, kwargs, _ = MODELS[key]
    torch.manual_seed(0)
    wrapper = create_model(name, canonicalizer="identity", at=(0, 1), features_only=True, **kwargs).eval()
    bare = timm_model(key, features_only=True)
    x = images()
    assert wrapper.block_names[0] == {"vit": "model.blocks.0", "deit": "model.blocks.0", "swin": "layers_0"}[key]
    assert wrapper.layout == {"vit": "tokens", "deit": "tokens", "swin": "NHWC"}[key]
    assert wrapper.feature_info.channels() == bare.feature_info.channels()  # timm's attributes pass through
    with torch.no_grad():
        got, want = wrapper(x), bare(x)
    assert isinstance(got, list) and len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)  # identity canonicalizer: exactly timm's features


@pytest.mark.parametrize("key", sorted(MODELS))
def test_features_only_canonicalizes_the_chosen_block(key):
    _, _, fmt = MODELS[key]
    bare = timm_model(key, features_only=True)
    wrapper = LatentCanonicalized(copy.deepcopy(bare), at=1, canonicalizer=fixed(), uncanonicalize=False).eval()
    full = LatentCanonicalized(full_twin(key, bare), at=1, canonicalizer=fixed(), uncanonicalize=False).eval()
    x = images()
    with torch.no_grad():
        got, plain = wrapper(x), bare(x)
        via_full = full.forward_intermediates(x, indices=len(got), intermediates_only=True)  # NCHW
    for g, f in zip(got, via_full):
        g = g.permute(0, 3, 1, 2) if fmt == "NHWC" else g  # the extractor's features are the whole wrapped model's intermediates
        torch.testing.assert_close(g, f)
    torch.testing.assert_close(got[0], plain[0])  # before the insertion point: unchanged
    assert (got[1] - plain[1]).abs().max() > 1e-3  # negative control: block 1 ran in the canonical frame


def test_feature_dict_without_known_stages_still_raises():
    odd = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3), "stage_a": nn.Sequential()})
    with pytest.raises(ConfigError, match="found no blocks"):
        find_blocks(odd)


# ---------------------------------------------------------------------------------------------- forward_intermediates
@pytest.mark.parametrize("key", sorted(MODELS))
def test_forward_intermediates_runs_through_the_hooks(key):
    bare = timm_model(key)
    wrapper = LatentCanonicalized(copy.deepcopy(bare), at=1, canonicalizer=fixed(), uncanonicalize=False).eval()
    identity = LatentCanonicalized(copy.deepcopy(bare), at=1, canonicalizer="identity").eval()
    x = images()
    with torch.no_grad():
        want = bare.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        same = identity.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        final, got = wrapper.forward_intermediates(x, indices=[0, 1])
        final_bare, _ = bare.forward_intermediates(x, indices=[0, 1])
    for s, w in zip(same, want):
        torch.testing.assert_close(s, w)
    torch.testing.assert_close(got[0], want[0])
    assert (got[1] - want[1]).abs().max() > 1e-3  # negative control: the hook changed block 1
    assert (final - final_bare).abs().max() > 1e-3


def test_forward_intermediates_gives_image_canonicalizers_the_image():
    bare = timm_model("vit")
    wrapper = LatentCanonicalized(copy.deepcopy(bare), at=1, canonicalizer=fixed(), canonicalizer_input="image",
                                  uncanonicalize=False).eval()
    x = images()
    with torch.no_grad():
        got = wrapper.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        want = bare.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert (got[1] - want[1]).abs().max() > 1e-3
        with pytest.raises(ConfigError, match="needs the input image"):  # negative control: past the wrapper
            wrapper.model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)


def test_forward_intermediates_refused_without_the_method():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.layer1(x)

    wrapper = LatentCanonicalized(Net(), at=0, canonicalizer="identity")
    with pytest.raises(ConfigError, match="no forward_intermediates"):
        wrapper.forward_intermediates(torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------------------------------------- list_models
def test_list_models_filters_timm_to_wrappable_families():
    names = list_models()
    assert {"vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "swin_tiny_patch4_window7_224",
            "resnet18", "convnext_atto", "beit_base_patch16_224", "cait_xxs24_224"} <= set(names)
    assert set(names) <= set(timm.list_models())
    for negative in ("efficientnet_b0", "mobilenetv3_small_100", "regnetx_002"):  # not wrappable without blocks=
        assert negative not in names
    vits = list_models("vit_tiny*")
    assert vits and all(n.startswith("vit_tiny") for n in vits)
    assert "vit_tiny_patch16_224" not in list_models("vit_*", exclude_filters="vit_tiny*")
    assert list_models("efficientnet*") == []


@pytest.mark.parametrize("module", WRAPPABLE_MODULES)
def test_a_listed_model_of_each_family_has_blocks(module):
    name = min(list_models(), key=lambda n: (n not in timm.list_models(module=module), len(n)))
    assert name in timm.list_models(module=module)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    names, modules, layout = find_blocks(model)
    assert modules and layout in ("tokens", "NHWC", "NCHW")


def test_an_unlisted_family_has_no_blocks():  # the listing's negative control
    with torch.device("meta"):
        model = timm.create_model("efficientnet_b0", pretrained=False)
    with pytest.raises(ConfigError):
        find_blocks(model)


def test_a_features_only_model_refuses_to_save(tmp_path):
    name, kwargs, _ = MODELS["vit"]
    model = create_model(name, canonicalizer="identity", features_only=True, **kwargs)
    with pytest.raises(ConfigError, match="features_only"):
        model.save_pretrained(tmp_path / "saved")
    create_model(name, canonicalizer="identity", **kwargs).save_pretrained(tmp_path / "plain")  # control: saves
