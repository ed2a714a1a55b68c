"""Training methods: how a classifier is made invariant to a group, behind one interface.

A method turns a backbone classifier ``x -> logits`` into an [`Objective`][equican.methods.Objective], an ``nn.Module``
that holds

* ``objective.model``: the classifier that is evaluated (``x (B, C, H, W) -> logits (B, K)``); for the
  canonicalization methods the backbone wrapped in [`Canonicalized`][equican.canon.wrapper.Canonicalized];
* ``objective(x, y, index, epoch) -> (loss, stats)``: one training loss, computed in a single forward call so that
  ``DistributedDataParallel`` can wrap the objective as it is.

The methods (``MethodConfig.name``) and their options (``MethodConfig.options``):

* ``plain``: cross-entropy on the data as given. No group, no options.
* ``augment``: cross-entropy on ``act(g, x)``, one random ``g`` per sample and epoch.
* ``invariance``: cross-entropy on ``x`` plus ``weight · KL(p(x) ‖ p(act(g, x)))`` (invariance-loss fine-tuning).
  Options: ``weight`` (1.0).
* ``dec``: the deep equilibrium canonicalizer ([`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]) at the input.
  Options: ``channels``, ``pool``, ``solver``, ``train_iter``, ``eval_iter``, ``tol``, ``gradient``, ``prior_weight``.
* ``direct``: one pass of the same update network ([`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer]).
  Options: ``channels``, ``pool``, ``prior_weight``.
* ``optimization``: gradient descent on the fixed-point energy of the same network
  ([`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer]). Options: ``channels``, ``pool``,
  ``steps``, ``eval_steps``, ``lr``, ``optimizer``, ``unroll``, ``prior_weight``.
* ``escnn``: an exactly equivariant escnn canonicalizer
  ([`equivariant_canonicalizer`][equican.canon.equivariant.equivariant_canonicalizer]); needs a rotation group
  (default ``cyclic``; also ``rotation``, ``o2``, ``dihedral``). Options: ``channels``, ``kernel_size``.
* ``latent``: latent canonicalization ([`LatentCanonicalized`][equican.latent.LatentCanonicalized]): one
  canonicalizer per chosen block of the backbone (a timm model, or the package's ``cnn``/``vit``), plus
  ``prior_weight`` times the sum of every insertion point's prior. Options: ``at`` (block indices, default ``(0,)``),
  ``canonicalizer`` (``deq``, ``direct``, ``escnn``, ``identity``), ``canonicalizer_input`` (``latent`` or
  ``image``), ``uncanonicalize`` (one bool or one per point), ``channels`` (the update network's widths; the kind's
  default when unset), ``prior_weight``.

Every method that takes a group takes any registered group (``MethodConfig.group``, default ``monotone``; ``escnn``
needs a rotation group). Random elements are keyed by ``(seed, stream, epoch, sample index)``
([`keyed_elements`][equican.data.seeding.keyed_elements]), so they do not depend on the batch size, the data order, the
number of processes, or on whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as V
from .canon import Canonicalized, Canonicalizer, DEQCanonicalizer, DEQConfig, DirectCanonicalizer, SolverSettings
from .canon.nets import FixedPointEnergy, UpdateNet
from .canon.optimize import OptimizationCanonicalizer, OptimizationConfig
from .config import MethodConfig, from_options
from .data.seeding import keyed_elements
from .errors import ConfigError, UnknownNameError
from .group import Group, make_group
from .latent import LatentCanonicalized

__all__ = ["Objective", "METHODS", "list_methods", "build_objective", "method_group"]

# Streams of the keyed random elements, so that two methods' draws are unrelated.
_AUGMENT_STREAM = 1
_INVARIANCE_STREAM = 2


class Objective(nn.Module):
    """A classifier and its training loss.

    Args:
        model: the classifier that is trained and evaluated, ``(B, C, H, W) -> (B, K)``.
        seed: seed of the method's random elements.
    """

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.seed = V.require_int(seed, low=0, where=type(self).__name__, name="seed")

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch.

        Args:
            x: inputs ``(B, C, H, W)``.
            y: labels ``(B,)``, int64.
            index: each sample's index in the training set, ``(B,)`` (keys its random elements).
            epoch: the epoch, 0-based (keys the random elements too, so each epoch draws new ones).

        Returns:
            ``(loss, stats)``: the scalar loss and numbers to report (``stats["loss"]`` among them).
        """
        loss = F.cross_entropy(self.model(x), y)
        return loss, {"loss": float(loss.detach())}


class _GroupObjective(Objective):
    """An objective that transforms inputs by random elements of ``group``."""

    stream = 0

    def __init__(self, model: nn.Module, group: Group, seed: int = 0) -> None:
        super().__init__(model, seed)
        self.group = group

    def transformed(self, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """``act(g_i, x_i)`` with ``g_i`` keyed by ``(seed, stream, epoch, index_i)``."""
        keys = [(self.stream, epoch, int(i)) for i in index.tolist()]
        g = keyed_elements(self.group, self.seed, keys, device=x.device, dtype=x.dtype)
        return self.group.act(g, x)


class Augmented(_GroupObjective):
    """Cross-entropy on randomly transformed inputs (data augmentation by the group)."""

    stream = _AUGMENT_STREAM

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            gx = self.transformed(x, index, epoch)
        loss = F.cross_entropy(self.model(gx), y)
        return loss, {"loss": float(loss.detach())}


class InvarianceRegularized(_GroupObjective):
    """``CE(f(x), y) + weight · KL(softmax f(x) ‖ softmax f(act(g, x)))``.

    Both views go through the model in one batch of ``2B``: one forward call per step, as DDP requires.
    """

    stream = _INVARIANCE_STREAM

    def __init__(self, model: nn.Module, group: Group, seed: int = 0, weight: float = 1.0) -> None:
        super().__init__(model, group, seed)
        self.weight = weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            gx = self.transformed(x, index, epoch)
        logits, logits_g = self.model(torch.cat([x, gx])).chunk(2)
        ce = F.cross_entropy(logits, y)
        # KL(p ‖ q) with p the prediction on x: F.kl_div takes log q as input and log p as target.
        kl = F.kl_div(F.log_softmax(logits_g, dim=1), F.log_softmax(logits, dim=1), log_target=True,
                      reduction="batchmean")
        loss = ce + self.weight * kl
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "kl": float(kl.detach())}


class CanonicalizedObjective(Objective):
    """Cross-entropy of the backbone on canonical inputs, plus ``prior_weight`` times the canonicalizer's prior.

    ``model`` is ``Canonicalized(backbone, canonicalizer)``: the same parameters, evaluated end to end.
    """

    def __init__(self, backbone: nn.Module, canonicalizer: Canonicalizer, prior_weight: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(Canonicalized(backbone, canonicalizer), seed)
        self.prior_weight = prior_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        result = self.model.canonicalizer(x)
        ce = F.cross_entropy(self.model.model(result.x), y)
        loss = ce
        stats = {"ce": float(ce.detach())}
        if self.prior_weight:
            prior = self.model.canonicalizer.prior_loss(result.g).mean()
            loss = loss + self.prior_weight * prior
            stats["prior"] = float(prior.detach())
        for key in ("steps", "converged"):
            if key in result.info:
                stats[key] = float(result.info[key].float().mean())
        stats["loss"] = float(loss.detach())
        return loss, stats


class LatentObjective(Objective):
    """Cross-entropy of a [`LatentCanonicalized`][equican.latent.LatentCanonicalized] model, plus ``prior_weight`` times
    the sum over its insertion points of each canonicalizer's prior.

    ``model`` is the wrapper itself; one call of [`forward_canon`][equican.latent.LatentCanonicalized.forward_canon] per
    step gives the logits and every point's element (one forward call, as DDP requires).
    """

    def __init__(self, model: nn.Module, prior_weight: float = 0.0, seed: int = 0) -> None:
        super().__init__(model, seed)
        self.prior_weight = prior_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits, results = self.model.forward_canon(x)
        ce = F.cross_entropy(logits, y)
        loss = ce
        stats = {"ce": float(ce.detach())}
        if self.prior_weight:
            prior = self.model.prior_loss(results).mean()
            loss = loss + self.prior_weight * prior
            stats["prior"] = float(prior.detach())
        for key in ("steps", "converged"):
            values = [r.info[key].float().mean() for r in results.values() if key in r.info]
            if values:
                stats[key] = float(torch.stack(values).mean())
        stats["loss"] = float(loss.detach())
        return loss, stats


# ---------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class _NoOptions:
    pass


@dataclass(frozen=True)
class InvarianceOptions:
    """``weight``: the KL term's weight (>= 0)."""

    weight: float = 1.0


@dataclass(frozen=True)
class UpdateOptions:
    """The update network of the ``dec``, ``direct`` and ``optimization`` methods, and the prior's weight."""

    channels: tuple[int, ...] = (32, 64)
    pool: int = 2
    prior_weight: float = 0.0


@dataclass(frozen=True)
class DECOptions(UpdateOptions):
    """Solver settings of ``dec``: Anderson by default, 5 iterations in training and 10 in evaluation (the paper's
    MNIST setting), phantom gradient."""

    solver: str = "anderson"
    train_iter: int = 5
    eval_iter: int = 10
    tol: float = 1e-3
    gradient: str = "phantom"


@dataclass(frozen=True)
class OptimizationOptions(UpdateOptions):
    """Gradient steps of ``optimization`` (see [`OptimizationConfig`][equican.canon.optimize.OptimizationConfig])."""

    steps: int = 5
    eval_steps: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"
    unroll: int = 1


@dataclass(frozen=True)
class EscnnOptions:
    """The escnn canonicalizer's regular fields per layer and kernel size."""

    channels: tuple[int, ...] = (8, 8)
    kernel_size: int = 5


@dataclass(frozen=True)
class LatentOptions:
    """Insertion points and canonicalizers of ``latent`` (see
    [`LatentCanonicalized`][equican.latent.LatentCanonicalized])."""

    at: int | tuple[int, ...] = (0,)
    canonicalizer: str | tuple[str, ...] = "deq"
    canonicalizer_input: str | tuple[str, ...] = "latent"
    uncanonicalize: bool | tuple[bool, ...] = True
    channels: tuple[int, ...] | None = None
    prior_weight: float = 0.0


def _parse(options_class: type, options: Mapping[str, Any], *, method: str) -> Any:
    opts = from_options(options_class, options, where=f"method {method!r}")
    for key in ("prior_weight", "weight"):
        value = getattr(opts, key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"method {method!r}: expected option {key} to be a finite number >= 0, got {value!r}")
    return opts


# ---------------------------------------------------------------------------------------------- builders
def _update_net(group: Group, in_channels: int, opts: UpdateOptions) -> UpdateNet:
    return UpdateNet(in_channels, group.unconstrained_shape, channels=opts.channels, pool=opts.pool)


def _plain(backbone: nn.Module, group: Group | None, opts: Any, in_channels: int, seed: int) -> Objective:
    return Objective(backbone, seed)


def _augment(backbone: nn.Module, group: Group, opts: Any, in_channels: int, seed: int) -> Objective:
    return Augmented(backbone, group, seed)


def _invariance(backbone: nn.Module, group: Group, opts: InvarianceOptions, in_channels: int,
                seed: int) -> Objective:
    return InvarianceRegularized(backbone, group, seed, weight=float(opts.weight))


def _dec(backbone: nn.Module, group: Group, opts: DECOptions, in_channels: int, seed: int) -> Objective:
    config = DEQConfig(train=SolverSettings(solver=opts.solver, max_iter=opts.train_iter, tol=opts.tol),
                       eval=SolverSettings(solver=opts.solver, max_iter=opts.eval_iter, tol=opts.tol),
                       gradient=opts.gradient)
    canon = DEQCanonicalizer(group, _update_net(group, in_channels, opts), config)
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed)


def _direct(backbone: nn.Module, group: Group, opts: UpdateOptions, in_channels: int, seed: int) -> Objective:
    canon = DirectCanonicalizer(group, _update_net(group, in_channels, opts))
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed)


def _optimization(backbone: nn.Module, group: Group, opts: OptimizationOptions, in_channels: int,
                  seed: int) -> Objective:
    net = _update_net(group, in_channels, opts)
    # UpdateNet's head starts at 0 (the identity for the DEC); the energy is quadratic in it, so a zero head would
    # get zero gradient forever. A small random start lets the energy's parameters train.
    nn.init.normal_(net.head.weight, std=1e-2)
    energy = FixedPointEnergy(net, group)
    config = OptimizationConfig(steps=opts.steps, eval_steps=opts.eval_steps, lr=opts.lr, optimizer=opts.optimizer,
                                unroll=opts.unroll)
    canon = OptimizationCanonicalizer(group, energy, config)
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed)


def _escnn(backbone: nn.Module, group: Group, opts: EscnnOptions, in_channels: int, seed: int) -> Objective:
    try:
        from .canon.equivariant import equivariant_canonicalizer  # escnn is optional: import it only when asked
    except ImportError as exc:
        raise ConfigError(f"method 'escnn': needs the optional escnn package (pip install 'equican[escnn]'); "
                          f"importing it failed: {exc}") from None

    canon = equivariant_canonicalizer(group, in_channels, channels=opts.channels, kernel_size=opts.kernel_size)
    return CanonicalizedObjective(backbone, canon, 0.0, seed)


def _latent(backbone: nn.Module, group: Group, opts: LatentOptions, in_channels: int, seed: int) -> Objective:
    options = {} if opts.channels is None else {"channels": opts.channels}
    model = LatentCanonicalized(backbone, at=opts.at, canonicalizer=opts.canonicalizer, group=group,
                                canonicalizer_input=opts.canonicalizer_input, uncanonicalize=opts.uncanonicalize,
                                canonicalizer_options=options, in_channels=in_channels)
    return LatentObjective(model, float(opts.prior_weight), seed)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its options class, its default group (None: it uses no group) and its builder."""

    options: type
    default_group: str | None
    build: Callable[..., Objective]


METHODS: dict[str, MethodSpec] = {
    "plain": MethodSpec(_NoOptions, None, _plain),
    "augment": MethodSpec(_NoOptions, "monotone", _augment),
    "invariance": MethodSpec(InvarianceOptions, "monotone", _invariance),
    "dec": MethodSpec(DECOptions, "monotone", _dec),
    "direct": MethodSpec(UpdateOptions, "monotone", _direct),
    "optimization": MethodSpec(OptimizationOptions, "monotone", _optimization),
    "escnn": MethodSpec(EscnnOptions, "cyclic", _escnn),
    "latent": MethodSpec(LatentOptions, "monotone", _latent),
}
"""The training methods by name (see the module docstring)."""


def list_methods() -> list[str]:
    """The method names [`build_objective`][equican.methods.build_objective] accepts."""
    return list(METHODS)


def _spec(name: str) -> MethodSpec:
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"unknown method {name!r}{hint}; expected one of {list_methods()}")
    return METHODS[name]


def method_group(config: MethodConfig) -> Group | None:
    """The group a method uses, built from ``config.group`` (or the method's default) and ``group_options``.

    Returns:
        None for a method that uses no group.

    Raises:
        UnknownNameError: an unknown method or group name. ConfigError: invalid group options.
    """
    spec = _spec(config.name)
    if spec.default_group is None:
        return None
    return make_group(config.group or spec.default_group, **dict(config.group_options))


def build_objective(config: MethodConfig, backbone: nn.Module, *, in_channels: int, seed: int = 0) -> Objective:
    """The objective of ``config.name`` around ``backbone``.

    Args:
        config: the method, its group and options.
        backbone: the classifier ``(B, in_channels, H, W) -> (B, K)``.
        in_channels: input channels (the canonicalizer networks read the input).
        seed: seed of the random elements.

    Raises:
        UnknownNameError: an unknown method or group. ConfigError: an unknown or invalid option.
    """
    if not isinstance(config, MethodConfig):
        raise ConfigError(f"build_objective: expected a MethodConfig, got {type(config).__name__}")
    spec = _spec(config.name)
    opts = _parse(spec.options, config.options, method=config.name)
    group = method_group(config)
    return spec.build(backbone, group, opts, in_channels, seed)
