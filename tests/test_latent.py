"""Latent canonicalization inside timm models (equican.latent): layouts, hooks, state dicts, equivariance, training.

Tiny configurations only (img 28-64, depth 1-2, embed_dim 16-48), ``pretrained=False``, CPU.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equican import make_group
from equican.canon import DEQCanonicalizer, IdentityCanonicalizer
from equican.config import MethodConfig
from equican.errors import ConfigError, ConvergenceWarning, UnknownNameError
from equican.canon import make_canonicalizer
from equican.latent import LatentCanonicalized, create_model, find_blocks
from equican.methods import LatentObjective, build_objective
from equican.models import SmallCNN, build_model

from _canon_helpers import FixedCanonicalizer

timm = pytest.importorskip("timm")

_VIT = dict(patch_size=8, depth=2, embed_dim=48, num_heads=3)
#: key -> (timm name, tiny kwargs, input (H, W), insertion points covering every block/stage)
MODELS: dict[str, tuple[str, dict[str, Any], tuple[int, int], tuple[int, ...]]] = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, **_VIT), (32, 32), (0, 1)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, **_VIT), (32, 32), (0, 1)),
    "beit": ("beit_base_patch16_224", dict(img_size=32, **_VIT), (32, 32), (0, 1)),
    "eva": ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=7, depth=2, embed_dim=48, num_heads=3),
            (28, 28), (0, 1)),
    "registers": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=7, depth=2, embed_dim=48,
                                                         num_heads=3), (28, 28), (0, 1)),
    "cait": ("cait_xxs24_224", dict(img_size=32, **_VIT, depth_token_only=1), (32, 32), (0, 1)),
    "vit_nonsquare": ("vit_tiny_patch16_224", dict(img_size=(32, 48), **_VIT), (32, 48), (0, 1)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=4, depths=(1, 1), num_heads=(2, 4),
                                                  embed_dim=16), (32, 32), (0, 1)),
    "resnet": ("resnet18", dict(), (64, 64), (0, 1, 2, 3)),
    "convnext": ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), (64, 64), (0, 1, 2, 3)),
}
CLASSES = 5


def bare(key: str, seed: int = 0) -> nn.Module:
    name, kwargs, _, _ = MODELS[key]
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs).eval()


def wrapped(key: str, seed: int = 0, **options: Any) -> LatentCanonicalized:
    name, kwargs, _, at = MODELS[key]
    options.setdefault("at", at)
    torch.manual_seed(seed)
    return create_model(name, num_classes=CLASSES, **kwargs, **options).eval()


def images(key: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *MODELS[key][2], generator=torch.Generator().manual_seed(seed))


def quarter_turns(group, k: int) -> FixedCanonicalizer:
    """Canonicalizing element = rotation by k quarter turns (cyclic group of order n: score index k·n/4)."""
    n = group.unconstrained_shape[0]
    return FixedCanonicalizer(group, F.one_hot(torch.tensor([k * n // 4]), n).float())


def capture_inputs(module: nn.Module, store: list) -> Any:
    """A pre-hook recording the first argument each time ``module`` is called (after earlier hooks changed it)."""
    def hook(mod, args, kwargs):
        store.append((args[0] if args else kwargs["x"]).detach().clone())
    return module.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------------------------------------- identity = bare
@pytest.mark.parametrize("key", list(MODELS))
@torch.no_grad()
def test_identity_canonicalizer_gives_the_bare_models_outputs(key):
    model, wrapper = bare(key), wrapped(key, canonicalizer="identity")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), wrapper.model.state_dict().values()))
    x = images(key)
    expected = model(x)
    assert wrapper(x).shape == (2, CLASSES)
    torch.testing.assert_close(wrapper(x), expected, atol=1e-5, rtol=1e-5)
    features = wrapper.forward_features(x)
    torch.testing.assert_close(features, model.forward_features(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wrapper.forward_head(features), expected, atol=1e-5, rtol=1e-5)
    assert wrapper.num_classes == CLASSES


def test_layouts_and_insertion_points_are_found_from_the_model():
    expected = {"vit": ("tokens", "blocks.0"), "deit_distilled": ("tokens", "blocks.0"),
                "cait": ("tokens", "blocks.0"),
                "swin": ("NHWC", "layers.0"), "resnet": ("NCHW", "layer1"), "convnext": ("NCHW", "stages.0")}
    for key, (layout, first) in expected.items():
        names, modules, found = find_blocks(bare(key))
        assert (found, names[0]) == (layout, first)
    assert find_blocks(bare("resnet"))[0] == ["layer1", "layer2", "layer3", "layer4"]


@torch.no_grad()
def test_mlp_mixer_tokens_have_no_prefix_and_the_stems_grid():
    from timm.models.mlp_mixer import MlpMixer

    torch.manual_seed(0)
    model = MlpMixer(num_classes=CLASSES, img_size=(32, 48), patch_size=8, num_blocks=2, embed_dim=32).eval()
    assert find_blocks(model)[2] == "tokens"
    x = torch.randn(2, 3, 32, 48)
    wrapper = LatentCanonicalized(copy.deepcopy(model), at=(0, 1), canonicalizer="identity").eval()
    torch.testing.assert_close(wrapper(x), model(x), atol=1e-5, rtol=1e-5)
    _, results = LatentCanonicalized(copy.deepcopy(model), at=1, canonicalizer="direct",
                                     canonicalizer_options={"channels": (4,)}).eval().forward_canon(x)
    assert results[1].x.shape == (2, 32, 4, 6)


def test_dynamic_img_size_takes_the_grid_from_the_input():
    """The package's ViT (dynamic size and padding): a non-square 24×40 input has a 3×5 grid."""
    torch.manual_seed(0)
    model = build_model("vit", in_channels=3, num_classes=CLASSES, image_size=28,
                        options=dict(patch_size=8, embed_dim=16, depth=2, num_heads=2)).eval()
    group = make_group("cyclic", n=2)  # rotation by 180°: defined on non-square grids
    wrapper = LatentCanonicalized(copy.deepcopy(model), at=(0, 1),
                                  canonicalizer=[quarter_turns(group, 2), quarter_turns(group, 2)]).eval()
    seen: list = []
    capture_inputs(wrapper.model.blocks[0], seen)
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        # ViT blocks are equivariant to permutations of the patch tokens, and a 180° turn of the grid is one: the
        # turn and its inverse around each block leave the logits unchanged, iff the grid is read right.
        torch.testing.assert_close(wrapper(x), model(x), atol=1e-5, rtol=1e-5)
    assert seen[0].shape == (2, 1 + 3 * 5, 16)


# ---------------------------------------------------------------------------------------------- prefix tokens, layouts
@pytest.mark.parametrize("key", ["deit_distilled", "registers", "vit_nonsquare"])
@torch.no_grad()
def test_prefix_tokens_are_untouched_and_patch_tokens_are_warped_on_the_grid(key):
    model = bare(key)
    gh, gw = model.patch_embed.grid_size
    prefix = model.num_prefix_tokens
    assert prefix == {"deit_distilled": 2, "registers": 5, "vit_nonsquare": 1}[key]
    group = make_group("monotone")
    z = torch.randn(1, *group.unconstrained_shape, generator=torch.Generator().manual_seed(3))
    wrapper = LatentCanonicalized(copy.deepcopy(model), at=1, canonicalizer=FixedCanonicalizer(group, z)).eval()
    reference: list = []
    canonical: list = []
    capture_inputs(model.blocks[1], reference)
    capture_inputs(wrapper.model.blocks[1], canonical)  # registered after the wrapper's hook: sees its result
    x = images(key)
    model(x)
    wrapper(x)
    ref, got = reference[0], canonical[0]
    assert got.shape == ref.shape == (2, prefix + gh * gw, 48)
    assert torch.equal(got[:, :prefix], ref[:, :prefix])
    grid = ref[:, prefix:].reshape(2, gh, gw, 48).permute(0, 3, 1, 2)  # row-major patch grid, independently
    h = group.from_unconstrained(z.expand(2, *z.shape[1:]))
    warped = group.act(h, grid).permute(0, 2, 3, 1).reshape(2, gh * gw, 48)
    torch.testing.assert_close(got[:, prefix:], warped, atol=1e-5, rtol=1e-5)
    assert float((got[:, prefix:] - ref[:, prefix:]).abs().max()) > 1e-2  # the canonicalizer did act


@pytest.mark.parametrize("key, turns", [("deit_distilled", 1), ("registers", 1), ("vit_nonsquare", 2)])
@torch.no_grad()
def test_uncanonicalize_maps_token_blocks_back(key, turns):
    """A turn of the patch grid permutes the tokens, and ViT blocks are permutation-equivariant: canonicalizing
    by a fixed turn and mapping back gives the bare model's features; without mapping back, the patch tokens stay
    turned (the class-token logits do not show it: attention pooling is permutation-invariant)."""
    model = bare(key)
    group = make_group("cyclic", n=4 if turns == 1 else 2)
    x = images(key)
    # (one point for the control: two 180° turns left in place would cancel each other)
    for unc, at, same in ((True, (0, 1), True), (False, (0,), False)):
        wrapper = LatentCanonicalized(copy.deepcopy(model), at=at, uncanonicalize=unc,
                                      canonicalizer=[quarter_turns(group, turns) for _ in at]).eval()
        close = torch.allclose(wrapper.forward_features(x), model.forward_features(x), atol=1e-5, rtol=1e-5)
        assert close == same, f"uncanonicalize={unc}"


@pytest.mark.parametrize("key", ["swin", "resnet", "convnext"])
@torch.no_grad()
def test_uncanonicalize_maps_stage_features_back(key):
    """With stage 0 replaced by nn.Identity, a fixed quarter turn before it and its inverse after it cancel
    exactly (NHWC and NCHW layouts); leaving the output canonical changes the logits."""
    model = bare(key)
    if key == "resnet":
        model.layer1 = nn.Identity()
    else:
        (model.layers if key == "swin" else model.stages)[0] = nn.Identity()
    group = make_group("cyclic")
    x = images(key)
    for unc, same in ((True, True), (False, False)):
        wrapper = LatentCanonicalized(copy.deepcopy(model), at=0, uncanonicalize=unc,
                                      canonicalizer=quarter_turns(group, 1)).eval()
        assert torch.allclose(wrapper(x), model(x), atol=1e-6, rtol=1e-6) == same, f"uncanonicalize={unc}"


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("key, kind, source", [("vit", "deq", "latent"), ("swin", "direct", "latent"),
                                               ("resnet", "deq", "image")])
def test_gradients_reach_every_canonicalizer(key, kind, source):
    wrapper = wrapped(key, canonicalizer=kind, canonicalizer_input=source, at=MODELS[key][3][:2],
                      canonicalizer_options={"channels": (4,)}).train()
    if source == "image":
        assert all(c.net.in_channels == 3 for c in wrapper.canonicalizers.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        logits, results = wrapper.forward_canon(images(key))
    assert set(results) == set(wrapper.at)
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for k, canon in wrapper.canonicalizers.items():
        grads = {n: p.grad for n, p in canon.named_parameters()}
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values()), k
        # the zero-initialized head is where the gradient first arrives
        assert float(grads["net.head.weight"].abs().sum()) > 0, k


# ---------------------------------------------------------------------------------------------- state dicts
def _randomize(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def test_state_dict_round_trip_gives_identical_outputs():
    options = dict(canonicalizer="direct", canonicalizer_options={"channels": (4,)})
    source = wrapped("vit", seed=0, **options)
    _randomize(source.canonicalizers, seed=5)  # a non-identity canonicalizer, so that its weights matter
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    target = wrapped("vit", seed=1, **options)
    x = images("vit")
    assert not torch.allclose(target(x), source(x))
    target.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert torch.equal(target(x), source(x))
    keys = list(source.state_dict())
    assert any(k.startswith("canonicalizers.0.") for k in keys)
    assert {k.removeprefix("model.") for k in keys if k.startswith("model.")} == set(bare("vit").state_dict())


@torch.no_grad()
def test_a_bare_timm_state_dict_loads_into_the_wrapped_model():
    model = bare("deit_distilled", seed=7)
    wrapper = wrapped("deit_distilled", seed=0, canonicalizer="identity")
    wrapper.model.load_state_dict(model.state_dict())  # strict: the parameter names are timm's
    x = images("deit_distilled")
    torch.testing.assert_close(wrapper(x), model(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pretrained_file_loads_offline(tmp_path):
    model = bare("vit", seed=7)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    name, kwargs, _, _ = MODELS["vit"]
    wrapper = create_model(name, canonicalizer="identity", pretrained_file=str(path), num_classes=CLASSES,
                           **kwargs).eval()
    x = images("vit")
    torch.testing.assert_close(wrapper(x), model(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_deepcopy_carries_the_hooks_with_it():
    group = make_group("monotone")
    wrapper = LatentCanonicalized(bare("vit"), at=0,
                                  canonicalizer=FixedCanonicalizer(group, torch.zeros(1, *group.unconstrained_shape)))
    twin = copy.deepcopy(wrapper)
    x = images("vit")
    before = wrapper(x)
    twin.canonicalizers["0"].z.normal_(generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(twin(x), before)  # the twin's hooks use the twin's canonicalizer ...
    assert torch.equal(wrapper(x), before)  # ... and leave the original alone


# ---------------------------------------------------------------------------------------------- end-to-end equivariance
class PointwiseStemNet(nn.Module):
    """A 1×1-convolution stem (commutes with rot90), two ordinary 3×3 stages (do not), global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.stages = nn.Sequential(nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()))
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(-2, -1)))


def _escnn_or_skip() -> None:
    pytest.importorskip("escnn")


@pytest.mark.parametrize("source, at, unc", [("image", (0,), False), ("latent", (0,), False),
                                             ("latent", (0, 1), True), ("image", (0, 1), True)])
@torch.no_grad()
def test_escnn_c4_canonicalization_makes_the_model_rot90_invariant(source, at, unc):
    _escnn_or_skip()
    torch.manual_seed(0)
    model = PointwiseStemNet()
    options = dict(at=at, group="cyclic", canonicalizer_input=source, uncanonicalize=unc,
                   canonicalizer_options={"channels": (4,), "kernel_size": 3})
    control = LatentCanonicalized(copy.deepcopy(model), canonicalizer="identity", **options).eval()
    wrapper = LatentCanonicalized(model, canonicalizer="escnn", **options).eval()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    reference, control_reference = wrapper(x), control(x)
    for k in (1, 2, 3):
        rotated = torch.rot90(x, k, dims=(-2, -1))
        torch.testing.assert_close(wrapper(rotated), reference, atol=1e-5, rtol=1e-5)
        # negative control: the same network without canonicalization is not invariant
        assert float((control(rotated) - control_reference).abs().max()) > 1e-3


@torch.no_grad()
def test_escnn_at_the_input_of_the_packages_cnn_is_rot90_invariant():
    """SmallCNN's stage 0 reads the image itself; keeping its output canonical makes the logits invariant."""
    _escnn_or_skip()
    torch.manual_seed(0)
    model = SmallCNN(1, CLASSES, channels=(4, 8))
    wrapper = LatentCanonicalized(model, at=0, canonicalizer="escnn", group="cyclic", uncanonicalize=False,
                                  canonicalizer_options={"channels": (4,), "kernel_size": 3}).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    for k in (1, 2, 3):
        torch.testing.assert_close(wrapper(torch.rot90(x, k, dims=(-2, -1))), wrapper(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- training method
@pytest.mark.parametrize("options", [
    {"at": [0, 1], "channels": [4], "prior_weight": 0.1},
    {"at": 1, "canonicalizer": "direct", "canonicalizer_input": "image", "uncanonicalize": False, "channels": [4]},
])
def test_latent_method_trains_one_step(options):
    torch.manual_seed(0)
    backbone = build_model("vit", in_channels=1, num_classes=10, image_size=16,
                           options=dict(patch_size=4, embed_dim=16, depth=2, num_heads=2))
    objective = build_objective(MethodConfig(name="latent", options=options), backbone, in_channels=1, seed=0)
    assert isinstance(objective, LatentObjective) and objective.model.model is backbone
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    y, index = torch.tensor([0, 1, 2, 3]), torch.arange(4)
    objective.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loss, stats = objective(x, y, index, 0)
    assert torch.isfinite(loss) and stats["loss"] == pytest.approx(float(loss.detach()))
    if options.get("prior_weight"):
        # canon_weight is 1 by default: every point's canonicalization loss is in the total too
        assert stats["loss"] == pytest.approx(stats["ce"] + stats["canon"] + 0.1 * stats["prior"], rel=1e-6)
    loss.backward()
    for canon in objective.model.canonicalizers.values():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in canon.parameters())
    assert objective.eval().model(x).shape == (4, 10)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("at, match", [
    ((2,), r"insertion point 2 is out of range: the model has 2 blocks"),
    ((-1,), r"insertion point -1 is out of range"),
    ((0, 0), r"insertion point 0 is given twice"),
    ((), r"non-empty"),
    (("0",), r"expected insertion points to be ints"),
    ((True,), r"expected insertion points to be ints"),
])
def test_bad_insertion_points_are_config_errors(at, match):
    with pytest.raises(ConfigError, match=match):
        LatentCanonicalized(bare("vit"), at=at, canonicalizer="identity")


def test_a_model_without_blocks_names_the_attributes_looked_for():
    with pytest.raises(ConfigError, match=r"found no blocks; looked for model\.blocks .*model\.layers, "
                                          r"model\.stages and model\.layer1"):
        LatentCanonicalized(nn.Sequential(nn.Conv2d(3, 4, 3)), canonicalizer="identity")
    with pytest.raises(ConfigError, match=r"no attribute 'trunk'"):
        LatentCanonicalized(bare("vit"), blocks="trunk", canonicalizer="identity")


class _BlocksNoGrid(nn.Module):
    """``model.blocks`` without a patch grid (like an MLP-Mixer or EfficientNet), NCHW stages inside."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x):
        return self.blocks(x).mean(dim=(-2, -1))


def test_unsupported_layouts_are_config_errors():
    with pytest.raises(ConfigError, match=r"unsupported layout: model\.blocks exists, but without a token grid "
                                          r"\(model\.patch_embed\.grid_size or model\.stem\.grid_size\)"):
        LatentCanonicalized(_BlocksNoGrid(), canonicalizer="identity")
    with pytest.raises(ConfigError, match=r"unsupported layout 'NLC'; expected one of"):
        LatentCanonicalized(bare("resnet"), layout="NLC", canonicalizer="identity")
    with pytest.raises(ConfigError, match=r"unsupported layout: 'tokens' needs the token grid"):
        LatentCanonicalized(bare("resnet"), blocks="layer1", layout="tokens", canonicalizer="identity")
    nlc = bare("convnext")
    nlc.output_fmt = "NLC"
    with pytest.raises(ConfigError, match=r"unsupported layout 'NLC' \(model\.output_fmt\)"):
        LatentCanonicalized(nlc, canonicalizer="identity")
    # a declared layout that the features do not have is caught by the dry forward pass
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(1, 17, 48\), which is not the NHWC layout"):
        LatentCanonicalized(bare("vit"), blocks="blocks", layout="NHWC", canonicalizer="direct")
    # ... and a layout named explicitly makes such a model usable
    model = _BlocksNoGrid()
    wrapper = LatentCanonicalized(model, blocks="blocks", layout="NCHW", at=1, canonicalizer="identity")
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(wrapper(x), _BlocksNoGrid.forward(model, x), atol=1e-6, rtol=1e-6)


def test_wrapping_a_wrapped_model_twice_is_a_config_error():
    wrapper = wrapped("vit", canonicalizer="identity")
    with pytest.raises(ConfigError, match="already carries LatentCanonicalized hooks"):
        LatentCanonicalized(wrapper.model, canonicalizer="identity")
    with pytest.raises(ConfigError, match="already carries LatentCanonicalized hooks"):
        LatentCanonicalized(copy.deepcopy(wrapper.model), canonicalizer="identity")
    model = wrapper.unwrap()
    LatentCanonicalized(model, canonicalizer="identity")  # unwrapped: hooks gone


def test_bad_canonicalizer_settings_are_config_errors():
    with pytest.raises(UnknownNameError, match=r"unknown canonicalizer kind 'dek': registered kinds are dec, direct, "
                                               r".*; did you mean 'dec'\?"):
        LatentCanonicalized(bare("vit"), canonicalizer="dek")
    with pytest.raises(ConfigError, match=r"expected canonicalizer to be a canonicalizer kind \(dec, direct"):
        LatentCanonicalized(bare("vit"), canonicalizer=3)
    with pytest.raises(ConfigError, match=r"unknown option 'chanels'; expected one of \['channels'"):
        LatentCanonicalized(bare("vit"), canonicalizer="deq", canonicalizer_options={"chanels": (4,)})
    with pytest.raises(ConfigError, match=r"expected uncanonicalize to be one value or one per insertion point"):
        LatentCanonicalized(bare("vit"), at=(0, 1), canonicalizer="identity", uncanonicalize=[True])
    with pytest.raises(ConfigError, match=r"expected canonicalizer_input to be one of \('latent', 'image'\)"):
        LatentCanonicalized(bare("vit"), canonicalizer="identity", canonicalizer_input="pixels")
    with pytest.raises(ConfigError, match=r"one Canonicalizer module was given for 2 insertion points"):
        LatentCanonicalized(bare("vit"), at=(0, 1), canonicalizer=IdentityCanonicalizer(make_group("monotone")))
    with pytest.raises(UnknownNameError, match="timm knows no model"):
        create_model("vit_tiny_patch16_2244")


def test_escnn_kind_needs_a_discrete_group():
    _escnn_or_skip()
    with pytest.raises(ConfigError, match="discrete"):
        make_canonicalizer("escnn", make_group("monotone"), 3)


def test_image_input_needs_the_image():
    wrapper = wrapped("vit", canonicalizer="direct", canonicalizer_input="image",
                      canonicalizer_options={"channels": (4,)})
    x = images("vit")
    assert wrapper.forward_features(x).shape == (2, 17, 48)  # through the wrapper: the image is known
    with pytest.raises(ConfigError, match="needs the input image"):
        wrapper.model.forward_features(x)  # timm's method called directly: no forward hook sees the image
    assert wrapper(x).shape == (2, CLASSES)  # and the failed call left nothing behind


def test_ready_made_canonicalizers_are_used_as_given():
    group = make_group("monotone")
    deq = make_canonicalizer("deq", group, 48, {"channels": (4,)})
    wrapper = LatentCanonicalized(bare("vit"), at=(0, 1), canonicalizer=[deq, "identity"])
    assert wrapper.canonicalizers["0"] is deq and isinstance(deq, DEQCanonicalizer)
    assert isinstance(wrapper.canonicalizers["1"], IdentityCanonicalizer)


@pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning")
def test_equican_train_runs_the_latent_method_and_reloads_it(tmp_path):
    """A two-batch run through the training loop with the package's timm ViT; the checkpoint reloads."""
    from equican.config import TrainConfig, apply_overrides
    from equican.train import load_checkpoint, train

    overrides = ["data.train_limit=16", "data.test_limit=4", "optim.epochs=1", "optim.batch_size=8", "eval.limit=4",
                 "eval.batch_size=4", "eval.rescalings=2", "progress=false", "device=cpu",
                 "data.options.digits=1", "data.options.cell=24", "data.options.canvas=24", "model.name=vit",
                 "model.options.patch_size=8", "model.options.embed_dim=16", "model.options.depth=2",
                 "model.options.num_heads=2", "method.name=latent", "method.options.at=[0, 1]",
                 "method.options.channels=[4]", f"out={str(tmp_path)!r}".replace("'", '"')]
    train(apply_overrides(TrainConfig(), overrides))
    _, objective, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(objective, LatentObjective) and objective.model.at == (0, 1)
    x = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert objective.model(x).shape[0] == 2 and torch.isfinite(objective.model(x)).all()
