"""The built-in canonicalizer kinds, registered in [`equican.canon.registry`][equican.canon.registry] on its first
lookup. Each is also a training method of the same name (``equican train --method dec``).

| kind | builds | options |
| --- | --- | --- |
| ``identity`` | [`IdentityCanonicalizer`][equican.canon.base.IdentityCanonicalizer] | none |
| ``direct`` | [`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer] | [`UpdateOptions`][equican.canon.kinds.UpdateOptions] |
| ``dec`` (alias ``deq``) | [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer] | [`DECOptions`][equican.canon.kinds.DECOptions] |
| ``optimization`` | [`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer] | [`OptimizationOptions`][equican.canon.kinds.OptimizationOptions] |
| ``escnn`` | [`equivariant_canonicalizer`][equican.canon.equivariant.equivariant_canonicalizer] (needs escnn) | [`EscnnOptions`][equican.canon.kinds.EscnnOptions] |

The heavy parts (torchdeq, escnn) are imported inside the builders, when a kind is built. Every builder first checks
the sizes it would allocate against the bounds of [`equican.validation`][equican.validation] (``in_channels`` at most
``MAX_CHANNELS``, each of ``channels`` at most ``MAX_WIDTH`` and at most ``MAX_DEPTH`` of them, ...), so that a config
from disk asking for terabytes is a ConfigError, not the allocator's error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import validation as V
from ..errors import ConfigError
from ..group import Group
from .base import Canonicalizer, IdentityCanonicalizer
from .registry import register_canonicalizer

__all__ = ["UpdateOptions", "DECOptions", "OptimizationOptions", "EscnnOptions", "REDUCE_CHANNELS", "MAX_KERNEL_SIZE"]

REDUCE_CHANNELS = 32
"""Inputs wider than this are reduced to this many channels by a 1×1 convolution before the solve (the ``reduce``
option's ``"auto"``; see [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]). Each solver iteration
then warps 32 channels instead of, say, a ViT-S's 384: measured on vit_small_patch16_224 with the DEC at blocks 0 and
1, it is what brings the overhead near 1.25 (see benchmarks/latent_overhead.py)."""


@dataclass(frozen=True)
class UpdateOptions:
    """The update network ([`UpdateNet`][equican.canon.nets.UpdateNet]) of the ``direct``, ``dec`` and
    ``optimization`` kinds.

    Attributes:
        channels: output channels of its residual blocks.
        pool: max-pooling factor after every block.
        activation: its nonlinearity.
        out_scale: scale of its head's output.
        reduce: channels a bias-free 1×1 convolution reduces the input to once, before the solve: ``"auto"``
            ([`REDUCE_CHANNELS`][equican.canon.kinds.REDUCE_CHANNELS] for wider inputs, else none), an int, or
            None (off).
        resolution: the working resolution of the update map: inputs whose shorter side is larger are canonicalized on
            an antialiased copy of this size, and the element found there acts on the full input. Default None: the
            input's own. Measured (docs/results/hot_path.md): scale DECs lose 7% of their canonical-form invariance at
            64 px on 96 px inputs, but 40%, 97% and 217% at 128, 96 and 64 px on 192 px inputs, for 4-18× faster
            evaluation; [`RECOMMENDED_RESOLUTION`][equican.canon.direct.RECOMMENDED_RESOLUTION] (64) is the setting
            for speed.
    """

    channels: tuple[int, ...] = (32, 64)
    pool: int = 2
    activation: str = "relu"
    out_scale: float = 1.0
    reduce: int | str | None = "auto"
    resolution: int | None = None


def _require_sizes(group: Group, in_channels: int, channels: object, where: str) -> tuple[int, ...]:
    """Refuse, before anything is allocated, sizes beyond the documented bounds of
    [`equican.validation`][equican.validation]: ``in_channels`` above ``MAX_CHANNELS``, ``channels`` wider than
    ``MAX_WIDTH`` or longer than ``MAX_DEPTH``, a group whose elements have more than ``MAX_ELEMENT_SIZE``
    unconstrained parameters. Every path builds through here (Python, the command line, ``from_pretrained``), so a
    config from disk is held to the same bounds as one typed in. Returns ``channels`` as a tuple."""
    V.require_int(in_channels, low=1, high=V.MAX_CHANNELS, where=where, name="in_channels")
    widths = V.require_widths(channels, where=where, name="channels", high=V.MAX_WIDTH, max_length=V.MAX_DEPTH)
    size = math.prod(group.unconstrained_shape)
    if size > V.MAX_ELEMENT_SIZE:
        raise ConfigError(f"{where}: expected a group with at most {V.MAX_ELEMENT_SIZE} unconstrained parameters per "
                          f"element, got {size} ({type(group).__name__}, unconstrained_shape "
                          f"{V.fmt_shape(group.unconstrained_shape)})")
    return widths


def _update_parts(group: Group, in_channels: int, opts: UpdateOptions,
                  where: str) -> tuple[nn.Module, nn.Module | None]:
    """The update network and the optional input reduction of ``opts`` (sizes checked first: ``_require_sizes``)."""
    from .nets import UpdateNet

    _require_sizes(group, in_channels, opts.channels, where)
    width = opts.reduce
    if width == "auto":
        width = REDUCE_CHANNELS if in_channels > REDUCE_CHANNELS else None
    reduce = None
    if width is not None:
        V.require_int(width, low=1, high=V.MAX_WIDTH, where=where, name="reduce")
        reduce = nn.Conv2d(in_channels, width, 1, bias=False)  # linear and pointwise: commutes with any warp
    net = UpdateNet.for_group(group, width or in_channels, channels=opts.channels, pool=opts.pool,
                              activation=opts.activation, out_scale=opts.out_scale)
    return net, reduce


@register_canonicalizer("identity", needs_channels=False)
def _identity(group: Group, in_channels: int | None, opts: Any) -> Canonicalizer:
    return IdentityCanonicalizer(group)


@register_canonicalizer("direct", options=UpdateOptions)
def _direct(group: Group, in_channels: int, opts: UpdateOptions) -> Canonicalizer:
    from .direct import DirectCanonicalizer

    net, reduce = _update_parts(group, in_channels, opts, "canonicalizer 'direct'")
    return DirectCanonicalizer(group, net, reduce, resolution=opts.resolution)


@dataclass(frozen=True)
class DECOptions(UpdateOptions):
    """Solver settings of ``dec``: Anderson by default, 5 iterations in training and 10 in evaluation (the paper's
    evaluation runs the same 5 as its training), phantom gradient; ``stop_mode`` and ``tol`` judge convergence,
    ``damping`` is Anderson's mixing, ``jacobian_weight`` torchdeq's Jacobian regularization and ``residual_weight``
    the fixed-point residual penalty, ``bound`` the soft bound on the iterate (see
    [`DEQConfig`][equican.canon.deq.DEQConfig]); ``config``, a whole
    ``DEQConfig``, replaces all of these. ``preset="paper"`` builds the reference implementation's DEC instead
    ([`preset_canonicalizer`][equican.canon.paper.preset_canonicalizer]), from ``channels``, ``pool`` and
    ``train_iter`` (its iterations in both modes). ``train_iter`` and ``eval_iter`` are iteration caps, at most
    [`MAX_ITER`][equican.canon.deq.MAX_ITER] (10 000): a solve stops early once every input has converged."""

    solver: str = "anderson"
    train_iter: int = 5
    eval_iter: int = 10
    tol: float = 1e-3
    stop_mode: str = "abs"
    damping: float = 1.0
    gradient: str = "phantom"
    jacobian_weight: float = 0.0
    residual_weight: float = 0.0
    bound: float | None = None
    preset: str = "equican"
    config: Any = None


@register_canonicalizer("dec", options=DECOptions, aliases=("deq",))
def _dec(group: Group, in_channels: int, opts: DECOptions) -> Canonicalizer:
    from .deq import MAX_ITER, DEQCanonicalizer, DEQConfig, SolverSettings

    for name in ("train_iter", "eval_iter"):  # by the option's own name, before SolverSettings calls it max_iter
        V.require_int(getattr(opts, name), low=1, high=MAX_ITER, where="canonicalizer 'dec'", name=name)
    if opts.preset != "equican":
        from .paper import preset_canonicalizer

        if opts.bound is not None:
            raise ConfigError(f"canonicalizer 'dec': expected no bound with preset {opts.preset!r} (the reference "
                              f"implementation's map is unbounded), got bound={opts.bound!r}")
        _require_sizes(group, in_channels, opts.channels, "canonicalizer 'dec'")
        return preset_canonicalizer(opts.preset, group, in_channels, channels=opts.channels, pool=opts.pool,
                                    iterations=opts.train_iter)
    config = opts.config
    if config is None:
        def settings(iters: int) -> SolverSettings:
            return SolverSettings(solver=opts.solver, max_iter=iters, tol=opts.tol, stop_mode=opts.stop_mode,
                                  damping=opts.damping)

        config = DEQConfig(train=settings(opts.train_iter), eval=settings(opts.eval_iter), gradient=opts.gradient,
                           jacobian_weight=float(opts.jacobian_weight), residual_weight=float(opts.residual_weight),
                           bound=opts.bound)
    net, reduce = _update_parts(group, in_channels, opts, "canonicalizer 'dec'")
    return DEQCanonicalizer(group, net, config, reduce, resolution=opts.resolution)


@dataclass(frozen=True)
class OptimizationOptions(UpdateOptions):
    """Gradient steps of ``optimization`` (see [`OptimizationConfig`][equican.canon.optimize.OptimizationConfig]).
    The energy is evaluated on the canonical input itself: ``resolution`` and an explicit ``reduce`` are refused."""

    resolution: int | None = None
    steps: int = 5
    eval_steps: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"
    unroll: int = 1


@register_canonicalizer("optimization", options=OptimizationOptions)
def _optimization(group: Group, in_channels: int, opts: OptimizationOptions) -> Canonicalizer:
    from .nets import FixedPointEnergy
    from .optimize import OptimizationCanonicalizer, OptimizationConfig

    where = "canonicalizer 'optimization'"
    for name, value in (("resolution", opts.resolution), ("reduce", None if opts.reduce == "auto" else opts.reduce)):
        if value is not None:
            # A working resolution or reduction would be silently ignored by the energy.
            raise ConfigError(f"{where}: expected option {name} to be unset (only dec and direct solve on a "
                              f"downsampled or reduced copy), got {value!r}")
    net, _ = _update_parts(group, in_channels, dataclasses.replace(opts, reduce=None), where)
    # UpdateNet's head starts at 0 (the identity for the DEC); the energy is quadratic in it, so a zero head would
    # get zero gradient forever. A small random start lets the energy's parameters train.
    nn.init.normal_(net.head.weight, std=1e-2)
    config = OptimizationConfig(steps=opts.steps, eval_steps=opts.eval_steps, lr=opts.lr, optimizer=opts.optimizer,
                                unroll=opts.unroll)
    return OptimizationCanonicalizer(group, FixedPointEnergy(net, group), config)


MAX_KERNEL_SIZE = 63
"""The largest ``kernel_size`` of the escnn kind (its default is 5)."""


@dataclass(frozen=True)
class EscnnOptions:
    """The escnn canonicalizer's regular fields per layer, kernel size and (continuous groups) the trunk's number of
    rotations (None: see [`equivariant_canonicalizer`][equican.canon.equivariant.equivariant_canonicalizer])."""

    channels: tuple[int, ...] = (8, 8)
    kernel_size: int = 5
    rotations: int | None = None


@register_canonicalizer("escnn", options=EscnnOptions, exact=True)
def _escnn(group: Group, in_channels: int, opts: EscnnOptions) -> Canonicalizer:
    try:
        from .equivariant import equivariant_canonicalizer  # escnn is optional: import it only when asked
    except ImportError as exc:
        raise ConfigError(f"canonicalizer 'escnn': needs the optional escnn package (pip install "
                          f"'equican[escnn]'); importing it failed: {exc}") from None
    widths = _require_sizes(group, in_channels, opts.channels, "canonicalizer 'escnn'")
    V.require_int(opts.kernel_size, low=1, high=MAX_KERNEL_SIZE, where="canonicalizer 'escnn'", name="kernel_size")
    if opts.rotations is not None:
        V.require_int(opts.rotations, low=1, high=V.MAX_ORDER, where="canonicalizer 'escnn'", name="rotations")
    # A regular field of C_N (D_N) is N (2N) channels wide. An upper estimate of the trunk's order: the rotations
    # given, else at most lcm(8, the group's unconstrained size) (equivariant_canonicalizer's default), doubled
    # for elements with a reflection (param_shape (2,)).
    rotations = opts.rotations or (math.lcm(8, math.prod(group.unconstrained_shape)) if group.discrete else 8)
    order = rotations * (2 if tuple(group.param_shape) == (2,) else 1)
    if max(widths) * order > V.MAX_WIDTH:
        raise ConfigError(f"canonicalizer 'escnn': expected channels times the trunk's group order (up to {order} "
                          f"for {type(group).__name__}) to be at most {V.MAX_WIDTH} channels, got {max(widths)} "
                          f"fields ({max(widths) * order} channels)")
    return equivariant_canonicalizer(group, in_channels, channels=opts.channels, kernel_size=opts.kernel_size,
                                     rotations=opts.rotations)
