"""The classifiers of equican.models: shapes, gradients, seeding, the timm boundary, pretrained files, errors.

timm is never asked to download anything: every build uses ``pretrained=False`` or a local ``pretrained_file``.
Images are tiny so the file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import os

import pytest
import torch

from equican.errors import ConfigError, DataError, ShapeError, UnknownNameError
from equican.models import MODELS, SmallCNN, build_model, list_models, small_vit

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray hub lookup would retry for ~50 s instead of failing

SMALL_CNN = {"channels": (8, 16, 16)}
SMALL_VIT = {"embed_dim": 24, "depth": 2, "num_heads": 2}


def _logits(model: torch.nn.Module, batch: int, channels: int, size: int) -> torch.Tensor:
    return model(torch.randn(batch, channels, size, size))


# ---------------------------------------------------------------------------------------------- the package's models
def test_list_models_names_the_registry():
    assert list_models() == sorted(MODELS) == ["cnn", "vit"]


@pytest.mark.parametrize("size", [72, 70, 28])
def test_cnn_output_shape(size):
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=size, options=SMALL_CNN)
    assert isinstance(model, SmallCNN)
    assert _logits(model, 3, 1, size).shape == (3, 10)


def test_cnn_has_no_batchnorm_and_keeps_a_spatial_grid():
    model = SmallCNN(1, 10, channels=(4, 12), pool_size=3)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [n.num_groups for n in norms] == [4, 4, 6, 6]  # min(8, c) where it divides c, else the largest divisor
    assert model.head.in_features == 12 * 3 * 3


def test_cnn_is_per_sample():
    # GroupNorm and no BatchNorm: a sample's logits do not depend on the rest of the batch, in train mode too.
    torch.manual_seed(0)
    model = SmallCNN(1, 5, channels=(8, 8)).train()
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))


def test_cnn_logits_depend_on_position():
    # The pooled grid keeps coarse position: a blob moved to another corner changes the logits.
    torch.manual_seed(0)
    model = SmallCNN(1, 5, channels=(8, 8)).eval()
    x = torch.zeros(2, 1, 24, 24)
    x[0, 0, 2:6, 2:6] = 1.0
    x[1, 0, 18:22, 18:22] = 1.0
    out = model(x)
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_cnn_rejects_too_small_or_wrong_channel_inputs():
    model = SmallCNN(1, 10, channels=(8, 8, 8))
    with pytest.raises(ShapeError, match=r"H, W >= 8"):
        model(torch.randn(2, 1, 7, 16))
    with pytest.raises(ShapeError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ConfigError, match="image_size >= 8"):
        build_model("cnn", in_channels=1, num_classes=10, image_size=4, options={"channels": (8, 8, 8)})


@pytest.mark.parametrize("size", [72, 70])
def test_vit_output_shape(size):
    model = build_model("vit", in_channels=1, num_classes=10, image_size=size, options=SMALL_VIT)
    from timm.models.vision_transformer import VisionTransformer

    assert isinstance(model, VisionTransformer)
    assert _logits(model, 2, 1, size).shape == (2, 10)


def test_vit_default_size_and_other_input_sizes():
    model = small_vit(1, 10, image_size=70)  # the documented defaults: patch 8, width 96, depth 4, 3 heads
    assert model.patch_embed.grid_size == (9, 9)  # 70 padded to 72
    assert _logits(model, 1, 1, 70).shape == (1, 10)
    assert _logits(model, 1, 1, 40).shape == (1, 10)  # position embeddings resampled to another grid


@pytest.mark.parametrize("name, options", [("cnn", SMALL_CNN), ("vit", SMALL_VIT)])
def test_gradients_reach_every_parameter(name, options):
    model = build_model(name, in_channels=2, num_classes=4, image_size=20, options=options)
    torch.nn.functional.cross_entropy(_logits(model, 2, 2, 20), torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name, options", [("cnn", SMALL_CNN), ("vit", SMALL_VIT)])
def test_same_seed_same_parameters(name, options):
    def build() -> dict[str, torch.Tensor]:
        torch.manual_seed(1234)
        return build_model(name, in_channels=1, num_classes=10, image_size=28, options=options).state_dict()

    first, second = build(), build()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


# ---------------------------------------------------------------------------------------------- timm models by name
def test_timm_resnet_without_img_size():
    # ResNet's constructor takes no img_size: build_model must leave it out.
    model = build_model("resnet18", in_channels=1, num_classes=10, image_size=32)
    assert model.conv1.in_channels == 1
    assert _logits(model.eval(), 2, 1, 32).shape == (2, 10)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_timm_vit_takes_image_size(name):
    model = build_model(name, in_channels=1, num_classes=10, image_size=32)
    assert model.patch_embed.img_size == (32, 32)
    assert _logits(model.eval(), 2, 1, 32).shape == (2, 10)


def test_timm_options_pass_through():
    model = build_model("vit_tiny_patch16_224", in_channels=1, num_classes=3, image_size=32,
                        options={"depth": 1, "global_pool": "avg"})
    assert len(model.blocks) == 1 and model.global_pool == "avg"


def test_unknown_name_lists_package_models_and_closest_timm_names():
    with pytest.raises(UnknownNameError) as info:
        build_model("resnt18", in_channels=1, num_classes=10, image_size=32)
    message = str(info.value)
    assert "'resnt18'" in message and "cnn, vit" in message and "resnet18" in message


def test_unknown_pretrained_tag_is_an_unknown_name():
    # timm.is_model accepts any tag of a known architecture; build_model checks the tag too.
    with pytest.raises(UnknownNameError, match="resnet18.a1_in1k"):
        build_model("resnet18.a1_in1", in_channels=1, num_classes=10, image_size=32)


@pytest.mark.parametrize("name, options, bad", [
    ("cnn", {"chanels": (8,)}, "chanels"),
    ("vit", {"patch": 4}, "patch"),
    ("resnet18", {"bogus_option": 1}, "bogus_option"),
    ("vit_tiny_patch16_224", {"bogus_option": 1}, "bogus_option"),
])
def test_bad_option_is_a_config_error_naming_it(name, options, bad):
    with pytest.raises(ConfigError, match=bad):
        build_model(name, in_channels=1, num_classes=10, image_size=32, options=options)


def test_own_model_bad_option_lists_accepted_options():
    with pytest.raises(ConfigError, match=r"model 'vit'.*patch_size, embed_dim, depth, num_heads, mlp_ratio"):
        build_model("vit", in_channels=1, num_classes=10, image_size=32, options={"patch": 4})


@pytest.mark.parametrize("options, match", [
    ({"num_classes": 3}, "num_classes"),
    ({"img_size": 64}, "image_size"),
    ({"pretrained": True}, "pretrained_file"),
])
def test_timm_options_may_not_override_build_model_arguments(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("resnet18", in_channels=1, num_classes=10, image_size=32, options=options)


def test_invalid_option_values_are_config_errors():
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        build_model("vit", in_channels=1, num_classes=10, image_size=32, options={"embed_dim": 10, "num_heads": 3})
    with pytest.raises(ConfigError, match="channels"):
        build_model("cnn", in_channels=1, num_classes=10, image_size=32, options={"channels": (8, 0)})


@pytest.mark.parametrize("name", ["cnn", "vit", "resnet18"])
@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"),
    ({"in_channels": "3"}, "in_channels"),
    ({"image_size": True}, "image_size"),
])
def test_bad_ints_are_config_errors(name, kwargs, match):
    arguments = dict(in_channels=1, num_classes=10, image_size=32) | kwargs
    with pytest.raises(ConfigError, match=match):
        build_model(name, **arguments)


# ---------------------------------------------------------------------------------------------- pretrained files
def test_missing_pretrained_file_is_a_data_error_naming_the_path(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(DataError, match=str(path)):
        build_model("resnet18", in_channels=1, num_classes=10, image_size=32, options={"pretrained_file": str(path)})


def test_corrupt_pretrained_file_is_a_data_error(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="could not read"):
        build_model("resnet18", in_channels=1, num_classes=10, image_size=32, options={"pretrained_file": str(path)})


def test_pretrained_file_of_the_same_shape_round_trips(tmp_path):
    torch.manual_seed(0)
    saved = build_model("resnet18", in_channels=1, num_classes=10, image_size=32).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    torch.manual_seed(1)  # a different fresh init, so equality can only come from the file
    model = build_model("resnet18", in_channels=1, num_classes=10, image_size=32,
                        options={"pretrained_file": str(path)})
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys()
    for key in saved:
        assert torch.equal(loaded[key], saved[key]), key
    # The weights are not kept a second time in the model's pretrained cfg; the file is recorded instead.
    assert "state_dict" not in model.pretrained_cfg and model.pretrained_cfg["file"] == str(path)


def test_pretrained_file_from_imagenet_shape_is_adapted_by_timm(tmp_path):
    # An ImageNet-shaped checkpoint (3 channels, 1000 classes) loaded into a 1-channel, 10-class model: timm sums the
    # stem over its input channels and re-initializes the classifier; everything else loads unchanged.
    torch.manual_seed(0)
    saved = build_model("resnet18", in_channels=3, num_classes=1000, image_size=32).state_dict()
    path = tmp_path / "resnet18_in1k.pth"
    torch.save(saved, path)
    model = build_model("resnet18", in_channels=1, num_classes=10, image_size=32,
                        options={"pretrained_file": str(path)})
    torch.testing.assert_close(model.conv1.weight, saved["conv1.weight"].sum(dim=1, keepdim=True))
    assert model.fc.weight.shape == (10, 512)
    for key, value in model.state_dict().items():
        if not key.startswith(("conv1.", "fc.")):
            assert torch.equal(value, saved[key]), key


def test_pretrained_file_that_does_not_fit_is_a_data_error(tmp_path):
    saved = build_model("resnet18", in_channels=1, num_classes=10, image_size=32).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    with pytest.raises(DataError, match="does not fit"):
        build_model("resnet34", in_channels=1, num_classes=10, image_size=32, options={"pretrained_file": str(path)})
