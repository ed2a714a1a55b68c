"""[`create_model`][equican.latent.create.create_model]: a timm model by name, wrapped for latent canonicalization."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..canon.base import Canonicalizer
from ..errors import ConfigError
from ..group import Group
from .wrapper import LatentCanonicalized

__all__ = ["create_model"]


def create_model(name: str, group: str | Group | None = None,
                 canonicalizer: str | Canonicalizer | Sequence[str | Canonicalizer] = "deq",
                 at: int | Sequence[int] = (0,), canonicalizer_input: str | Sequence[str] = "latent",
                 uncanonicalize: bool | Sequence[bool] = True, group_options: Mapping[str, Any] | None = None,
                 canonicalizer_options: Mapping[str, Any] | None = None, *, pretrained: bool = False,
                 pretrained_file: str | None = None, **timm_kwargs: Any) -> LatentCanonicalized:
    """``timm.create_model(name, **timm_kwargs)`` wrapped in
    [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].

    Mirrors ``timm.create_model`` (``num_classes``, ``in_chans``, ``img_size``, ``patch_size``, ``depth``, ...
    pass through), with ``pretrained=False`` by default.

    Pretrained weights load offline from a local file with ``pretrained_file=path`` (``.pth``/``.bin`` state dict or
    checkpoint, or ``.safetensors``), through the same timm adaptation as
    ``equican.models.build_model(..., options={"pretrained_file": path})`` (position embeddings resampled, stem
    adapted to ``in_chans``, a classifier of another class count re-initialized). The canonicalizers start fresh.

    Args:
        name: a timm model name.
        group: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        at: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer_input: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        uncanonicalize: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        group_options: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        canonicalizer_options: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        pretrained: timm's flag (downloads when no file is given; leave False offline).
        pretrained_file: a local weight file.
        **timm_kwargs: passed to ``timm.create_model``.

    Returns:
        The wrapped model; it maps images ``(B, in_chans, H, W)`` to what the timm model returns (logits
        ``(B, num_classes)`` for a classifier).

    Raises:
        UnknownNameError: timm knows no model ``name``.
        ConfigError: as for [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized].
        DataError: ``pretrained_file`` is missing or unreadable.
    """
    import timm

    from .._model_checks import creating, require_matching_keys
    from ..models import _pretrained_overlay, require_timm_model

    require_timm_model(name)
    where, keys = f"create_model({name!r})", set()
    if pretrained_file is not None:
        if "pretrained_cfg_overlay" in timm_kwargs:
            raise ConfigError("create_model: give pretrained_file or pretrained_cfg_overlay, not both")
        timm_kwargs["pretrained_cfg_overlay"] = _pretrained_overlay(name, pretrained_file, where=where, keys=keys)
    model = creating(lambda: timm.create_model(name, pretrained=pretrained or pretrained_file is not None,
                                               **timm_kwargs), offline_download=pretrained and pretrained_file is None, where=where)
    if pretrained_file is not None:
        require_matching_keys(model, keys, pretrained_file, where=where)
    wrapper = LatentCanonicalized(model, at=at, canonicalizer=canonicalizer, group=group,
                                  canonicalizer_input=canonicalizer_input, uncanonicalize=uncanonicalize,
                                  group_options=group_options, canonicalizer_options=canonicalizer_options)
    # What from_pretrained rebuilds the timm model from, offline: the name and the architecture's kwargs (the
    # pretrained file and overlay only matter for the first build; the saved weights replace them).
    kwargs = {k: v for k, v in timm_kwargs.items() if k != "pretrained_cfg_overlay"}
    wrapper.timm_config = {"name": name, "kwargs": kwargs}
    wrapper._publish_config()
    return wrapper
