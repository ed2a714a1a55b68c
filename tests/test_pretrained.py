"""Save and load (equican.pretrained): every canonicalizer kind and a latent timm model round-trip to identical
outputs; a config that does not describe its weights, and missing or corrupt files, raise typed errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import equican
from equican.canon import Canonicalizer, DEQCanonicalizer, list_canonicalizers, make_canonicalizer
from equican.errors import CheckpointError, ConfigError, DataError
from equican.latent import LatentCanonicalized, create_model

HAS_ESCNN = importlib.util.find_spec("escnn") is not None
# A small net per kind; escnn needs a rotation group.
OPTIONS = {"direct": {"channels": [4, 8]}, "dec": {"channels": [4, 8], "train_iter": 3, "eval_iter": 3},
           "optimization": {"channels": [4, 8], "steps": 2}, "escnn": {"channels": [4, 4]}}
GROUPS = {"escnn": ("cyclic", {"n": 4})}


def built(kind: str, seed: int = 0) -> Canonicalizer:
    torch.manual_seed(seed)
    name, opts = GROUPS.get(kind, ("affine", {"max_angle": 1.0}))
    canon = make_canonicalizer(kind, equican.make_group(name, **opts), 2, OPTIONS.get(kind))
    with torch.no_grad():  # away from the identity head, so the outputs depend on every weight
        for p in canon.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return canon.eval()


@pytest.mark.parametrize("kind", list_canonicalizers())
def test_every_kind_round_trips(kind, tmp_path):
    if kind == "escnn" and not HAS_ESCNN:
        pytest.skip("escnn is not installed")
    canon = built(kind)
    x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    before = canon(x)
    canon.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["canonicalizer"]["kind"] == kind
    assert config["canonicalizer"]["group"] == ("cyclic" if kind == "escnn" else "affine")
    again = Canonicalizer.from_pretrained(tmp_path).eval()
    assert type(again) is type(canon) and again.group == canon.group
    after = again(x)
    assert torch.equal(after.x, before.x) and torch.equal(after.g, before.g)


def test_records_kind_group_and_options():
    canon = make_canonicalizer("deq", equican.make_group("scale", max_log_scale=0.5), 3, {"channels": (4,)})
    assert canon.canonicalizer_config == {"kind": "dec", "group": "scale", "group_options": {"max_log_scale": 0.5},
                                          "in_channels": 3, "options": {"channels": (4,)}}


def test_unrecorded_canonicalizer_cannot_be_saved(tmp_path):
    from equican.canon import DEQConfig, UpdateNet

    group = equican.make_group("rotation")
    canon = DEQCanonicalizer(group, UpdateNet(1, group.unconstrained_shape, channels=(4,)), DEQConfig())
    with pytest.raises(ConfigError, match="built by make_canonicalizer.*DEQCanonicalizer built directly"):
        canon.save_pretrained(tmp_path)
    object_option = make_canonicalizer("dec", group, 1, {"config": DEQConfig(), "channels": (4,)})
    with pytest.raises(ConfigError, match="options.config.*DEQConfig"):
        object_option.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_subclass_from_pretrained_checks_the_class(tmp_path):
    built("direct").save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="expected .* to hold a DEQCanonicalizer, got a DirectCanonicalizer"):
        DEQCanonicalizer.from_pretrained(tmp_path)


def test_tampered_config_names_the_mismatch(tmp_path):
    built("direct").save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["canonicalizer"]["options"]["channels"] = [4, 16]  # a wider second block than the weights hold
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatches: net\..*weights \(8, .*config \(16, "):
        Canonicalizer.from_pretrained(tmp_path)
    config["canonicalizer"]["options"]["channels"] = [4]  # one block fewer: the second block's keys are unexpected
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unexpected keys: net\.blocks\.1\."):
        Canonicalizer.from_pretrained(tmp_path)
    config["canonicalizer"]["options"]["channels"] = [4, 8, 8]
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys: net\.blocks\.2\."):
        Canonicalizer.from_pretrained(tmp_path)
    assert issubclass(CheckpointError, DataError)


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'config.json'}"):
        Canonicalizer.from_pretrained(tmp_path)
    built("direct").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=f"{weights}.*unreadable"):
        Canonicalizer.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(DataError, match=f"{weights}"):
        Canonicalizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="config.json to hold JSON"):
        Canonicalizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(DataError, match="format_version 1, got 99"):
        Canonicalizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------- latent timm models
TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, num_classes=5)


def tiny_latent(**options) -> LatentCanonicalized:
    torch.manual_seed(0)
    options.setdefault("canonicalizer_options", {"channels": [8], "train_iter": 3, "eval_iter": 3})
    model = create_model("vit_tiny_patch16_224", group="rotation", canonicalizer="dec", at=(0, 1), **TINY, **options)
    with torch.no_grad():
        for p in model.canonicalizers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_latent_round_trip(tmp_path):
    model = tiny_latent(canonicalizer_input=["latent", "image"], uncanonicalize=[True, False])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model(x)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["timm"] == {"name": "vit_tiny_patch16_224", "kwargs": TINY}
    assert config["at"] == [0, 1] and config["kinds"] == ["dec", "dec"] and config["group"] == ["rotation"] * 2
    assert [p["canonicalizer_input"] for p in config["points"]] == ["latent", "image"]
    assert [p["uncanonicalize"] for p in config["points"]] == [True, False]
    assert model.pretrained_cfg["equican"]["points"] == config["points"]
    again = LatentCanonicalized.from_pretrained(tmp_path).eval()
    assert torch.equal(again(x), before)
    assert again.pretrained_cfg["equican"]["timm"]["name"] == "vit_tiny_patch16_224"


def test_latent_tampered_config_and_bare_model(tmp_path):
    import timm

    tiny_latent().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["timm"]["kwargs"]["embed_dim"] = 24  # weights of a 48-wide ViT
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatches: model\.cls_token: weights \(1, 1, 48\), "
                                              r"config \(1, 1, 24\)"):
        LatentCanonicalized.from_pretrained(tmp_path)
    # A config without a timm record rebuilds around a bare model passed in.
    config["timm"] = None
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="model="):
        LatentCanonicalized.from_pretrained(tmp_path)
    bare = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    assert isinstance(LatentCanonicalized.from_pretrained(tmp_path, model=bare), LatentCanonicalized)


def test_latent_with_a_direct_module_is_not_saveable(tmp_path):
    from equican.canon import DEQConfig, UpdateNet

    import timm

    group = equican.make_group("rotation")
    canon = DEQCanonicalizer(group, UpdateNet(48, group.unconstrained_shape, channels=(4,)), DEQConfig())
    model = LatentCanonicalized(timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY), at=0,
                                canonicalizer=canon)
    assert model.pretrained_cfg["equican"] == {"at": [0], "recordable": False}
    with pytest.raises(ConfigError, match="built directly"):
        model.save_pretrained(tmp_path)
