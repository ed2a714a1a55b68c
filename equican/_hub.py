"""The huggingface_hub side of saving and loading: the mixin, the model card, and Hub repo ids.

[`Canonicalizer`][equican.canon.base.Canonicalizer] and
[`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] inherit ``huggingface_hub.ModelHubMixin`` (through
`HubMixin`, which sets the model card's metadata), so ``push_to_hub`` and the Hub's conventions come from the Hub
library. Their ``save_pretrained`` and ``from_pretrained`` are equican's own (`equican.pretrained`): the directory is
written atomically (config, weights and model card together) and every field is checked on load. The mixin's hooks
``_save_pretrained`` and ``_from_pretrained`` lead to the same code, so a tool that calls them gets the same files.

``from_pretrained`` takes a local directory or a Hub repo id: a name that is not an existing directory and has the
shape of a repo id (``name`` or ``namespace/name``) is fetched with ``huggingface_hub.snapshot_download`` (only the
files a saved model holds), honouring ``HF_HUB_OFFLINE``; the download goes to the Hub's cache and is then read like
a local directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelHubMixin

from .errors import ConfigError, DataError

__all__ = ["HubMixin", "hub_save", "pretrained_directory", "model_card"]

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubMixin(ModelHubMixin, library_name="equican", tags=["equican", "canonicalization", "equivariance"]):
    """``huggingface_hub.ModelHubMixin`` with equican's model-card metadata; the hooks lead to equican's own save and
    load (see the module docstring)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's saving hook: equican's atomic ``save_pretrained`` into ``save_directory``."""
        self.save_pretrained(save_directory)  # type: ignore[call-arg]

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **model_kwargs: Any) -> Any:
        """The mixin's loading hook: equican's checked ``from_pretrained`` of a directory or repo id."""
        return cls.from_pretrained(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, **model_kwargs)


def hub_save(module: Any, write: Callable[..., Path], directory: str | os.PathLike, *, config: Any = None,
             repo_id: str | None = None, push_to_hub: bool = False, model_card_kwargs: Mapping[str, Any] | None = None,
             **push_to_hub_kwargs: Any) -> Any:
    """``save_pretrained`` with the mixin's signature: ``write(module, directory, card_kwargs=...)`` writes the
    directory atomically; then, when ``push_to_hub``, the mixin's ``push_to_hub`` uploads it. Returns the directory
    (a ``Path``), or the commit's URL after a push."""
    where = f"{type(module).__name__}.save_pretrained"
    if config is not None:
        raise ConfigError(f"{where}: expected config=None (the config is the module's own record of how to rebuild "
                          f"it), got {type(config).__name__}")
    card_kwargs = dict(model_card_kwargs or {})
    path = write(module, directory, card_kwargs=card_kwargs)
    if push_to_hub:
        return module.push_to_hub(repo_id or path.name, model_card_kwargs=card_kwargs, **push_to_hub_kwargs)
    return path


def pretrained_directory(name_or_path: str | os.PathLike, *, where: str, revision: str | None = None,
                         cache_dir: str | Path | None = None, force_download: bool = False,
                         token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """A local directory for ``name_or_path``: itself when it exists or cannot be a repo id (a path object, a path
    with ``./``, ``~``, an absolute path, two or more ``/``, or ``folder/name`` where ``folder`` is a local
    directory), else the snapshot ``huggingface_hub.snapshot_download``
    fetched of the repo (config, weights and model card only).

    Raises:
        DataError: the Hub (or its cache, offline) has no such model; the message names the repo and the answer.
    """
    text = os.fspath(name_or_path)
    # A missing "outputs/model" whose folder "outputs" exists here is a local path with a typo, not a repo.
    local_parent = "/" in text and os.path.isdir(os.path.dirname(text))
    if isinstance(name_or_path, Path) or os.path.isdir(text) or local_parent or not _REPO_ID.match(text):
        return Path(text)
    import huggingface_hub

    from .pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME

    try:
        snapshot = huggingface_hub.snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir,
                                                     force_download=force_download, token=token,
                                                     local_files_only=local_files_only,
                                                     allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
    except Exception as exc:  # noqa: BLE001 - the Hub's errors (offline, not found, gated, HTTP) all mean "no model"
        raise DataError(f"{where}: expected a local directory or a Hub repo id of a saved model, got {text!r}, which "
                        f"is no directory here, and the Hub answered {type(exc).__name__}: {exc}"[:600]) from None
    return Path(snapshot)


# ---------------------------------------------------------------------------------------------- the model card
def _settings_rows(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    group = record.get("group")
    options = record.get("group_options") or {}
    group_text = f"`{group}`" + (f" (`{json.dumps(options, sort_keys=True)}`)" if options else "")
    return [("kind", f"`{record.get('kind')}`"), ("group", group_text),
            ("in_channels", f"{record.get('in_channels')}"),
            ("options", f"`{json.dumps(record.get('options') or {}, sort_keys=True)}`")]


def _measured(card_kwargs: Mapping[str, Any]) -> str:
    measured = card_kwargs.get("measured")
    if not measured:
        return ("Not measured when saved. Measure it with `equican.metrics` or `equican.testing`'s "
                "`canonicalizer_invariance_error`, and pass the numbers as "
                "`save_pretrained(..., model_card_kwargs={\"measured\": {...}})`.")
    if not isinstance(measured, Mapping):
        raise ConfigError(f"save_pretrained: expected model_card_kwargs['measured'] to be a mapping of measure names "
                          f"to values, got {type(measured).__name__}")
    rows = "\n".join(f"| {name} | {value} |" for name, value in measured.items())
    return f"| measure | value |\n|---|---|\n{rows}"


def model_card(config: Mapping[str, Any], *, parameters: int, card_kwargs: Mapping[str, Any] | None = None) -> str:
    """The text of ``README.md`` for a saved ``config`` (as written to ``config.json``): YAML metadata (library
    equican, tags with the kinds and groups) and the settings, parameter count, measured invariance if given
    (``card_kwargs["measured"]``, a mapping of names to values) and how to load it."""
    card_kwargs = dict(card_kwargs or {})
    if config.get("type") == "latent":
        points = config.get("points") or []
        records = [p.get("canonicalizer") or {} for p in points]
        timm = config.get("timm") or {}
        title = f"Latent canonicalization of `{timm.get('name', 'a timm model')}`"
        rows = [("timm model", f"`{timm.get('name')}`"),
                ("timm kwargs", f"`{json.dumps(timm.get('kwargs') or {}, sort_keys=True)}`"),
                ("blocks", f"`{config.get('blocks')}`"), ("layout", f"`{config.get('layout')}`")]
        for point, record in zip(points, records):
            rows += [(f"point {point.get('at')}: {k}", v) for k, v in _settings_rows(record)]
        load = "from equican.latent import LatentCanonicalized\nmodel = LatentCanonicalized.from_pretrained"
    else:
        records = [config.get("canonicalizer") or {}]
        title = f"`{records[0].get('kind')}` canonicalizer for the group `{records[0].get('group')}`"
        rows = _settings_rows(records[0])
        load = "from equican import Canonicalizer\ncanonicalizer = Canonicalizer.from_pretrained"
    rows.append(("parameters", f"{parameters:,}"))
    tags = ["equican", "canonicalization", "equivariance", "model_hub_mixin",
            *sorted({f"group-{r.get('group')}" for r in records} | {f"kind-{r.get('kind')}" for r in records})]
    metadata = "\n".join(["library_name: equican", "tags:", *(f"- {t}" for t in tags)])
    table = "\n".join(["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    repo = card_kwargs.get("repo_id", "DIRECTORY_OR_REPO_ID")
    text = (f"---\n{metadata}\n---\n\n# {title}\n\nSaved by equican "
            f"(equivariance by canonicalization, PyTorch); `config.json` rebuilds it and `model.safetensors` holds its "
            f"weights.\n\n```python\n{load}({json.dumps(str(repo))})\n```\n\n## Settings\n\n{table}\n\n"
            f"## Measured invariance\n\n{_measured(card_kwargs)}\n")
    ModelCard(text)  # the Hub's own parser accepts it (raises on malformed metadata)
    return text
