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
  Options: ``channels``, ``pool``, ``resolution``, ``solver``, ``train_iter``, ``eval_iter``, ``tol``, ``stop_mode``,
  ``damping``, ``gradient``, ``jacobian_weight``, ``residual_weight``, ``preset`` (``"equican"``, or ``"paper"`` for
  the reference implementation's DEC, see [`equican.canon.paper`][equican.canon.paper]), and the canonicalization
  options below.
* ``direct``: one pass of the same update network ([`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer]).
  Options: ``channels``, ``pool``, ``resolution``, and the canonicalization options below.
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

The learned canonicalizers (``dec``, ``direct``, ``optimization``, ``latent``) are trained to canonicalize, not only
to classify: [`CanonicalizationOptions`][equican.methods.CanonicalizationOptions] (``canon_weight``,
``canon_target``, ``canon_guard``, ``backbone_epochs``, ``canon_epochs``, ``prior_weight``) add the self-supervised
canonicalization loss ([`canonicalization_loss`][equican.canon.objective.canonicalization_loss]) and the paper's
stages (see [`CanonicalizationSchedule`][equican.methods.CanonicalizationSchedule]).

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

from . import validation as V
from .canon import Canonicalized, Canonicalizer, DEQCanonicalizer, DEQConfig, DirectCanonicalizer, SolverSettings
from .canon.nets import FixedPointEnergy, UpdateNet
from .canon.objective import TARGETS, CanonicalizationLoss, canonicalization_loss
from .canon.optimize import OptimizationCanonicalizer, OptimizationConfig
from .canon.paper import preset_canonicalizer
from .config import MethodConfig, from_options
from .data.seeding import keyed_elements
from .errors import ConfigError, UnknownNameError
from .group import Group, make_group
from .latent import LatentCanonicalized

__all__ = ["Objective", "METHODS", "list_methods", "build_objective", "method_group", "CanonicalizationSchedule",
           "CanonicalizationOptions"]

# Streams of the keyed random elements, so that two methods' draws are unrelated.
_AUGMENT_STREAM = 1
_INVARIANCE_STREAM = 2
_CANON_STREAM = 3


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


@dataclass(frozen=True)
class CanonicalizationSchedule:
    """How a canonicalizing method trains: stages by epoch, and the canonicalization loss.

    Epochs ``[0, backbone_epochs)`` train the backbone alone on inputs transformed by random group elements
    (augmentation; the canonicalizer is not used). The next ``canon_epochs`` train the canonicalizer alone with the
    self-supervised canonicalization loss (no labels; the backbone is not used). The remaining epochs train both:
    the task loss on canonical inputs plus ``canon_weight`` times the canonicalization loss. With both stage counts
    0 (the default) every epoch is joint. This is the paper's protocol (an augmentation-trained backbone, DEC-only
    epochs, then joint fine-tuning) when both are set.

    Attributes:
        canon_weight: weight of the canonicalization loss in the joint stage (0: the task loss alone).
        loss: the loss's target, guard and border.
        backbone_epochs: leading epochs of backbone-only augmentation training.
        canon_epochs: the following epochs of canonicalizer-only self-supervised training.
    """

    canon_weight: float = 1.0
    loss: CanonicalizationLoss = CanonicalizationLoss()
    backbone_epochs: int = 0
    canon_epochs: int = 0

    def stage(self, epoch: int) -> str:
        """``"backbone"``, ``"canonicalizer"`` or ``"joint"`` for a 0-based ``epoch``."""
        if epoch < self.backbone_epochs:
            return "backbone"
        return "canonicalizer" if epoch < self.backbone_epochs + self.canon_epochs else "joint"


def _canon_stats(stats: dict[str, float], infos: list[dict[str, Any]]) -> None:
    """Batch means of the solver statistics that the kinds report (DEQ: steps, converged, residual)."""
    for key, name in (("steps", "steps"), ("converged", "converged"), ("residual_true", "residual")):
        values = [info[key].float().mean() for info in infos if key in info and info[key].numel()]
        if values:
            stats[name] = float(torch.stack(values).mean())


class _CanonicalizingObjective(Objective):
    """Shared by the input and latent canonicalization methods: stages, keyed elements ``k``, prior, regularizers."""

    stream = _CANON_STREAM

    def __init__(self, model: nn.Module, group: Group, schedule: CanonicalizationSchedule, prior_weight: float,
                 seed: int) -> None:
        super().__init__(model, seed)
        self.group, self.schedule, self.prior_weight = group, schedule, prior_weight

    @property
    def staged(self) -> bool:
        """Whether some stage leaves parameters unused (DDP then needs ``find_unused_parameters``)."""
        return bool(self.schedule.backbone_epochs or self.schedule.canon_epochs)

    def elements(self, x: torch.Tensor, index: torch.Tensor, epoch: int, stream: int) -> torch.Tensor:
        """``k_i`` keyed by ``(seed, stream, epoch, index_i)``, ``(B, *param_shape)``."""
        keys = [(stream, epoch, int(i)) for i in index.tolist()]
        return keyed_elements(self.group, self.seed, keys, device=x.device, dtype=x.dtype)

    def backbone_step(self, backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                      epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            gx = self.group.act(self.elements(x, index, epoch, _AUGMENT_STREAM), x)
        loss = F.cross_entropy(backbone(gx), y)
        return loss, {"ce": float(loss.detach()), "loss": float(loss.detach())}

    def finish(self, loss: torch.Tensor, stats: dict[str, float], canons: list[tuple[Canonicalizer, CanonResult]],
               ) -> tuple[torch.Tensor, dict[str, float]]:
        """Add the prior and the kinds' own regularizers, and the solver statistics."""
        if self.prior_weight:
            prior = torch.stack([c.prior_loss(r.h if r.h is not None else r.g) for c, r in canons]).sum(0).mean()
            loss = loss + self.prior_weight * prior
            stats["prior"] = float(prior.detach())
        for c, r in canons:
            loss = loss + c.regularizer(r.info)
        _canon_stats(stats, [r.info for _, r in canons])
        stats["loss"] = float(loss.detach())
        return loss, stats


class CanonicalizedObjective(_CanonicalizingObjective):
    """A backbone on canonical inputs, trained by stages (see
    [`CanonicalizationSchedule`][equican.methods.CanonicalizationSchedule]): task cross-entropy plus
    ``canon_weight`` times the canonicalization loss, plus ``prior_weight`` times the canonicalizer's prior and the
    kind's own regularizer (the DEQ's Jacobian penalty).

    ``model`` is ``Canonicalized(backbone, canonicalizer)``: the same parameters, evaluated end to end.
    """

    def __init__(self, backbone: nn.Module, canonicalizer: Canonicalizer, prior_weight: float = 0.0,
                 seed: int = 0, schedule: CanonicalizationSchedule | None = None) -> None:
        schedule = CanonicalizationSchedule(canon_weight=0.0) if schedule is None else schedule
        super().__init__(Canonicalized(backbone, canonicalizer), canonicalizer.group, schedule, prior_weight, seed)

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        canon, backbone = self.model.canonicalizer, self.model.model
        stage = self.schedule.stage(epoch)
        if stage == "backbone":
            return self.backbone_step(backbone, x, y, index, epoch)
        stats: dict[str, float] = {}
        if stage == "canonicalizer" or self.schedule.canon_weight:
            terms = canonicalization_loss(canon, x, self.elements(x, index, epoch, _CANON_STREAM), self.schedule.loss)
            result = terms.result
            stats.update(terms.stats())
            loss = terms.loss.mean() * (1.0 if stage == "canonicalizer" else self.schedule.canon_weight)
        else:
            result, loss = canon(x), x.new_zeros(())
        if stage == "joint":
            ce = F.cross_entropy(backbone(result.x), y)
            loss = loss + ce
            stats["ce"] = float(ce.detach())
        return self.finish(loss, stats, [(canon, result)])


class LatentObjective(_CanonicalizingObjective):
    """Cross-entropy of a [`LatentCanonicalized`][equican.latent.LatentCanonicalized] model by stages, plus
    ``canon_weight`` times the sum over its insertion points of the canonicalization loss (on what each point's
    canonicalizer reads), the priors and the kinds' regularizers.

    ``model`` is the wrapper itself; one call per step gives the logits and every point's element (one forward call,
    as DDP requires). The ``"canonicalizer"`` stage runs the backbone too (the points' features come from it), but
    only the canonicalizers' loss is used.
    """

    def __init__(self, model: nn.Module, prior_weight: float = 0.0, seed: int = 0,
                 schedule: CanonicalizationSchedule | None = None) -> None:
        schedule = CanonicalizationSchedule(canon_weight=0.0) if schedule is None else schedule
        # One k per image serves every insertion point: the points share the wrapper's group when it built them.
        group = next(iter(model.canonicalizers.values())).group
        super().__init__(model, group, schedule, prior_weight, seed)

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        stage = self.schedule.stage(epoch)
        if stage == "backbone":
            return self.backbone_step(self.model.model, x, y, index, epoch)
        stats: dict[str, float] = {}
        loss = x.new_zeros(())
        if stage == "canonicalizer" or self.schedule.canon_weight:
            k = self.elements(x, index, epoch, _CANON_STREAM)
            logits, results, terms = self.model.forward_canonicalization(x, k, self.schedule.loss)
            canon_loss = torch.stack([t.loss.mean() for t in terms.values()]).sum()
            stats["canon"] = float(canon_loss.detach())
            loss = canon_loss * (1.0 if stage == "canonicalizer" else self.schedule.canon_weight)
        else:
            logits, results = self.model.forward_canon(x)
        if stage == "joint":
            ce = F.cross_entropy(logits, y)
            loss = loss + ce
            stats["ce"] = float(ce.detach())
        canons = [(self.model.canonicalizers[str(k)], r) for k, r in results.items()]
        return self.finish(loss, stats, canons)


# ---------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class _NoOptions:
    pass


@dataclass(frozen=True)
class InvarianceOptions:
    """``weight``: the KL term's weight (>= 0)."""

    weight: float = 1.0


@dataclass(frozen=True)
class CanonicalizationOptions:
    """How a learned canonicalizer is trained (see
    [`CanonicalizationSchedule`][equican.methods.CanonicalizationSchedule] and
    [`canonicalization_loss`][equican.canon.objective.canonicalization_loss]): ``canon_weight`` (joint weight of the
    canonicalization loss), ``canon_target`` (``element`` or ``input``), ``canon_guard`` (weight of the round-trip
    collapse guard), ``backbone_epochs`` and ``canon_epochs`` (the leading stages), and ``prior_weight``."""

    canon_weight: float = 1.0
    canon_target: str = "element"
    canon_guard: float = 1.0
    backbone_epochs: int = 0
    canon_epochs: int = 0
    prior_weight: float = 0.0

    def schedule(self) -> CanonicalizationSchedule:
        """The schedule these options describe."""
        return CanonicalizationSchedule(canon_weight=float(self.canon_weight),
                                        loss=CanonicalizationLoss(target=self.canon_target,
                                                                  guard=float(self.canon_guard)),
                                        backbone_epochs=self.backbone_epochs, canon_epochs=self.canon_epochs)


@dataclass(frozen=True)
class UpdateOptions(CanonicalizationOptions):
    """The update network of the ``dec``, ``direct`` and ``optimization`` methods (``channels``, ``pool``, and the
    ``resolution`` it works at: see [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]; None: the
    input's own), and how it is trained."""

    channels: tuple[int, ...] = (32, 64)
    pool: int = 2
    resolution: int | None = None


@dataclass(frozen=True)
class DECOptions(UpdateOptions):
    """Solver settings of ``dec``: Anderson by default, 5 iterations in training and 10 in evaluation (the paper's
    evaluation runs the same 5 as its training), phantom gradient; ``stop_mode`` and ``tol`` judge convergence,
    ``damping`` is Anderson's mixing, ``jacobian_weight`` torchdeq's Jacobian regularization and ``residual_weight``
    the fixed-point residual penalty (see [`DEQConfig`][equican.canon.deq.DEQConfig]). ``preset="paper"`` builds the
    reference implementation's DEC instead ([`preset_canonicalizer`][equican.canon.paper.preset_canonicalizer]),
    from ``channels``, ``pool`` and ``train_iter`` (its iterations in both modes); ``solver``, ``eval_iter``,
    ``tol`` and ``gradient`` are then the preset's."""

    solver: str = "anderson"
    train_iter: int = 5
    eval_iter: int = 10
    tol: float = 1e-3
    stop_mode: str = "abs"
    damping: float = 1.0
    gradient: str = "phantom"
    jacobian_weight: float = 0.0
    residual_weight: float = 0.0
    preset: str = "equican"


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
class LatentOptions(CanonicalizationOptions):
    """Insertion points and canonicalizers of ``latent`` (see
    [`LatentCanonicalized`][equican.latent.LatentCanonicalized]), and how they are trained."""

    at: int | tuple[int, ...] = (0,)
    canonicalizer: str | tuple[str, ...] = "deq"
    canonicalizer_input: str | tuple[str, ...] = "latent"
    uncanonicalize: bool | tuple[bool, ...] = True
    channels: tuple[int, ...] | None = None


def _parse(options_class: type, options: Mapping[str, Any], *, method: str) -> Any:
    opts = from_options(options_class, options, where=f"method {method!r}")
    for key in ("prior_weight", "weight", "canon_weight", "canon_guard", "jacobian_weight", "residual_weight"):
        value = getattr(opts, key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"method {method!r}: expected option {key} to be a finite number >= 0, got {value!r}")
    for key in ("backbone_epochs", "canon_epochs"):
        if hasattr(opts, key):
            V.require_int(getattr(opts, key), low=0, where=f"method {method!r}", name=f"option {key}")
    if getattr(opts, "canon_target", "element") not in TARGETS:
        raise ConfigError(f"method {method!r}: expected option canon_target in {TARGETS}, "
                          f"got {opts.canon_target!r}")
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
    if opts.preset != "equican":
        canon = preset_canonicalizer(opts.preset, group, in_channels, channels=opts.channels, pool=opts.pool,
                                     iterations=opts.train_iter)
        return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed, opts.schedule())
    def settings(iters: int) -> SolverSettings:
        return SolverSettings(solver=opts.solver, max_iter=iters, tol=opts.tol, stop_mode=opts.stop_mode,
                              damping=opts.damping)

    config = DEQConfig(train=settings(opts.train_iter), eval=settings(opts.eval_iter), gradient=opts.gradient,
                       jacobian_weight=float(opts.jacobian_weight), residual_weight=float(opts.residual_weight))
    canon = DEQCanonicalizer(group, _update_net(group, in_channels, opts), config, resolution=opts.resolution)
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed, opts.schedule())


def _direct(backbone: nn.Module, group: Group, opts: UpdateOptions, in_channels: int, seed: int) -> Objective:
    canon = DirectCanonicalizer(group, _update_net(group, in_channels, opts), resolution=opts.resolution)
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed, opts.schedule())


def _optimization(backbone: nn.Module, group: Group, opts: OptimizationOptions, in_channels: int,
                  seed: int) -> Objective:
    if opts.resolution is not None:
        # The energy is evaluated on the canonical input itself; a working resolution would be silently ignored.
        raise ConfigError(f"method 'optimization': expected option resolution to be unset (only dec and direct "
                          f"solve on a downsampled copy), got {opts.resolution!r}")
    net = _update_net(group, in_channels, opts)
    # UpdateNet's head starts at 0 (the identity for the DEC); the energy is quadratic in it, so a zero head would
    # get zero gradient forever. A small random start lets the energy's parameters train.
    nn.init.normal_(net.head.weight, std=1e-2)
    energy = FixedPointEnergy(net, group)
    config = OptimizationConfig(steps=opts.steps, eval_steps=opts.eval_steps, lr=opts.lr, optimizer=opts.optimizer,
                                unroll=opts.unroll)
    canon = OptimizationCanonicalizer(group, energy, config)
    return CanonicalizedObjective(backbone, canon, float(opts.prior_weight), seed, opts.schedule())


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
    return LatentObjective(model, float(opts.prior_weight), seed, opts.schedule())


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
        if config.group is not None or config.group_options:
            # Unused, but still checked: a typo here would otherwise run silently as the plain method.
            make_group(config.group or "monotone", **dict(config.group_options))
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
