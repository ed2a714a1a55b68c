"""The training objectives: a classifier and its loss, one module per way of training (the methods of
[`equican.methods`][equican.methods] build them).

Every objective is an ``nn.Module`` holding ``objective.model`` (the classifier that is evaluated) and computing
``objective(x, y, index, epoch) -> (loss, stats)`` in a single forward call, so that ``DistributedDataParallel``
can wrap it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import validation as V
from .canon.base import CanonResult, Canonicalizer
from .canon.objective import CanonicalizationLoss, ElementDistribution, canonicalization_loss
from .canon.wrapper import Canonicalized
from .data.seeding import keyed_elements
from .errors import ConfigError
from .group import Group

__all__ = ["Objective", "Augmented", "InvarianceRegularized", "CanonicalizationSchedule", "CanonicalizedObjective",
           "LatentObjective"]

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
        """The loss of one batch, as [`Objective.forward`][equican.objectives.Objective.forward]: ``x (B, C, H, W)``,
        ``y (B,)``, ``index (B,)`` -> ``(loss, stats)`` with a scalar loss."""
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
        """The loss of one batch, as [`Objective.forward`][equican.objectives.Objective.forward]: ``x (B, C, H, W)``,
        ``y (B,)``, ``index (B,)`` -> ``(loss, stats)`` with a scalar loss."""
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
        loss: the loss's target, guards and border.
        elements: the distribution of the loss's elements ``k`` (its ``warmup`` counts epochs of the stages that
            use the loss).
        pairs: take the loss's second view from the data instead of ``act(k, x)``: the objective's ``views``
            (set by [`equican.train.build`][equican.train.build] for datasets that render their own nuisance) give
            it for each training index and epoch.
        task_gradient: whether the task loss of the joint stage trains the canonicalizer too. False: the
            backbone learns on canonical inputs (detached), and the canonicalizer is trained by the canonicalization
            loss alone, so a classifier cannot pull it away from canonicalizing (measured in the demo: joint
            gradients left the DEC unconverged and the classifier worse than plain on some seeds).
        backbone_epochs: leading epochs of backbone-only augmentation training.
        canon_epochs: the following epochs of canonicalizer-only self-supervised training.
    """

    canon_weight: float = 1.0
    loss: CanonicalizationLoss = CanonicalizationLoss()
    elements: ElementDistribution = ElementDistribution()
    pairs: bool = False
    task_gradient: bool = True
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


_Canonicalized = tuple["torch.Tensor | None", "torch.Tensor | None", dict, list]


class _CanonicalizingObjective(Objective):
    """Shared by the input and latent canonicalization methods: stages, keyed elements ``k``, prior, regularizers."""

    stream = _CANON_STREAM

    def __init__(self, model: nn.Module, group: Group, schedule: CanonicalizationSchedule, prior_weight: float,
                 seed: int) -> None:
        super().__init__(model, seed)
        self.group, self.schedule, self.prior_weight = group, schedule, prior_weight
        # (index (B,), epoch) -> second views (B, C, H, W), for schedule.pairs; set by the training builder.
        self.views: Callable[[torch.Tensor, int], torch.Tensor] | None = None

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

    def canonicalize(self, x: torch.Tensor, k: torch.Tensor | None, classify: bool,
                     pair: torch.Tensor | None = None) -> _Canonicalized:
        """One pass of the model's canonicalization: ``(logits, canon_loss, stats, canons)``.

        ``k`` (elements ``(B, *param_shape)``, or None) asks for the canonicalization loss under them
        (``canon_loss``, a scalar; else None), ``pair`` (second views ``(B, C, H, W)``, or None) for it on those
        views instead; ``classify`` for the logits ``(B, K)`` (else they may be None); ``canons`` pairs each
        canonicalizer with its result.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        stage = self.schedule.stage(epoch)
        if stage == "backbone":
            return self.backbone_step(self.model.model, x, y, index, epoch)
        with_loss = stage == "canonicalizer" or bool(self.schedule.canon_weight)
        k = pair = None
        if with_loss and self.schedule.pairs:
            if self.views is None:
                raise ConfigError("canon_pairs: expected the objective's views (a dataset that renders its own "
                                  "nuisance, e.g. local_scale, set by equican.train.build), got none")
            pair = self.views(index, epoch).to(device=x.device, dtype=x.dtype)
        elif with_loss:
            k = self.schedule.elements.scale_draws(self.elements(x, index, epoch, _CANON_STREAM), self.group,
                                                   step=epoch - self.schedule.backbone_epochs)
        logits, canon_loss, stats, canons = self.canonicalize(x, k, classify=stage == "joint", pair=pair)
        loss = x.new_zeros(())
        if canon_loss is not None:
            loss = canon_loss * (1.0 if stage == "canonicalizer" else self.schedule.canon_weight)
        if stage == "joint":
            ce = F.cross_entropy(logits, y)
            loss = loss + ce
            stats["ce"] = float(ce.detach())
        return self.finish(loss, stats, canons)

    def finish(self, loss: torch.Tensor, stats: dict[str, float], canons: list[tuple[Canonicalizer, CanonResult]],
               ) -> tuple[torch.Tensor, dict[str, float]]:
        """Add the prior and the kinds' own regularizers, and the solver statistics."""
        if self.prior_weight:
            # The result, not its element: an exact kind's trained prior reads its scores (the element is an arg-max).
            prior = torch.stack([c.prior_loss(r) for c, r in canons]).sum(0).mean()
            loss = loss + self.prior_weight * prior
            stats["prior"] = float(prior.detach())
        for c, r in canons:
            loss = loss + c.regularizer(r.info)
        _canon_stats(stats, [r.info for _, r in canons])
        stats["loss"] = float(loss.detach())
        return loss, stats


class CanonicalizedObjective(_CanonicalizingObjective):
    """A backbone on canonical inputs, trained by stages (see
    [`CanonicalizationSchedule`][equican.objectives.CanonicalizationSchedule]): task cross-entropy plus
    ``canon_weight`` times the canonicalization loss, plus ``prior_weight`` times the canonicalizer's prior and the
    kind's own regularizer (the DEQ's Jacobian penalty).

    ``model`` is ``Canonicalized(backbone, canonicalizer)``: the same parameters, evaluated end to end.
    """

    def __init__(self, backbone: nn.Module, canonicalizer: Canonicalizer, prior_weight: float = 0.0,
                 seed: int = 0, schedule: CanonicalizationSchedule | None = None) -> None:
        schedule = CanonicalizationSchedule(canon_weight=0.0) if schedule is None else schedule
        super().__init__(Canonicalized(backbone, canonicalizer), canonicalizer.group, schedule, prior_weight, seed)

    def canonicalize(self, x: torch.Tensor, k: torch.Tensor | None, classify: bool,
                     pair: torch.Tensor | None = None) -> _Canonicalized:
        """The canonicalizer on ``x (B, C, H, W)`` (with its canonicalization loss under ``k (B, *param_shape)``,
        or on the second views ``pair (B, C, H, W)``, when given) and the backbone's logits ``(B, K)`` on the
        canonical input when ``classify``."""
        canon = self.model.canonicalizer
        if k is None and pair is None:
            result, canon_loss, stats = canon(x), None, {}
        else:
            terms = canonicalization_loss(canon, x, k, self.schedule.loss, pair=pair)
            result, canon_loss, stats = terms.result, terms.loss.mean(), terms.stats()
        canonical = result.x if self.schedule.task_gradient else result.x.detach()
        logits = self.model.model(canonical) if classify else None
        return logits, canon_loss, stats, [(canon, result)]


class LatentObjective(_CanonicalizingObjective):
    """Cross-entropy of a [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized] model by stages, plus
    ``canon_weight`` times the sum over its insertion points of the canonicalization loss (on what each point's
    canonicalizer reads), the priors and the kinds' regularizers.

    ``model`` is the wrapper itself; one call per step gives the logits and every point's element (one forward call,
    as DDP requires). The ``"canonicalizer"`` stage runs the backbone too (the points' features come from it), but
    only the canonicalizers' loss is used.
    """

    def __init__(self, model: nn.Module, prior_weight: float = 0.0, seed: int = 0,
                 schedule: CanonicalizationSchedule | None = None) -> None:
        schedule = CanonicalizationSchedule(canon_weight=0.0) if schedule is None else schedule
        if schedule.pairs:
            # An insertion point's second view would be the backbone's features of the pair, a second pass.
            raise ConfigError("latent: canon_pairs is not supported (the insertion points canonicalize features, "
                              "and the pair's features would need a second pass); expected canon_pairs false")
        if not schedule.task_gradient:
            # Detaching a point's canonical features would cut the task's gradient to the blocks before it too.
            raise ConfigError("latent: canon_task_gradient false is not supported (detaching an insertion point's "
                              "features would stop the task loss training the blocks before it); expected true")
        # One k per image serves every insertion point: the points share the wrapper's group when it built them.
        group = next(iter(model.canonicalizers.values())).group
        super().__init__(model, group, schedule, prior_weight, seed)

    def canonicalize(self, x: torch.Tensor, k: torch.Tensor | None, classify: bool,
                     pair: torch.Tensor | None = None) -> _Canonicalized:
        """One forward call of the wrapper on ``x (B, C, H, W)``: logits ``(B, K)``, every insertion point's result,
        and (``k (B, *param_shape)`` given) the sum over points of their canonicalization losses."""
        if k is None:
            logits, results = self.model.forward_canon(x)
            canon_loss, stats = None, {}
        else:
            logits, results, terms = self.model.forward_canonicalization(x, k, self.schedule.loss)
            canon_loss = torch.stack([t.loss.mean() for t in terms.values()]).sum()
            stats = {"canon": float(canon_loss.detach())}
        canons = [(self.model.canonicalizers[str(p)], r) for p, r in results.items()]
        return logits, canon_loss, stats, canons
