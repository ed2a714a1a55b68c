"""Update and energy networks of the learned canonicalizers.

[`UpdateNet`][equican.canon.nets.UpdateNet] is equican's own network for the DEC of Rahman et al. (ICCV 2025): residual
blocks ``conv 3×3 → instance norm → ReLU → conv 3×3 → instance norm → + 1×1 projection → ReLU``, each followed by 2×2
max pooling (two blocks, 3→32→64 channels, the widths and pooling of the paper's MNIST models), then a 1×1 head
average-pooled onto the group's unconstrained grid, at the input's own resolution. It is *not* the reference
implementation's network, whose block is one reflect-padded convolution plus a 1×1 projection added before an affine
instance norm, softplus and max pooling, run on inputs resized to 224 and ImageNet-normalized; that network is
[`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet] (the "paper" preset). How and why the two differ is listed in
[`UpdateNet`][equican.canon.nets.UpdateNet].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as V
from ..errors import ConfigError
from ..group import Group

__all__ = ["ResidualBlock", "UpdateNet", "EnergyNet", "FixedPointEnergy", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "softplus")
"""The activations [`UpdateNet`][equican.canon.nets.UpdateNet] offers: ReLU (equican's default, the fastest on CPU) or
softplus (smooth, for second derivatives; the reference implementation's activation).
"""


def _instance_norm(y: torch.Tensor) -> torch.Tensor:
    # Instance normalization without affine parameters is group normalization with one group per channel: the same
    # per-sample, per-channel statistics over H×W. group_norm has a channels-last CPU kernel, and the network runs
    # channels-last for its convolutions (measured on 16×32×70×70, one thread: 0.09 ms per image, against 1.24 for
    # instance_norm on the same channels-last tensor and 0.36 on a contiguous one).
    return F.group_norm(y, y.shape[1])


class ResidualBlock(nn.Module):
    """``act(IN(conv(act(IN(conv(x))))) + skip(x))``, then ``pool × pool`` max pooling.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output; ``skip`` is a 1×1 convolution (with bias) when they differ from
            ``in_channels``, else the identity.
        pool: pooling factor applied after the block (1: none). Inputs smaller than ``2·pool`` on a side are not
            pooled, so that tiny images still work.
        activation: ``"relu"`` or ``"softplus"``.

    Shapes:
        ``(B, in_channels, H, W) -> (B, out_channels, H // pool, W // pool)``.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: int = 2, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"ResidualBlock: expected activation in {ACTIVATIONS}, got {activation!r}")
        # No bias on the 3×3 convolutions: the instance norm that follows subtracts it again.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.pool, self.activation = pool, activation

    def _act(self, y: torch.Tensor) -> torch.Tensor:
        # In place for ReLU (and the skip's add_ in forward): the operands are fresh intermediates that no backward
        # formula needs unmodified, and skipping the copies saves memory traffic (10-20% of the network's time,
        # measured on one thread).
        return F.relu_(y) if self.activation == "relu" else F.softplus(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H // pool, W // pool)`` (unpooled on small inputs)."""
        y = self._act(_instance_norm(self.conv1(x)))
        y = self._act(_instance_norm(self.conv2(y)).add_(self.skip(x)))
        if self.pool > 1 and min(y.shape[-2:]) >= 2 * self.pool:
            y = F.max_pool2d(y, self.pool)
        return y

    def extra_repr(self) -> str:
        return f"pool={self.pool}, activation={self.activation!r}"


class UpdateNet(nn.Module):
    """Maps an image batch to a tensor of the group's unconstrained shape: the update of the DEQ and direct kinds.

    The head's shape follows the chart, not a named group: a chart ``(C, h, w)`` (a grid of logits, like monotone
    scaling's ``(2, R+1, R)``) gets a 1×1 convolution to ``C`` channels average-pooled onto the ``h × w`` grid (the
    reference implementation pools the same way, after an instance norm); any other chart (an angle ``(1,)``,
    affine ``(6,)``, scores ``(n,)``) gets global average pooling and a linear layer. The head starts at zero, so an untrained network predicts ``z = 0``, the identity.
    Channels listed in ``transposed`` (the group's [`chart_transposed`][equican.group.Group.chart_transposed]) are
    read from features pooled onto a ``w × h`` grid and transposed, so that each logit comes from the image region
    it describes: monotone scaling's y-warp logit ``z[1, j, s]`` (coarse column ``j``, segment ``s``) from the
    features at row ``s``, column ``j``.

    Departures from the reference implementation's network
    ([`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet]), each for a reason:

    * Two 3×3 convolutions per block (zero padding, no bias, instance norm without affine parameters) and ReLU by
      default, where the reference has one reflect-padded convolution, an affine instance norm and softplus:
      equican's own design, measured for speed on CPU.
    * No resize to 224 and no ImageNet normalization: the network sees the input at its own resolution, which is
      what makes it cheap on small images (the reference spends ~10x the work on 70×70 inputs).
    * The head has no instance norm and no sigmoid. The reference's head outputs the new chart parameters
      themselves, in ``(0, 1)``: its update *replaces* them, ``φ ← H(act(h(φ), x))``. Here the network predicts an
      additive correction in logit space, which must be able to vanish (a fixed point is where it is 0) and must be
      0 for the zero-initialized head; an instance norm would force unit variance on it and has an unbounded
      gradient at a constant input.
    * The head pools before its 1×1 convolution (the two are linear and commute exactly, so the function is the
      same) and the trunk runs channels-last: both only for speed.

    Args:
        in_channels: channels of the input images.
        out_shape: the group's ``unconstrained_shape``.
        channels: output channels of the residual blocks (the widths of the paper's MNIST models: ``(32, 64)``).
        pool: max-pooling factor after each block (the paper's: 2).
        activation: ``"relu"`` (equican's default) or ``"softplus"`` (the reference's; smooth everywhere, slower on
            CPU).
        out_scale: multiplies the head's output (a fixed gain; 1 by default).
        transposed: channels of a grid chart whose logits sit transposed on the image (pass the group's
            ``chart_transposed``; the kinds' builders do).

    Shapes:
        ``(B, in_channels, H, W) -> (B, *out_shape)``.

    Raises:
        ConfigError: on an invalid argument.
    """

    def __init__(self, in_channels: int, out_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 pool: int = 2, activation: str = "relu", out_scale: float = 1.0,
                 transposed: Sequence[int] = ()) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("pool", pool)):
            V.require_int(value, low=1, where="UpdateNet", name=key)
        out_shape = tuple(out_shape)
        if not out_shape or not all(isinstance(s, int) and s >= 1 for s in out_shape):
            raise ConfigError(f"UpdateNet: expected out_shape to be a non-empty tuple of positive ints, "
                              f"got {out_shape!r}")
        channels = V.require_widths(channels, where="UpdateNet")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"UpdateNet: expected activation in {ACTIVATIONS}, got {activation!r}")
        if not (isinstance(out_scale, (int, float)) and math.isfinite(out_scale)):
            raise ConfigError(f"UpdateNet: expected out_scale to be a finite number, got {out_scale!r}")
        self.in_channels, self.out_shape, self.out_scale = in_channels, out_shape, float(out_scale)
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, pool, activation) for a, b in zip(widths[:-1], widths[1:])))
        self.grid_head = len(out_shape) == 3
        transposed = tuple(transposed)
        if transposed and (not self.grid_head or not all(isinstance(c, int) and not isinstance(c, bool)
                                                         and 0 <= c < out_shape[0] for c in transposed)):
            raise ConfigError(f"UpdateNet: expected transposed to list channels of a grid chart (C, h, w), "
                              f"got {transposed!r} for out_shape {out_shape}")
        self.transposed = tuple(sorted(set(transposed)))
        if self.grid_head:
            self.head: nn.Module = nn.Conv2d(channels[-1], out_shape[0], 1)
        else:
            self.head = nn.Linear(channels[-1], math.prod(out_shape))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def for_group(cls, group: Group, in_channels: int, *, channels: Sequence[int] = (32, 64), pool: int = 2,
                  activation: str = "relu", out_scale: float = 1.0) -> "UpdateNet":
        """The update network of ``group``'s chart: ``UpdateNet(in_channels, group.unconstrained_shape, ...,
        transposed=group.chart_transposed)``, the way every builder should make one (passing the shape alone would
        read a transposed channel's logits from the wrong image regions). Other arguments as for the constructor."""
        V.require_group(group, where="UpdateNet.for_group")
        return cls(in_channels, group.unconstrained_shape, channels=channels, pool=pool, activation=activation,
                   out_scale=out_scale, transposed=group.chart_transposed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The residual blocks' output for ``x: (B, in_channels, H, W)``: ``(B, channels[-1], H', W')``,
        channels-last in memory (``H'``, ``W'``: ``H``, ``W`` after each block's pooling)."""
        # oneDNN's convolutions run about twice as fast on channels-last inputs (measured on 16×32×70×70, one
        # thread), and every later layer keeps the format.
        return self.blocks(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, *out_shape)``, times ``out_scale``."""
        y = self.features(x)
        if self.grid_head:
            h, w = self.out_shape[1:]
            z = self.head(F.adaptive_avg_pool2d(y, (h, w)))
            if self.transposed:
                # The transposed channels' logit (i, j) describes image row-band j of column i.
                zt = self.head(F.adaptive_avg_pool2d(y, (w, h))).transpose(-1, -2)
                z = torch.stack([(zt if c in self.transposed else z)[:, c] for c in range(z.shape[1])], dim=1)
            y = z.contiguous()
        else:
            y = self.head(y.mean(dim=(-2, -1))).view(-1, *self.out_shape)
        return self.out_scale * y


class EnergyNet(nn.Module):
    """A learned scalar energy of images: the [`UpdateNet`][equican.canon.nets.UpdateNet] trunk with a linear head to
    one number.

    Unlike [`UpdateNet`][equican.canon.nets.UpdateNet] its head starts at PyTorch's default (random) initialization,
    because a constant energy has no gradient to descend.

    Args:
        in_channels: as for [`UpdateNet`][equican.canon.nets.UpdateNet].
        channels: as for [`UpdateNet`][equican.canon.nets.UpdateNet].
        pool: as for [`UpdateNet`][equican.canon.nets.UpdateNet].
        activation: as for [`UpdateNet`][equican.canon.nets.UpdateNet].

    Shapes:
        ``(B, in_channels, H, W) -> (B,)``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 64), pool: int = 2,
                 activation: str = "relu") -> None:
        super().__init__()
        self.net = UpdateNet(in_channels, (1,), channels=channels, pool=pool, activation=activation)
        self.net.head.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One energy per image: ``(B, in_channels, H, W) -> (B,)``."""
        return self.net(x)[:, 0]


class FixedPointEnergy(nn.Module):
    """``E(y) = ½‖P(Δ(y))‖²`` for an update network ``Δ``: zero exactly at the DEQ's fixed points.

    ``P = to_unconstrained ∘ from_unconstrained`` keeps the part of the correction that changes the element. A DEQ fixed
    point ``z = P(z) + Δ`` only needs that part to vanish; the rest (for monotone scaling, a constant added to a row of
    logits, which the softmax ignores) settles at whatever ``Δ`` says, and is usually not 0. Without ``P`` the energy
    would pull toward a different point than the DEQ's, so this is what makes
    [`OptimizationCanonicalizer`][equican.canon.optimize.OptimizationCanonicalizer] on it a like-for-like comparison
    with [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer] on the same network: the same solutions, found by
    gradient descent instead of a fixed-point solve.

    Args:
        net: the update network, ``(B, C, H, W) -> (B, *group.unconstrained_shape)``.
        group: the group whose chart the corrections are in.

    Shapes:
        ``(B, C, H, W) -> (B,)``.
    """

    def __init__(self, net: nn.Module, group: Group) -> None:
        super().__init__()
        V.require_group(group, where="FixedPointEnergy")
        self.net, self.group = net, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x) = ½‖P(Δ(x))‖²`` per image: ``(B, C, H, W) -> (B,)``."""
        dz = self.group.to_unconstrained(self.group.from_unconstrained(self.net(x)))
        return 0.5 * dz.flatten(1).pow(2).sum(dim=1)
