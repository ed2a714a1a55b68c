"""[`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized]: the hooks that canonicalize around chosen blocks, and
the per-call record that carries each element from a block's start to its end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import validation as V
from .._hub import HubMixin, hub_save, pretrained_directory
from ..canon.base import CanonResult, Canonicalizer
from ..canon.registry import canonicalizer_kind, list_canonicalizers, make_canonicalizer
from ..errors import ConfigError, ShapeError
from ..group import Group, default_group, make_group
from .blocks import INPUTS, _feature_base, _insertion_points, _patch_embed, _per_point, find_blocks
from ._layout import from_image, to_image
from ._probe import _first_tensor, _image_channels, _probe_shapes, _probe_size

__all__ = ["LatentCanonicalized"]


@dataclass
class _Call:
    """What one forward call carries from hook to hook; dropped when the call ends."""

    owner: object
    image: torch.Tensor | None = None
    pending: dict[int, tuple[CanonResult, Any]] = field(default_factory=dict)
    results: dict[int, CanonResult] = field(default_factory=dict)
    # Set by forward_canonicalization: the elements k (B, *param_shape) and the loss settings; each point then
    # records its canonicalization terms.
    canon_k: torch.Tensor | None = None
    canon_loss: Any = None
    terms: dict[int, Any] = field(default_factory=dict)


class _Hook:
    """A hook of the wrapper (a plain object, so that ``copy.deepcopy`` of the model copies its wrapper with it)."""

    def __init__(self, owner: LatentCanonicalized, kind: str, index: int = -1) -> None:
        self.owner, self.kind, self.index = owner, kind, index

    def __call__(self, module: nn.Module, *rest: Any) -> Any:
        return getattr(self.owner, f"_{self.kind}")(self.index, *rest)


# ---------------------------------------------------------------------------------------------- the wrapper
class LatentCanonicalized(nn.Module, HubMixin):
    """A timm model whose chosen blocks run on canonicalized features (see the module docstring).

    Args:
        model: the network to wrap (a timm model, or any model whose blocks [`find_blocks`][equican.latent.blocks.find_blocks]
            finds).
        at: insertion points: block (stage) indices as timm numbers them, distinct, in range.
        canonicalizer: a registered kind ([`list_canonicalizers`][equican.canon.registry.list_canonicalizers];
            ``"dec"`` by default), a ready-made [`Canonicalizer`][equican.canon.base.Canonicalizer], or a sequence of these with one entry per
            insertion point.
        group: a registered group name or a [`Group`][equican.group.Group] (for the kinds built by name); None for
            the default ([`default_group`][equican.group.default_group]).
        canonicalizer_input: ``"latent"`` (the features at the insertion point) or ``"image"`` (the model's input;
            its element is applied to the features at the insertion point), for all points or one per point.
        uncanonicalize: map the block's output back by ``g_k`` (True), or leave it in the canonical frame (False);
            one value or one per point.
        group_options: keyword arguments of [`make_group`][equican.group.make_group] when ``group`` is a name.
        canonicalizer_options: keyword arguments of the kinds built by name (see
            [`make_canonicalizer`][equican.canon.registry.make_canonicalizer]); not passed to kinds that read
            nothing (``"identity"``).
        blocks: attribute path of the blocks, to override the search of [`find_blocks`][equican.latent.blocks.find_blocks].
        layout: ``"tokens"``, ``"NHWC"`` or ``"NCHW"``, to override the detected layout.
        in_channels: the input image's channels (found from the model when None).
        example_input: an input for the dry forward pass that measures feature channels (a zero image of the size
            the model states when None).

    Shapes:
        ``x: (B, C, H, W)`` -> whatever ``model`` returns (logits ``(B, num_classes)`` for a classifier).

    Raises:
        ConfigError: no blocks found, an unsupported layout, invalid insertion points, an unknown kind or option.
    """

    def __init__(self, model: nn.Module, *, at: int | Sequence[int] = (0,),
                 canonicalizer: str | Canonicalizer | Sequence[str | Canonicalizer] = "dec",
                 group: str | Group | None = None, canonicalizer_input: str | Sequence[str] = "latent",
                 uncanonicalize: bool | Sequence[bool] = True, group_options: Mapping[str, Any] | None = None,
                 canonicalizer_options: Mapping[str, Any] | None = None, blocks: str | None = None,
                 layout: str | None = None, in_channels: int | None = None,
                 example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        where = "LatentCanonicalized"
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{where}: expected model to be a torch.nn.Module, got {type(model).__name__}")
        names, modules, layout = find_blocks(model, blocks, layout)
        where = f"LatentCanonicalized({type(model).__name__})"
        if any(isinstance(hook, _Hook) for m in model.modules()
               for hook in (*m._forward_pre_hooks.values(), *m._forward_hooks.values())):
            # Two sets of hooks would both canonicalize. A deepcopy of a wrapped model carries (a copy of) its
            # wrapper's hooks along, so this also catches wrapping such a copy.
            raise ConfigError(f"{where}: the model already carries LatentCanonicalized hooks (it is wrapped, or a "
                              f"copy of a wrapped model); wrap a fresh model, or call unwrap() on its wrapper first")
        at = _insertion_points(at, len(modules), names, where)
        n = len(at)
        inputs = _per_point(canonicalizer_input, n, where, "canonicalizer_input",
                            lambda v: isinstance(v, str) and v in INPUTS, f"one of {INPUTS}")
        unc = _per_point(uncanonicalize, n, where, "uncanonicalize", lambda v: isinstance(v, bool), "a bool")
        kinds = _per_point(canonicalizer, n, where, "canonicalizer",
                           lambda v: isinstance(v, (Canonicalizer, str)),
                           f"a canonicalizer kind ({', '.join(list_canonicalizers())}) or an equican Canonicalizer")
        # Resolved once: an unknown kind raises UnknownNameError with the closest name; kinds that read nothing
        # (the identity) need no channels and take no options.
        reads = {k: canonicalizer_kind(k).needs_channels for k in kinds if isinstance(k, str)}
        if isinstance(canonicalizer, Canonicalizer) and n > 1:
            raise ConfigError(f"{where}: one Canonicalizer module was given for {n} insertion points; give one per "
                              f"point (a sequence), or a kind name")

        built = [k for k in kinds if isinstance(k, str)]
        if isinstance(group, Group):
            if group_options:
                raise ConfigError(f"{where}: group_options apply to a group given by name, got a Group instance")
        elif built:
            group = default_group() if group is None else group
            if not isinstance(group, str):
                raise ConfigError(f"{where}: expected group to be a registered name or an equican.Group, "
                                  f"got {type(group).__name__}")
            group = make_group(group, **dict(group_options or {}))
        image_channels = in_channels
        if any(isinstance(k, str) and reads[k] and i == "image" for k, i in zip(kinds, inputs)):
            image_channels = in_channels if in_channels is not None else _image_channels(model)
            if image_channels is None:
                raise ConfigError(f"{where}: could not find the input image's channels; pass in_channels=")
        latent_points = [k for k, kind, i in zip(at, kinds, inputs) if isinstance(kind, str) and reads[kind]
                         and i == "latent"]
        channels: dict[int, int] = {}
        if latent_points:
            if example_input is None:
                chans = image_channels if image_channels is not None else _image_channels(model)
                if chans is None:
                    raise ConfigError(f"{where}: could not find the input image's channels for the dry forward "
                                      f"pass; pass in_channels= or example_input=")
                p = next(model.parameters(), None)
                example_input = torch.zeros(1, chans, *_probe_size(model),
                                            dtype=p.dtype if p is not None else None,
                                            device=p.device if p is not None else None)
            shapes = _probe_shapes(model, modules, latent_points, example_input, where)
            for k, shape in shapes.items():
                if len(shape) != (3 if layout == "tokens" else 4):
                    raise ConfigError(f"{where}: unsupported layout: {names[k]} takes inputs of shape "
                                      f"{V.fmt_shape(shape)}, which is not the {layout} layout")
                channels[k] = shape[1] if layout == "NCHW" else shape[-1]

        canons: dict[str, Canonicalizer] = {}
        for k, kind, i in zip(at, kinds, inputs):
            if isinstance(kind, Canonicalizer):
                canons[str(k)] = kind
            else:
                chans = image_channels if i == "image" else channels.get(k)
                # A shared canonicalizer_options is meant for the learned kinds, not for those that read nothing.
                options = canonicalizer_options if reads[kind] else None
                canons[str(k)] = make_canonicalizer(kind, group, chans, options)  # type: ignore[arg-type]

        self.model = model
        self.canonicalizers = nn.ModuleDict(canons)
        self.at, self.layout, self.block_names = at, layout, tuple(names[k] for k in at)
        self.canonicalizer_input = dict(zip(at, inputs))
        self.uncanonicalize = dict(zip(at, unc))
        self.blocks_path, self.timm_config = blocks, None  # timm_config: set by create_model (name, kwargs)
        self._active: _Call | None = None
        self._handles = [model.register_forward_pre_hook(_Hook(self, "model_start"), with_kwargs=True),
                         model.register_forward_hook(_Hook(self, "model_end"), always_call=True)]
        for k in at:
            self._handles.append(modules[k].register_forward_pre_hook(_Hook(self, "block_start", k), with_kwargs=True))
            self._handles.append(modules[k].register_forward_hook(_Hook(self, "block_end", k), always_call=True))
        self._publish_config()

    # ------------------------------------------------------------------ save and load
    def equican_config(self, *, where: str = "LatentCanonicalized.equican_config") -> dict[str, Any]:
        """The canonicalization settings as JSON data: ``timm`` (``{"name", "kwargs"}`` when built by
        [`create_model`][equican.latent.create.create_model], else None), ``blocks``, ``layout``, the insertion points
        ``at``, the ``kinds`` and ``group`` of each point, and ``points``: per point its index, ``canonicalizer_input``,
        ``uncanonicalize`` and canonicalizer config (see [`equican.pretrained`][equican.pretrained]).

        Raises:
            ConfigError: a canonicalizer not built by kind, or a value JSON cannot hold.
        """
        from ..pretrained import canonicalizer_config, to_json

        points = [{"at": k, "canonicalizer_input": self.canonicalizer_input[k], "uncanonicalize": self.uncanonicalize[k],
                   "canonicalizer": canonicalizer_config(self.canonicalizers[str(k)], where=where)} for k in self.at]
        return to_json({"timm": self.timm_config, "blocks": self.blocks_path, "layout": self.layout,
                        "at": list(self.at), "kinds": [p["canonicalizer"]["kind"] for p in points],
                        "group": [p["canonicalizer"]["group"] for p in points], "points": points},
                       where=where, name="the latent config")

    def _publish_config(self) -> None:
        # timm's pretrained_cfg travels with the model (timm's own tools, a hub card): record the canonicalization in
        # it, on a copy (timm may share one dict between instances). Left out where it cannot be recorded.
        cfg = getattr(self.model, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            try:
                record = self.equican_config()
            except ConfigError:
                record = {"at": list(self.at), "recordable": False}
            self.model.pretrained_cfg = {**cfg, "equican": record}

    def save_pretrained(self, directory: str | Any, *, config: None = None, repo_id: str | None = None,
                        push_to_hub: bool = False, model_card_kwargs: dict[str, Any] | None = None,
                        **push_to_hub_kwargs: Any) -> Any:
        """Write ``config.json`` (timm name and kwargs, insertion points, canonicalizer configs),
        ``model.safetensors`` (the wrapper's ``state_dict``) and the model card ``README.md`` to ``directory``,
        replacing it as a whole (a failed write or a kill leaves the old model or the new one); see
        [`equican.pretrained`][equican.pretrained]. ``model_card_kwargs={"measured": {...}}`` adds measured numbers
        to the card; ``push_to_hub=True`` then uploads it to ``repo_id``. Returns the directory as a ``Path`` (the
        commit's URL after a push).

        Raises:
            ConfigError: a canonicalizer that was not built by kind, a timm keyword argument JSON cannot hold or
                outside [`TIMM_KWARGS`][equican.latent.create.TIMM_KWARGS], or a ``directory`` that is a file, lies
                under a file or holds other files than a saved model's. DataError: the write failed (e.g. a full
                disk); the directory is as it was.
        """
        from ..pretrained import save_latent

        return hub_save(self, save_latent, directory, config=config, repo_id=repo_id, push_to_hub=push_to_hub,
                        model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Any, model: nn.Module | None = None, *, revision: str | None = None,
                        cache_dir: str | None = None, force_download: bool = False, token: str | bool | None = None,
                        local_files_only: bool = False) -> "LatentCanonicalized":
        """The model saved by [`save_pretrained`][equican.latent.wrapper.LatentCanonicalized.save_pretrained] in
        ``directory``, or in a Hub repo (``name`` or ``namespace/name`` that is no local directory; fetched with
        ``huggingface_hub.snapshot_download``, to which ``revision`` ... ``local_files_only`` go): the timm model
        rebuilt offline (``pretrained=False``) from the recorded name and kwargs, or the bare ``model`` given (for a
        wrapper not built by ``create_model``), wrapped as recorded, weights loaded.

        Raises:
            DataError: a missing or unreadable file, or a field of the wrong type (named). CheckpointError: weights
                that do not fit the config (missing/unexpected keys and shape mismatches named; for the timm model,
                found on the meta device before it is allocated). ConfigError: a value out of range, or a timm name or
                keyword that [`check_timm_record`][equican.latent.create.check_timm_record] refuses (no
                ``checkpoint_path``, no ``pretrained``, no hub names: nothing is downloaded or unpickled).
                UnknownNameError: a timm model, kind or group not known here.
        """
        from ..pretrained import load_latent

        return load_latent(pretrained_directory(
            directory, where=f"{cls.__name__}.from_pretrained", revision=revision, cache_dir=cache_dir,
            force_download=force_download, token=token, local_files_only=local_files_only), model)

    # ------------------------------------------------------------------ timm's contract
    def forward(self, x: torch.Tensor) -> Any:
        """``model(x)`` with the chosen blocks canonicalized; logits ``(B, num_classes)`` for a classifier."""
        return self.model(x)

    def forward_canon(self, x: torch.Tensor) -> tuple[Any, dict[int, CanonResult]]:
        """``model(x)`` and the [`CanonResult`][equican.canon.base.CanonResult] of every insertion point (keyed by index).

        Each result's ``x`` is the canonical features ``(B, C, H, W)``, ``g``/``h`` the element and its inverse.
        """
        with self._calling(x) as call:
            out = self.model(x)
            return out, dict(call.results)

    def forward_features(self, x: torch.Tensor) -> Any:
        """``model.forward_features(x)`` with the chosen blocks canonicalized, for images ``x: (B, C, H, W)``.

        The result is the timm model's unpooled features, e.g. tokens ``(B, P + H·W, C')`` for a ViT or a feature
        map ``(B, C', H', W')`` for a ResNet.
        """
        with self._calling(x):
            return self.model.forward_features(x)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """timm's ``forward_intermediates(x, indices=..., ...)`` with the chosen blocks canonicalized (of the model a
        ``features_only`` extractor wraps, for one) on images ``x: (B, C, H, W)``; arguments and result as timm's
        (``intermediates_only=True``: a list of feature maps ``(B, C_k, H_k, W_k)`` in timm's default NCHW).

        Raises:
            ConfigError: the wrapped model has no ``forward_intermediates``.
        """
        method = getattr(_feature_base(self.model), "forward_intermediates", None)
        if method is None:
            raise ConfigError(f"LatentCanonicalized: {type(self.model).__name__} has no forward_intermediates")
        with self._calling(x):
            return method(x, *args, **kwargs)

    def forward_head(self, x: Any, pre_logits: bool = False) -> Any:
        """``model.forward_head``, unchanged (no insertion point is in a head)."""
        return self.model.forward_head(x, pre_logits=pre_logits)

    @property
    def num_classes(self) -> int:
        """The wrapped model's ``num_classes`` (timm's attribute), so the wrapper reads like the timm model."""
        return self.model.num_classes

    def __getattr__(self, name: str) -> Any:
        # Parameters, buffers and submodules first (nn.Module's own lookup), then the wrapped model's attributes
        # (pretrained_cfg, get_classifier, reset_classifier, ...), so the wrapper reads like the timm model.
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None or name.startswith("_"):
                raise
            return getattr(model, name)

    def prior_loss(self, results: Mapping[int, CanonResult]) -> torch.Tensor:
        """The sum over insertion points of each canonicalizer's prior (squared distance of ``g`` to ``e``), ``(B,)``.

        Args:
            results: what [`forward_canon`][equican.latent.wrapper.LatentCanonicalized.forward_canon] returned.
        """
        losses = [self.canonicalizers[str(k)].prior_loss(r) for k, r in results.items()]  # the kinds' own priors
        return torch.stack(losses).sum(dim=0)

    def unwrap(self) -> nn.Module:
        """Remove the hooks and return the bare model (the wrapper no longer works afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.model

    def extra_repr(self) -> str:
        return (f"at={self.at}, blocks={self.block_names}, layout={self.layout!r}, "
                f"canonicalizer_input={tuple(self.canonicalizer_input.values())}, "
                f"uncanonicalize={tuple(self.uncanonicalize.values())}")

    # ------------------------------------------------------------------ the per-call record
    @contextlib.contextmanager
    def _calling(self, x: torch.Tensor) -> Iterator[_Call]:
        if self._active is not None:  # a call is already under way (e.g. forward_features inside forward)
            yield self._active
            return
        self._check_input(x, "LatentCanonicalized.forward")
        self._active = call = _Call(owner=self, image=x)
        try:
            yield call
        finally:
            self._active = None

    def _model_start(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._active is None:
            self._check_input(_first_tensor(args, kwargs) if args or kwargs else None, "LatentCanonicalized.forward")
            self._active = _Call(owner="model", image=_first_tensor(args, kwargs))

    def _check_input(self, x: Any, where: str) -> None:
        from .._model_checks import check_image_input

        p = next(self.model.parameters(), None)
        check_image_input(x, channels=_image_channels(self.model), patch_embed=_patch_embed(self.model),
                          dtype=None if p is None else p.dtype, where=where)

    def _model_end(self, index: int, args: tuple[Any, ...], output: Any) -> None:
        if self._active is not None and self._active.owner == "model":
            self._active = None

    # ------------------------------------------------------------------ the blocks' hooks
    def _block_start(self, k: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._active is None:  # a block called on its own (e.g. by forward_intermediates): a call of its own
            self._active = _Call(owner=("block", k))
        call = self._active
        where = f"LatentCanonicalized: {self.block_names[self.at.index(k)]}"
        features = _first_tensor(args, kwargs)
        if features is None:
            raise ShapeError(f"{where}: expected the block's first argument to be a feature tensor")
        image, context = to_image(features, self.layout, self.model, call.image, where, "input")
        canon = self.canonicalizers[str(k)]
        if call.canon_k is not None:
            result = self._with_canonicalization_loss(canon, call, k, image, where)
        elif self.canonicalizer_input[k] == "latent":
            result = canon(image)
        else:
            result = self._from_image(canon, call, image, where)
        call.pending[k] = (result, context)
        call.results[k] = result
        features = from_image(result.x, self.layout, context)
        if args:
            return (features, *args[1:]), kwargs
        return args, {**kwargs, "x": features}

    def _block_end(self, k: int, args: tuple[Any, ...], output: Any) -> Any:
        call = self._active
        if call is None:
            return None
        try:
            pending = call.pending.pop(k, None)
            # output is None when the block raised (always_call hooks still run): only clean up then.
            if pending is None or output is None or not self.uncanonicalize[k]:
                return None
            where = f"LatentCanonicalized: {self.block_names[self.at.index(k)]}"
            if not isinstance(output, torch.Tensor):
                raise ShapeError(f"{where}: expected the block to return a tensor to map back, got "
                                 f"{type(output).__name__} (pass uncanonicalize=False for this point)")
            y, context = to_image(output, self.layout, self.model, call.image, where, "output")
            return from_image(self.canonicalizers[str(k)].uncanonicalize(pending[0], y), self.layout, context)
        finally:
            if call.owner == ("block", k):
                self._active = None

    def _with_canonicalization_loss(self, canon: Canonicalizer, call: _Call, k: int, features: torch.Tensor,
                                    where: str) -> CanonResult:
        """The point's result, computed together with its canonicalization terms (recorded in ``call.terms``).

        The loss is taken on what the canonicalizer reads: the features at this point, or the input image. With the
        image, the element found there is applied to the features (continuous groups: the discrete straight-through
        gradient of ``canonical_input`` needs the chart scores, which the loss does not keep).
        """
        from ..canon.objective import canonicalization_loss

        source = features if self.canonicalizer_input[k] == "latent" else call.image
        if source is None:
            raise ConfigError(f"{where}: canonicalizer_input='image' needs the input image; call the wrapper")
        terms = canonicalization_loss(canon, source, call.canon_k, call.canon_loss)
        call.terms[k] = terms
        if source is features:
            return terms.result
        h = terms.result.h
        return CanonResult(x=canon.group.act(h, features), info=terms.result.info, h=h, group=canon.group)

    def forward_canonicalization(self, x: torch.Tensor, k: torch.Tensor, config: Any = None
                                 ) -> tuple[Any, dict[int, CanonResult], dict[int, Any]]:
        """[`forward_canon`][equican.latent.wrapper.LatentCanonicalized.forward_canon] plus every insertion point's
        canonicalization loss under the elements ``k``.

        Args:
            x: images ``(B, C, H, W)``.
            k: one element of the wrapper's group per image, ``(B, *param_shape)``; the same ``k`` is used at every
                point (elements act in normalized coordinates, so one element means the same at every resolution).
            config: a [`CanonicalizationLoss`][equican.canon.objective.CanonicalizationLoss] (None: its defaults).

        Returns:
            ``(output, results, terms)``: the model's output on ``x``, each point's
            [`CanonResult`][equican.canon.base.CanonResult] and its
            [`CanonicalizationTerms`][equican.canon.objective.CanonicalizationTerms].
        """
        with self._calling(x) as call:
            call.canon_k, call.canon_loss = k, config
            out = self.model(x)
            return out, dict(call.results), dict(call.terms)

    def _from_image(self, canon: Canonicalizer, call: _Call, features: torch.Tensor, where: str) -> CanonResult:
        """The element predicted from the input image, applied to the features (CanonResult.x: the features)."""
        if call.image is None:
            raise ConfigError(f"{where}: canonicalizer_input='image' needs the input image; call the wrapper "
                              f"(forward, forward_features, forward_canon) or wrapper.model(x)")
        return canon.canonicalize(call.image, features, where=where)
