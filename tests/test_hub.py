"""Save and load on huggingface_hub (equican._hub): canonicalizers and latent models are ``ModelHubMixin``s with a
generated model card, and ``from_pretrained`` takes a Hub repo id. Offline throughout: the Hub's download and upload
functions are replaced by local stand-ins, so nothing here reaches the network."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard, ModelHubMixin

import equican
from equican.canon import Canonicalizer, make_canonicalizer
from equican.errors import ConfigError, DataError
from equican.latent import LatentCanonicalized, create_model

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, num_classes=5)
FILES = ["README.md", "config.json", "model.safetensors"]


def canonicalizer(seed: int = 0) -> Canonicalizer:
    torch.manual_seed(seed)
    canon = make_canonicalizer("direct", equican.make_group("rotation"), 2, {"channels": [4, 8]})
    with torch.no_grad():  # away from the identity head, so the outputs depend on every weight
        for p in canon.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return canon.eval()


def x() -> torch.Tensor:
    return torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """``snapshot_download`` answering from local folders (``hub.repos[repo_id] = directory``), recording calls."""

    class Hub:
        repos: dict = {}
        calls: list = []

        def snapshot_download(self, **kwargs):
            self.calls.append(kwargs)
            if kwargs["repo_id"] not in self.repos:
                # what the Hub library raises offline (HF_HUB_OFFLINE=1) for a repo that is not in its cache
                raise huggingface_hub.errors.LocalEntryNotFoundError(f"no snapshot of {kwargs['repo_id']}")
            return str(self.repos[kwargs["repo_id"]])

    fake = Hub()
    fake.repos, fake.calls = {}, []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_canonicalizers_and_latent_models_are_hub_mixins():
    for cls in (Canonicalizer, LatentCanonicalized):
        assert issubclass(cls, ModelHubMixin)
        assert cls.push_to_hub is ModelHubMixin.push_to_hub  # the Hub library's own upload
    assert isinstance(canonicalizer(), ModelHubMixin)


def test_save_writes_config_weights_and_a_model_card(tmp_path):
    path = canonicalizer().save_pretrained(tmp_path / "m", model_card_kwargs={"measured": {"invariance error": 0.0123}})
    assert sorted(p.name for p in path.iterdir()) == FILES
    card = ModelCard.load(path / "README.md")
    assert card.data.library_name == "equican"
    assert {"equican", "group-rotation", "kind-direct"} <= set(card.data.tags)
    assert "| kind | `direct` |" in card.text and "| group | `rotation`" in card.text
    assert "| in_channels | 2 |" in card.text and '"channels": [4, 8]' in card.text
    assert "| invariance error | 0.0123 |" in card.text
    assert json.loads((path / "config.json").read_text())["canonicalizer"]["kind"] == "direct"


def test_the_card_says_when_invariance_was_not_measured(tmp_path):
    path = canonicalizer().save_pretrained(tmp_path)
    assert "Not measured when saved" in (path / "README.md").read_text()


def test_resaving_replaces_the_card_with_the_rest(tmp_path):
    canonicalizer().save_pretrained(tmp_path, model_card_kwargs={"measured": {"invariance error": 1.0}})
    canonicalizer().save_pretrained(tmp_path)  # a saved model with its card is a saved model: replaced as a whole
    assert "invariance error" not in (tmp_path / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


def test_a_repo_id_loads_through_the_hub_download(hub, tmp_path):
    canon = canonicalizer()
    before = canon(x()).x
    hub.repos["someone/dec-rotation"] = canon.save_pretrained(tmp_path / "snapshot")
    again = Canonicalizer.from_pretrained("someone/dec-rotation", revision="v1").eval()
    assert torch.equal(again(x()).x, before)
    (call,) = hub.calls
    assert call["repo_id"] == "someone/dec-rotation" and call["revision"] == "v1"
    assert sorted(call["allow_patterns"]) == FILES


def test_a_local_directory_never_asks_the_hub(hub, tmp_path):
    canonicalizer().save_pretrained(tmp_path / "m")
    Canonicalizer.from_pretrained(tmp_path / "m")
    Canonicalizer.from_pretrained(str(tmp_path / "m"))
    with pytest.raises(DataError, match="got none"):
        Canonicalizer.from_pretrained(tmp_path / "missing")  # a path: no download
    assert hub.calls == []


def test_a_repo_the_hub_does_not_have_is_a_data_error(hub):
    with pytest.raises(DataError, match=r"expected a local directory or a Hub repo id .*'nobody/nothing'.*"
                                        r"LocalEntryNotFoundError"):
        Canonicalizer.from_pretrained("nobody/nothing")
    assert [c["repo_id"] for c in hub.calls] == ["nobody/nothing"]


def test_the_mixin_hooks_lead_to_the_same_save_and_load(tmp_path):
    canon = canonicalizer()
    canon._save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES
    again = Canonicalizer._from_pretrained(model_id=str(tmp_path), revision=None, cache_dir=None,
                                           force_download=False, local_files_only=False, token=None).eval()
    assert torch.equal(again(x()).x, canon(x()).x)


def test_push_to_hub_uploads_the_saved_directory(monkeypatch):
    """The mixin's ``push_to_hub`` with the Hub API replaced: it saves through equican (all three files) and uploads
    that folder."""
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            uploaded["repo_id"] = repo_id
            uploaded["files"] = sorted(p.name for p in folder_path.iterdir())
            uploaded["card"] = (folder_path / "README.md").read_text()
            return f"https://hub.invalid/{repo_id}/commit/1"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    url = canonicalizer().push_to_hub("someone/canon", model_card_kwargs={"measured": {"invariance error": 0.5}})
    assert url == "https://hub.invalid/someone/canon/commit/1"
    assert uploaded["repo_id"] == "someone/canon" and uploaded["files"] == FILES
    assert "| invariance error | 0.5 |" in uploaded["card"]


def test_save_pretrained_with_push_to_hub_saves_then_pushes(tmp_path, monkeypatch):
    canon = canonicalizer()
    pushed = []
    monkeypatch.setattr(type(canon), "push_to_hub", lambda self, repo_id, **kw: pushed.append((repo_id, kw)) or "url")
    assert canon.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="me/m") == "url"
    assert pushed == [("me/m", {"model_card_kwargs": {}})]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == FILES


def test_a_config_argument_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="expected config=None .* got dict"):
        canonicalizer().save_pretrained(tmp_path, config={"kind": "other"})
    assert not any(tmp_path.iterdir())


def test_a_measured_value_that_is_no_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"expected model_card_kwargs\['measured'\] to be a mapping .* got float"):
        canonicalizer().save_pretrained(tmp_path / "m", model_card_kwargs={"measured": 0.1})
    assert not (tmp_path / "m").exists()


def test_a_latent_model_saves_a_card_and_loads_from_a_repo_id(hub, tmp_path):
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", group="rotation", canonicalizer="direct", at=0,
                         canonicalizer_options={"channels": [8]}, **TINY).eval()
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hub.repos["someone/latent-vit"] = model.save_pretrained(tmp_path / "snapshot")
    card = ModelCard.load(tmp_path / "snapshot" / "README.md")
    assert {"group-rotation", "kind-direct"} <= set(card.data.tags)
    assert "| timm model | `vit_tiny_patch16_224` |" in card.text and "| point 0: kind | `direct` |" in card.text
    again = LatentCanonicalized.from_pretrained("someone/latent-vit").eval()
    assert torch.equal(again(image), model(image))
    assert isinstance(again, ModelHubMixin)
