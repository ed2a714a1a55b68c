"""Training methods: how a classifier is made invariant to a group, behind one interface.

A method turns a backbone classifier ``x -> logits`` into an [`Objective`][equican.objectives.Objective], an ``nn.Module``
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
* every registered canonicalizer kind ([`list_canonicalizers`][equican.canon.registry.list_canonicalizers]) is a
  method of the same name: the backbone on the inputs that kind canonicalizes. Built in: ``dec`` (the deep
  equilibrium canonicalizer, [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]), ``direct`` (one pass of the
  same update network), ``optimization`` (gradient descent on its fixed-point energy), ``escnn`` (exactly
  equivariant, [`equivariant_canonicalizer`][equican.canon.equivariant.equivariant_canonicalizer]; needs a rotation
  group: ``cyclic``, ``rotation``, ``o2`` or ``dihedral``) and ``identity``. Options: the kind's own (see
  [`equican.canon.kinds`][equican.canon.kinds]) and the canonicalization options below. A kind registered with
  [`register_canonicalizer`][equican.canon.registry.register_canonicalizer] becomes a method the same way.
* ``latent``: latent canonicalization ([`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized]): one
  canonicalizer per chosen block of the backbone (a timm model, or the package's ``cnn``/``vit``), plus
  ``prior_weight`` times the sum of every insertion point's prior. Options: ``at`` (block indices, default ``(0,)``),
  ``canonicalizer`` (any registered kind), ``canonicalizer_input`` (``latent`` or
  ``image``), ``uncanonicalize`` (one bool or one per point), ``channels`` (the update network's widths; the kind's
  default when unset), ``canonicalizer_options`` (the kind's other options), ``prior_weight``.

The learned canonicalizers (every kind not exact by construction, and ``latent``) are trained to canonicalize, not only
to classify: [`CanonicalizationOptions`][equican.methods.CanonicalizationOptions] (``canon_weight``,
``canon_target``, ``canon_guard``, ``backbone_epochs``, ``canon_epochs``, ``prior_weight``) add the self-supervised
canonicalization loss ([`canonicalization_loss`][equican.canon.objective.canonicalization_loss]) and the paper's
stages (see [`CanonicalizationSchedule`][equican.objectives.CanonicalizationSchedule]). Exact kinds (``escnn``)
default to ``canon_weight = 0``.

Every method that takes a group takes any registered group (``MethodConfig.group``; when unset, the default group
[`default_group`][equican.group.default_group]). Random elements are keyed by ``(seed, stream, epoch, sample index)``
([`keyed_elements`][equican.data.seeding.keyed_elements]), so they do not depend on the batch size, the data order, the
number of processes, or on whether the run was resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import validation as V
from .canon.objective import TARGETS, CanonicalizationLoss, ElementDistribution
from .canon.registry import canonicalizer_kind, list_canonicalizers, make_canonicalizer
from .config import MethodConfig, from_options
from .errors import ConfigError, UnknownNameError
from .group import Group, default_group, make_group
from .latent import LatentCanonicalized
from .objectives import (Augmented, CanonicalizationSchedule, CanonicalizedObjective, InvarianceRegularized,
                         LatentObjective, Objective)

__all__ = ["METHODS", "list_methods", "build_objective", "method_group", "method_options", "check_method_tables",
           "invariance_group", "CanonicalizationOptions", "InvarianceOptions", "LatentOptions", "MethodSpec"]


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
    [`CanonicalizationSchedule`][equican.objectives.CanonicalizationSchedule] and
    [`canonicalization_loss`][equican.canon.objective.canonicalization_loss]): ``canon_weight`` (joint weight of the
    canonicalization loss; None: 1, or 0 for a kind exact by construction), ``canon_target`` (``element`` or
    ``input``), ``canon_guard`` (weight of the round-trip collapse guard), ``canon_ink`` (weight of the ink term, the
    guard against shrinking), ``canon_strength`` (chart scale of the loss's elements, a number or a mixture of them:
    an [`ElementDistribution`][equican.canon.objective.ElementDistribution]), ``canon_pairs`` (take the loss's second
    view from the data's own nuisance instead of ``act(k, x)``: on Locally Scaled MNIST, the same digits at other
    scales), ``canon_task_gradient`` (whether the task loss trains the canonicalizer too; false: the classifier
    learns on canonical inputs while the canonicalization loss alone trains the canonicalizer), ``backbone_epochs``
    and ``canon_epochs`` (the leading stages), and ``prior_weight``."""

    canon_weight: float | None = None
    canon_target: str = "input"
    canon_guard: float = 1.0
    canon_ink: float = 1.0
    canon_strength: float | tuple[float, ...] = 1.0
    canon_pairs: bool = False
    canon_task_gradient: bool = True
    backbone_epochs: int = 0
    canon_epochs: int = 0
    prior_weight: float = 0.0

    def schedule(self, exact: bool = False) -> CanonicalizationSchedule:
        """The schedule these options describe (``exact``: the kind is equivariant by construction)."""
        weight = (0.0 if exact else 1.0) if self.canon_weight is None else float(self.canon_weight)
        return CanonicalizationSchedule(canon_weight=weight,
                                        loss=CanonicalizationLoss(target=self.canon_target,
                                                                  guard=float(self.canon_guard),
                                                                  ink=float(self.canon_ink)),
                                        elements=ElementDistribution(strengths=self.canon_strength),
                                        pairs=bool(self.canon_pairs), task_gradient=bool(self.canon_task_gradient),
                                        backbone_epochs=self.backbone_epochs, canon_epochs=self.canon_epochs)


@dataclass(frozen=True)
class LatentOptions(CanonicalizationOptions):
    """Insertion points and canonicalizers of ``latent`` (see
    [`LatentCanonicalized`][equican.latent.wrapper.LatentCanonicalized]), and how they are trained. ``channels`` and
    ``canonicalizer_options`` are the kinds' options (``channels`` is the update network's widths)."""

    at: int | tuple[int, ...] = (0,)
    canonicalizer: str | tuple[str, ...] = "dec"
    canonicalizer_input: str | tuple[str, ...] = "latent"
    uncanonicalize: bool | tuple[bool, ...] = True
    channels: tuple[int, ...] | None = None
    canonicalizer_options: Mapping[str, Any] | None = None


_NUMBERS = ("prior_weight", "weight", "canon_weight", "canon_guard", "canon_ink", "jacobian_weight", "residual_weight")


def _check(opts: Any, where: str) -> Any:
    """The shared range checks of training options (weights >= 0, stage counts, the loss target)."""
    for key in _NUMBERS:
        value = getattr(opts, key, 0.0)
        if value is None and key == "canon_weight":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"{where}: expected option {key} to be a finite number >= 0, got {value!r}")
    for key in ("backbone_epochs", "canon_epochs"):
        if hasattr(opts, key):
            V.require_int(getattr(opts, key), low=0, where=where, name=f"option {key}")
    if getattr(opts, "canon_target", "input") not in TARGETS:
        raise ConfigError(f"{where}: expected option canon_target in {TARGETS}, got {opts.canon_target!r}")
    return opts


# ---------------------------------------------------------------------------------------------- builders
def _plain(backbone: nn.Module, group: Group | None, options: Mapping[str, Any], in_channels: int, seed: int,
           where: str) -> Objective:
    from_options(_NoOptions, options, where=where)
    return Objective(backbone, seed)


def _augment(backbone: nn.Module, group: Group, options: Mapping[str, Any], in_channels: int, seed: int,
             where: str) -> Objective:
    from_options(_NoOptions, options, where=where)
    return Augmented(backbone, group, seed)


def _invariance(backbone: nn.Module, group: Group, options: Mapping[str, Any], in_channels: int, seed: int,
                where: str) -> Objective:
    opts = _check(from_options(InvarianceOptions, options, where=where), where)
    return InvarianceRegularized(backbone, group, seed, weight=float(opts.weight))


def _latent(backbone: nn.Module, group: Group, options: Mapping[str, Any], in_channels: int, seed: int,
            where: str) -> Objective:
    opts = _check(from_options(LatentOptions, options, where=where), where)
    kind_options = dict(opts.canonicalizer_options or {})
    if opts.channels is not None:
        kind_options["channels"] = opts.channels
    model = LatentCanonicalized(backbone, at=opts.at, canonicalizer=opts.canonicalizer, group=group,
                                canonicalizer_input=opts.canonicalizer_input, uncanonicalize=opts.uncanonicalize,
                                canonicalizer_options=kind_options, in_channels=in_channels)
    return LatentObjective(model, float(opts.prior_weight), seed, opts.schedule())


def _split(kind: str, options: Mapping[str, Any], where: str) -> tuple[CanonicalizationOptions, dict[str, Any]]:
    """A canonicalizer method's options, split into how it trains and what the kind itself takes."""
    training = {f.name for f in dataclasses.fields(CanonicalizationOptions)}
    spec = canonicalizer_kind(kind)
    unknown = [k for k in options if k not in training and k not in spec.option_names()]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; expected one of "
                          f"{[*spec.option_names(), *sorted(training)]}")
    train = from_options(CanonicalizationOptions, {k: v for k, v in options.items() if k in training}, where=where)
    return _check(train, where), {k: v for k, v in options.items() if k not in training}


def _canonicalized(kind: str) -> Callable[..., Objective]:
    """The builder of the method named after the canonicalizer kind ``kind``."""
    def build(backbone: nn.Module, group: Group, options: Mapping[str, Any], in_channels: int, seed: int,
              where: str) -> Objective:
        train, kind_options = _split(kind, options, where)
        spec = canonicalizer_kind(kind)
        _check(spec.parse(kind_options, where=where), where)
        canon = make_canonicalizer(kind, group, in_channels, kind_options)
        return CanonicalizedObjective(backbone, canon, float(train.prior_weight), seed, train.schedule(spec.exact))

    return build


@dataclass(frozen=True)
class MethodSpec:
    """A training method: whether it uses a group, its builder
    ``build(backbone, group, options, in_channels, seed, where) -> Objective`` and its option names."""

    uses_group: bool
    build: Callable[..., Objective]
    options: tuple[str, ...]


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


METHODS: dict[str, MethodSpec] = {
    "plain": MethodSpec(False, _plain, ()),
    "augment": MethodSpec(True, _augment, ()),
    "invariance": MethodSpec(True, _invariance, _names(InvarianceOptions)),
    "latent": MethodSpec(True, _latent, _names(LatentOptions)),
}
"""The methods that are not a canonicalizer kind; every registered kind is a method too
([`list_methods`][equican.methods.list_methods])."""


def list_methods() -> list[str]:
    """The method names [`build_objective`][equican.methods.build_objective] accepts: the fixed methods, then
    every registered canonicalizer kind."""
    return [*METHODS, *(k for k in list_canonicalizers() if k not in METHODS)]


def _spec(name: str) -> MethodSpec:
    if name in METHODS:
        return METHODS[name]
    if isinstance(name, str) and name in list_canonicalizers():
        kind = canonicalizer_kind(name)
        return MethodSpec(True, _canonicalized(kind.name), (*kind.option_names(),
                                                            *_names(CanonicalizationOptions)))
    raise UnknownNameError(f"unknown method {name!r}: registered methods are {', '.join(list_methods())}"
                           f"{V.did_you_mean(name, list_methods())}")


def method_options(name: str) -> tuple[str, ...]:
    """The option names the method ``name`` accepts.

    Raises:
        UnknownNameError: an unknown method.
    """
    return _spec(name).options


def method_group(config: MethodConfig) -> Group | None:
    """The group a method uses, built from ``config.group`` (or the default group) and ``group_options``.

    Returns:
        None for a method that uses no group.

    Raises:
        UnknownNameError: an unknown method or group name. ConfigError: invalid group options, or a group given to
            a method that uses none.
    """
    spec = _spec(config.name)
    if not spec.uses_group:
        if config.group is not None or config.group_options:
            # It would be ignored: a typo, or a group meant for another method, would otherwise pass silently.
            raise ConfigError(f"method {config.name!r} uses no group, but group={config.group!r} "
                              f"group_options={dict(config.group_options)!r} were given; remove them or choose a "
                              f"method that uses a group")
        return None
    return make_group(config.group or default_group(), **dict(config.group_options))


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
    group = method_group(config)
    return spec.build(backbone, group, dict(config.options), in_channels, seed, f"method {config.name!r}")


def check_method_tables(config: MethodConfig) -> None:
    """Every ``method.options.<name>`` table of ``config`` names a method: a typo there would otherwise be ignored.

    Raises:
        UnknownNameError: a table named after no method (the message suggests the closest name).
    """
    known = list_methods()
    for name in config.tables:
        if name not in known:
            raise UnknownNameError(f"method.options.{name}: expected a table named after a method "
                                   f"({', '.join(known)}), got {name!r}{V.did_you_mean(name, known)}")


def invariance_group(config: Any) -> Group | None:
    """The group of a run's invariance error (``config`` a [`TrainConfig`][equican.config.TrainConfig]):
    ``eval.invariance_group`` with its own options table, or (None there) the method's group; None for a method that
    uses no group (then no invariance error is computed)."""
    name = config.eval.invariance_group
    if name is None:
        return method_group(config.method)
    return make_group(name, **config.eval.group_options(name))
