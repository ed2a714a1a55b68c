"""The canonicalizer interface: [`Canonicalizer`][equican.canon.base.Canonicalizer], the
[`CanonResult`][equican.canon.base.CanonResult] it returns, and the baseline
[`IdentityCanonicalizer`][equican.canon.base.IdentityCanonicalizer]. Every kind in ``equican.canon`` subclasses the
base class defined here; the conventions are in the package docstring ([`equican.canon`][equican.canon]).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from .. import validation as V
from .._hub import HubMixin, hub_save, pretrained_directory
from ..errors import ConfigError, DeviceError, DTypeError, ShapeError
from ..group import Group
from .prior import identity_index, score_prior

__all__ = ["CanonResult", "Canonicalizer", "IdentityCanonicalizer"]


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-input mask ``(B,)``, or an elementwise one reduced to whole inputs, shaped to broadcast over ``like``
    (``(B, 1, ..., 1)``), for ``torch.where`` choices made per input."""
    if mask.ndim > 1:
        mask = mask.flatten(1).all(dim=1)
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _in_float32(canon: "Canonicalizer", x: torch.Tensor, target: torch.Tensor | None, where: str) -> "CanonResult":
    """``canon.canonicalize(x, target)`` with every float16/bfloat16 parameter and buffer of ``canon`` replaced by a
    float32 copy for the call: the solver, the elements and the group laws need float32. Buffers the call updates
    in place (batch-norm running statistics) are written back in their own dtype."""
    state = {name: t.float() if t.dtype in V.REDUCED_FLOAT_DTYPES else t
             for name, t in [*canon.named_parameters(), *canon.named_buffers()]}
    buffers = dict(canon.named_buffers())
    state = {f"canon.{name}": t for name, t in state.items()}
    result = torch.func.functional_call(_Canonicalize(canon, where), state, (x, target))
    with torch.no_grad():
        for name, t in buffers.items():
            copy = state[f"canon.{name}"]
            if copy is not t and t.is_floating_point():
                t.copy_(copy)
    return result


class _Canonicalize(nn.Module):
    """``canon.canonicalize`` as a module's forward, for ``torch.func.functional_call`` in ``_in_float32``."""

    def __init__(self, canon: nn.Module, where: str) -> None:
        super().__init__()
        self.canon, self.where = canon, where

    def forward(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        return self.canon.canonicalize(x, target, where=self.where)


class CanonResult:
    """What a canonicalizer returns for a batch ``x: (B, C, H, W)``.

    Attributes:
        x: the canonical inputs ``act(inverse(g), x)``, shape ``(B, C, H, W)``.
        g: the predicted elements, shape ``(B, *group.param_shape)``; ``act(g, result.x) ≈ x`` where the group acts
            invertibly. Computed on first access as ``group.inverse(h)`` when the result was made from ``h`` (an
            inversion is the costliest group operation for monotone scaling, and training needs only ``h``).
        info: solver statistics (tensors of leading size ``B`` or plain numbers); keys depend on the kind.
        h: the canonicalizing elements as the canonicalizer found them, ``(B, *group.param_shape)``: ``x`` is exactly
            ``act(h, input)`` and ``g = inverse(h)``.
            [`Canonicalizer.uncanonicalize`][equican.canon.base.Canonicalizer.uncanonicalize] maps outputs back through
            ``group.act_inverse(h, ·)``, which is more accurate than ``act(g, ·)`` for groups whose inverse is
            approximate. None for a result made without it (then ``g`` is used).

    Args:
        x: the canonical inputs.
        g: the elements, or None to compute them from ``h`` and ``group`` when asked for.
        info: solver statistics.
        h: the canonicalizing elements.
        group: the group that inverts ``h`` (needed only when ``g`` is None).

    Raises:
        ConfigError: neither ``g`` nor both ``h`` and ``group`` were given.
    """

    __slots__ = ("x", "_g", "info", "h", "_group")

    def __init__(self, x: torch.Tensor, g: torch.Tensor | None = None, info: dict[str, Any] | None = None,
                 h: torch.Tensor | None = None, group: Group | None = None) -> None:
        if g is None and (h is None or group is None):
            raise ConfigError("CanonResult: expected g, or h together with the group that inverts it")
        self.x, self._g, self.info, self.h, self._group = x, g, {} if info is None else info, h, group

    @property
    def g(self) -> torch.Tensor:
        """The predicted elements ``(B, *param_shape)`` (``inverse(h)``, computed once on first access)."""
        if self._g is None:
            self._g = self._group.inverse(self.h)
        return self._g

    def __repr__(self) -> str:
        return (f"CanonResult(x={V.fmt_shape(self.x.shape)}, h={None if self.h is None else V.fmt_shape(self.h.shape)}, "
                f"info={sorted(self.info)})")


class Canonicalizer(nn.Module, HubMixin, abc.ABC):
    """Base class of every canonicalizer: subclasses write [`solve`][equican.canon.base.Canonicalizer.solve].

    Args:
        group: the group whose elements are predicted.

    Raises:
        ConfigError: ``group`` is not a [`Group`][equican.group.Group], or it is discrete without a score chart
            ``(n,)``.
    """

    def __init__(self, group: Group) -> None:
        super().__init__()
        V.require_group(group, where=type(self).__name__)
        if group.discrete and len(group.unconstrained_shape) != 1:
            raise ConfigError(f"{type(self).__name__}: expected a discrete group with one score per element "
                              f"(unconstrained shape (n,)), got unconstrained shape {group.unconstrained_shape}")
        self.group = group
        # chart_identity's per-(device, dtype) constant; made here so that calls add no attribute.
        self._chart_identity: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @abc.abstractmethod
    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Find the chart parameters of the canonicalizing element of each input.

        Args:
            x: validated inputs, shape ``(B, C, H, W)``.

        Returns:
            ``(z, info)``: ``z`` of shape ``(B, *group.unconstrained_shape)`` with ``from_unconstrained(z) = g⁻¹``,
            and the solver statistics for [`CanonResult.info`][equican.canon.base.CanonResult].
        """

    def forward(self, x: torch.Tensor) -> CanonResult:
        """Canonicalize a batch: [`canonicalize`][equican.canon.base.Canonicalizer.canonicalize] of ``x`` itself.

        Args:
            x: inputs of shape ``(B, C, H, W)``, float32 or float64, finite, of the parameters' dtype.

        Returns:
            [`CanonResult`][equican.canon.base.CanonResult] with ``x: (B, C, H, W)``, ``g: (B, *param_shape)`` and the kind's
            ``info``.

        Raises:
            ShapeError, DTypeError, NonFiniteError: on invalid ``x``.

        Mixed precision: a float16/bfloat16 ``x``, or any ``x`` under ``torch.autocast``, is canonicalized in the
        parameters' dtype (float32) with autocast off (the solver and the elements need the precision), and the
        canonical input comes back in ``x``'s dtype; ``g``/``h`` stay in the parameters' dtype. A canonicalizer
        converted with ``.to(torch.bfloat16)`` (or float16) takes inputs of that dtype and solves with float32
        copies of its weights; ``g``/``h`` are then float32.
        """
        return self.canonicalize(x)

    def canonicalize(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                     where: str | None = None) -> CanonResult:
        """Find the canonicalizing elements from ``x`` and apply them to ``target``.

        Args:
            x: the inputs the elements are predicted from, ``(B, C, H, W)`` (checked as in ``forward``).
            target: what the elements act on, ``(B, C', H', W')`` (None: ``x``): e.g. a network's features at the
                points where ``x`` is its input image. Elements act in normalized coordinates, so one element means
                the same transformation at every resolution.
            where: the caller named in error messages (default ``"<Kind>.forward"``).

        Returns:
            [`CanonResult`][equican.canon.base.CanonResult] whose ``x`` is the canonical ``target``, of its shape
            and dtype. An input whose element is not finite, or makes a non-finite canonical form, gets the identity
            (``info["fallback"]``).

        Mixed precision as in ``forward``: solved and applied in the parameters' dtype with autocast off, the
        result cast back to ``target``'s dtype.
        """
        where = where or f"{type(self).__name__}.forward"
        y = x if target is None else target
        if any(isinstance(t, torch.Tensor) and t.is_floating_point()
               and (t.dtype in V.REDUCED_FLOAT_DTYPES or V.autocast_enabled(t)) for t in (x, y)):
            p = next(self.parameters(), None)
            wide = p.dtype if p is not None and p.dtype in V.FLOAT_DTYPES else torch.float32

            def widen(t: torch.Tensor) -> torch.Tensor:
                return t.to(wide) if t.dtype in V.REDUCED_FLOAT_DTYPES else t

            with torch.autocast(x.device.type, enabled=False):
                if p is not None and p.dtype in V.REDUCED_FLOAT_DTYPES:
                    # Converted with .to(bfloat16/float16): solved with float32 copies of the weights (gradients
                    # reach the reduced-precision weights through the copies).
                    result = _in_float32(self, widen(x), None if target is None else widen(target), where)
                else:
                    result = self.canonicalize(widen(x), None if target is None else widen(target), where=where)
            result.x = result.x.to(y.dtype)
            return result
        self.check_input(x, where=where)
        if target is not None:
            V.require_batch_images(target, where=where, name="target")
            V.require_same_placement(x, target, where=where, names=("x", "target"))
        z, info = self.solve(x)
        # A non-finite prediction (a diverged network) falls back to the identity for that input alone, and is
        # reported in info["fallback"]: one bad input must not make the batch raise or return NaN. torch.where keeps
        # this free of host synchronisation.
        z, h, finite = self.elements(z)
        try:
            canonical = self.canonical_input(z, h, y)
        except torch.linalg.LinAlgError:
            # A singular element (an affine map whose scale underflowed) fails the whole batch's inversion: redo it
            # input by input (a rare path), giving the failing ones a non-finite form, which falls back below.
            canonical = torch.cat([self._canonical_or_nan(z[i:i + 1], h[i:i + 1], y[i:i + 1])
                                   for i in range(y.shape[0])])
        # An element that is finite but outside the group's valid range (a log-scale of 1e5, an affine map whose
        # scale underflowed to det 0) shows as a non-finite canonical input: that input too gets the identity.
        ok = torch.isfinite(canonical).flatten(1).all(dim=1)
        canonical = torch.where(_rows(ok, canonical), canonical, y)
        h = torch.where(_rows(ok, h), h, self.chart_identity(z))
        fallback = ~(finite & ok)
        info["fallback"] = info["fallback"] | fallback if "fallback" in info else fallback
        return CanonResult(x=canonical, info=info, h=h, group=self.group)

    def _canonical_or_nan(self, z: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.canonical_input(z, h, x)
        except torch.linalg.LinAlgError:
            return torch.full_like(x, float("nan"))

    def elements(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z', h, ok)``: chart parameters and elements ``h = from_unconstrained(z')`` that are finite for every input.

        An input whose ``z`` or ``h`` is not finite (a diverged network, or a finite ``z`` beyond the range where the
        chart's exponentials stay finite) gets ``z' = 0`` and the identity; ``ok: (B,)`` is False for it. Computed
        with ``torch.where`` and unchecked group calls: no host synchronisation, nothing raised mid-solve.

        Args:
            z: chart parameters ``(B, *unconstrained_shape)``.
        """
        u = self.group.unchecked
        finite = torch.isfinite(z).flatten(1).all(dim=1)
        z = torch.where(_rows(finite, z), z, torch.zeros_like(z))
        h = u.from_unconstrained(z)
        ok = finite & torch.isfinite(h).flatten(1).all(dim=1)
        z = torch.where(_rows(ok, z), z, torch.zeros_like(z))
        h = torch.where(_rows(ok, h), h, self.chart_identity(z))
        return z, h, ok

    def chart_identity(self, z: torch.Tensor) -> torch.Tensor:
        """``from_unconstrained(0)``, the identity as the chart gives it, shape ``(1, *param_shape)`` on ``z``'s device
        and dtype: broadcast by ``torch.where`` where an input falls back.

        Computed once per device and dtype and kept (a constant of the group, not a per-call state): every DEQ
        iteration needs it, and for monotone scaling building it costs a softmax and a lattice upsampling.
        """
        cache = self.__dict__.setdefault("_chart_identity", {})  # (setdefault: a subclass that skipped __init__)
        key = (z.device, z.dtype)
        h0 = cache.get(key)
        if h0 is None:
            # Outside inference mode and without gradient: a plain constant tensor, usable by any later call.
            with torch.inference_mode(False), torch.no_grad():
                zero = torch.zeros((1, *self.group.unconstrained_shape), device=z.device, dtype=z.dtype)
                h0 = cache[key] = self.group.unchecked.from_unconstrained(zero)
        return h0

    def uncanonicalize(self, result: CanonResult, y: torch.Tensor) -> torch.Tensor:
        """Map a dense output computed on the canonical input back to the input's frame: ``act(g, y)``.

        Computed as ``group.act_inverse(result.h, y)`` when the result carries ``h``: the group's own inverse action
        of the element that made the canonical input. For monotone scaling that solves the inverse at the pixels
        where interpolating ``g`` between its lattice nodes would be off (measured in
        ``tests/test_canon_kinds.py``: never less accurate than ``act(g, y)``, and clearly more on strong warps);
        for groups with an exact inverse the two agree to rounding.

        Args:
            result: what [`forward`][equican.canon.base.Canonicalizer.forward] returned for the input.
            y: outputs on the canonical input's grid, ``(B, C', H, W)``.

        Returns:
            ``(B, C', H, W)``, differentiable in ``y`` and (for continuous groups) in the element.
        """
        if result.h is None:
            return self.group.act(result.g, y)
        return self.group.act_inverse(result.h, y)

    def canonical_input(self, z: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``act(h, x)`` with ``h = from_unconstrained(z)``, differentiable in ``z`` for every group.

        Args:
            z: chart parameters ``(B, *unconstrained_shape)``.
            h: the elements ``from_unconstrained(z)``, ``(B, *param_shape)`` (passed in so it is computed once).
            x: inputs ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``; for discrete groups with the straight-through gradient of the module docstring.
        """
        # Unchecked: x was validated at the entry point and h comes from elements(); a degenerate prediction (an
        # affine map whose scale underflowed) must give a (useless) image, not an exception mid-training.
        u = self.group.unchecked
        hard = u.act(h, x)
        if not self.group.discrete:
            return hard
        n = self.group.unconstrained_shape[0]
        weights = torch.softmax(z, dim=1)  # (B, n)
        soft = 0
        for i in range(n):
            # from_unconstrained of a one-hot score vector is the i-th element, whatever the group's labelling.
            onehot = torch.zeros_like(z)
            onehot[:, i] = 1
            soft = soft + weights[:, i, None, None, None] * u.act(u.from_unconstrained(onehot), x)
        return hard + (soft - soft.detach())

    def prior_loss(self, g: torch.Tensor | CanonResult) -> torch.Tensor:
        """A regularizer toward the identity element, shape ``(B,)``: the canonicalization prior.

        Given a [`CanonResult`][equican.canon.base.CanonResult] (what ``forward`` returned), the kind's own trained
        prior [`result_prior`][equican.canon.base.Canonicalizer.result_prior] when it has one (the cross-entropy of a
        discrete group's scores toward the identity, the angle of the escnn kinds' vector): it has a gradient for
        every input, also where the element came out of an arg-max. Otherwise (and given an element tensor) the
        squared distance of each element to the identity.

        The square (not the distance itself) is smooth at the identity, where every iterative kind starts and where
        an untrained network stays; its gradient there is exactly 0. That needs the group's distance to have a finite
        derivative where it is 0 (tests/test_canon_kinds.py checks it for every registered group). For a discrete
        group it has no gradient at all (the arg-max): pass the result instead.

        Args:
            g: a ``CanonResult`` of this canonicalizer, or elements of shape ``(B, *param_shape)``, float32 or float64
                (else DTypeError or ShapeError); finite.
        """
        if isinstance(g, CanonResult):
            trained = self.result_prior(g)
            if trained is not None:
                return trained
            g = g.h if g.h is not None else g.g
        # Unchecked: g comes from the canonicalizer during training, and a degenerate prediction must cost loss
        # rather than raise. Its layout is checked (no host synchronisation): a caller's tensor of another shape or
        # dtype is a typed error, not whatever torch raises inside the group's distance.
        self.group.check_shape(g, name="g", where=f"{type(self).__name__}.prior_loss")
        u = self.group.unchecked
        return u.distance(g, u.identity(g.shape[0], device=g.device, dtype=g.dtype)).pow(2)

    def result_prior(self, result: CanonResult) -> torch.Tensor | None:
        """The kind's trained prior of one ``forward`` result, ``(B,)``, or None for the distance prior.

        Here: for a discrete group whose result carries its chart scores ``info["logits"]`` ``(B, n)`` (as
        [`EquivariantCanonicalizer`][equican.canon.equivariant.EquivariantCanonicalizer] does), their cross-entropy
        toward the identity's score ([`score_prior`][equican.canon.prior.score_prior]). Kinds override it (the vector
        canonicalizer reads its vectors' angles).
        """
        logits = result.info.get("logits")
        if not self.group.discrete or not isinstance(logits, torch.Tensor):
            return None
        cache = self.__dict__.setdefault("_identity_index", {})
        if "index" not in cache:
            cache["index"] = identity_index(self.group)
        return score_prior(logits, cache["index"])

    def regularizer(self, info: dict[str, Any]) -> torch.Tensor | float:
        """A training loss term of the canonicalizer's own (e.g. the DEQ's Jacobian regularization), computed from the
        ``info`` of a training-mode call: a scalar (0-d tensor), or 0 for kinds without one. Added to the loss by
        every training method."""
        return 0.0

    def check_input(self, x: torch.Tensor, *, where: str) -> None:
        """Validate an input batch: ``(B, C, H, W)``, float32/float64, finite, on the parameters' dtype/device, with
        the channels the network reads (see
        [`expected_channels`][equican.canon.base.Canonicalizer.expected_channels])."""
        V.require_batch_images(x, where=where, name="x")
        channels = self.expected_channels()
        if channels is not None and x.shape[1] != channels:
            raise ShapeError(f"{where}: expected x of shape (B, {channels}, H, W) (the network reads {channels} "
                             f"channel(s)), got {V.fmt_shape(x.shape)}")
        p = next(self.parameters(), None)
        if p is not None and p.dtype != x.dtype:
            raise DTypeError(f"{where}: expected x of the parameters' dtype {p.dtype}, got {x.dtype} "
                             f"(pass x in that dtype, convert the canonicalizer with .to(x.dtype), or call it "
                             f"under torch.autocast)")
        if p is not None and p.device != x.device:
            raise DeviceError(f"{where}: expected x on the parameters' device {p.device}, got {x.device}")

    def expected_channels(self) -> int | None:
        """The input channels the canonicalizer reads, or None when it cannot be told (a plain callable energy, no
        network at all): the first int ``in_channels`` declared by, in turn, the canonicalizer itself, its ``reduce``
        module (the channel reduction that update canonicalizers apply first), and its modules in registration
        order (its network, the network's first layer), as ``UpdateNet`` and ``nn.Conv2d`` declare it."""
        for module in (self, getattr(self, "reduce", None), *self.modules()):
            value = getattr(module, "in_channels", None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """Chart parameters of the identity for a batch like ``x``: zeros of shape ``(B, *unconstrained_shape)``."""
        return x.new_zeros((x.shape[0], *self.group.unconstrained_shape))

    def extra_repr(self) -> str:
        return f"group={self.group!r}"

    def save_pretrained(self, directory: str | Any, *, config: None = None, repo_id: str | None = None,
                        push_to_hub: bool = False, model_card_kwargs: dict[str, Any] | None = None,
                        **push_to_hub_kwargs: Any) -> Any:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` to ``directory``, atomically
        (see [`equican.pretrained`][equican.pretrained]); only for canonicalizers built by
        [`make_canonicalizer`][equican.canon.registry.make_canonicalizer] ([`ConfigError`][equican.errors.ConfigError]
        otherwise). ``model_card_kwargs={"measured": {"invariance error": 0.01}}`` adds measured numbers to the card;
        ``push_to_hub=True`` then uploads the directory to ``repo_id`` (``huggingface_hub``'s ``push_to_hub``).
        Returns the directory as a ``Path`` (the commit's URL after a push)."""
        from ..pretrained import save_canonicalizer

        return hub_save(self, save_canonicalizer, directory, config=config, repo_id=repo_id, push_to_hub=push_to_hub,
                        model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Any, *, revision: str | None = None, cache_dir: str | None = None,
                        force_download: bool = False, token: str | bool | None = None,
                        local_files_only: bool = False) -> "Canonicalizer":
        """The canonicalizer saved by [`save_pretrained`][equican.canon.base.Canonicalizer.save_pretrained] in
        ``directory``, rebuilt by kind with its weights (see [`equican.pretrained`][equican.pretrained]); or in a Hub
        repo ``directory`` (``name`` or ``namespace/name`` that is no local directory), fetched with
        ``huggingface_hub.snapshot_download`` (``revision``, ``cache_dir``, ``force_download``, ``token``,
        ``local_files_only`` go to it)."""
        from ..pretrained import load_canonicalizer

        where = f"{cls.__name__}.from_pretrained"
        module = load_canonicalizer(pretrained_directory(
            directory, where=where, revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
            local_files_only=local_files_only))
        if not isinstance(module, cls):
            raise ConfigError(f"{where}: expected {directory} to hold a {cls.__name__}, got "
                              f"a {type(module).__name__} (load it with Canonicalizer.from_pretrained)")
        return module


class IdentityCanonicalizer(Canonicalizer):
    """``g = e`` for every input: the canonical input is the input itself. The baseline without canonicalization."""

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The identity's chart parameters, zeros ``(B, *unconstrained_shape)``, and an empty ``info``."""
        return self.zeros(x), {}
