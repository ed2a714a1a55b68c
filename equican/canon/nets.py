"""Update and energy networks of the learned canonicalizers.

:class:`UpdateNet` follows the paper's DEC network (Rahman et al., ICCV 2025): residual blocks of two 3×3
convolutions with instance normalization, a softplus activation and pooling, then a 1×1 head pooled onto the group's
unconstrained grid. Unlike the paper's code it runs at the input's own resolution: no resize to 224 and no ImageNet
normalization inside (normalize the data once, outside, if the task needs it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["ResidualBlock", "UpdateNet", "EnergyNet", "FixedPointEnergy"]


class ResidualBlock(nn.Module):
    """``softplus(IN(conv(softplus(IN(conv(x))))) + skip(x))``, then average pooling by ``pool``.

    Args:
        in_channels, out_channels: channel counts; ``skip`` is a 1×1 convolution when they differ.
        pool: pooling factor applied after the block (1: none).

    Shapes:
        ``(B, in_channels, H, W) -> (B, out_channels, H // pool, W // pool)``.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: int = 2) -> None:
        super().__init__()
        # No conv bias: the instance norm that follows removes it.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.softplus(self.norm1(self.conv1(x)))
        y = F.softplus(self.norm2(self.conv2(y)) + self.skip(x))
        if self.pool > 1 and min(y.shape[-2:]) >= 2 * self.pool:
            y = F.avg_pool2d(y, self.pool)
        return y


class UpdateNet(nn.Module):
    """Maps an image batch to a tensor of the group's unconstrained shape: the update of the DEQ and direct kinds.

    The head's shape follows the chart, not a named group: a chart ``(C, h, w)`` (a grid of logits, like monotone
    scaling's ``(2, R+1, R)``) gets a 1×1 convolution to ``C`` channels, average-pooled onto the ``h × w`` grid, as
    in the paper; any other chart (an angle ``(1,)``, affine ``(6,)``, scores ``(n,)``) gets global average pooling
    and a linear layer. The head starts at zero, so an untrained network predicts ``z = 0``, the identity.

    Args:
        in_channels: channels of the input images.
        out_shape: the group's ``unconstrained_shape``.
        channels: output channels of the residual blocks (the paper's MNIST configuration: ``(32, 64)``).
        pool: pooling factor after each block.
        out_scale: multiplies the head's output (a fixed gain; 1 by default).

    Shapes:
        ``(B, in_channels, H, W) -> (B, *out_shape)``.
    """

    def __init__(self, in_channels: int, out_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 pool: int = 2, out_scale: float = 1.0) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("pool", pool)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"UpdateNet: expected {key} to be a positive int, got {value!r}")
        out_shape = tuple(out_shape)
        if not out_shape or not all(isinstance(s, int) and s >= 1 for s in out_shape):
            raise ConfigError(f"UpdateNet: expected out_shape to be a non-empty tuple of positive ints, "
                              f"got {out_shape!r}")
        channels = tuple(channels)
        if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ConfigError(f"UpdateNet: expected channels to be a non-empty sequence of positive ints, "
                              f"got {channels!r}")
        if not (isinstance(out_scale, (int, float)) and math.isfinite(out_scale)):
            raise ConfigError(f"UpdateNet: expected out_scale to be a finite number, got {out_scale!r}")
        self.in_channels, self.out_shape, self.out_scale = in_channels, out_shape, float(out_scale)
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, pool) for a, b in zip(widths[:-1], widths[1:])))
        self.grid_head = len(out_shape) == 3
        if self.grid_head:
            self.head: nn.Module = nn.Conv2d(channels[-1], out_shape[0], 1)
        else:
            self.head = nn.Linear(channels[-1], math.prod(out_shape))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The residual blocks' output, ``(B, channels[-1], H', W')``."""
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        if self.grid_head:
            y = F.adaptive_avg_pool2d(self.head(y), self.out_shape[1:])
        else:
            y = self.head(y.mean(dim=(-2, -1))).view(-1, *self.out_shape)
        return self.out_scale * y


class EnergyNet(nn.Module):
    """A learned scalar energy of images: the :class:`UpdateNet` trunk with a linear head to one number.

    Unlike :class:`UpdateNet` its head starts at PyTorch's default (random) initialization, because a constant
    energy has no gradient to descend.

    Args:
        in_channels, channels, pool: as for :class:`UpdateNet`.

    Shapes:
        ``(B, in_channels, H, W) -> (B,)``.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (32, 64), pool: int = 2) -> None:
        super().__init__()
        self.net = UpdateNet(in_channels, (1,), channels=channels, pool=pool)
        self.net.head.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


class FixedPointEnergy(nn.Module):
    """``E(y) = ½‖Δ(y)‖²`` for an update network ``Δ``: zero exactly at the images the DEQ's fixed points accept.

    Minimizing it with :class:`~equican.canon.optimize.OptimizationCanonicalizer` looks for the same canonical
    inputs as :class:`~equican.canon.deq.DEQCanonicalizer` with the same network, by gradient descent instead of a
    fixed-point solve: the like-for-like comparison of the two.

    Args:
        net: the update network, ``(B, C, H, W) -> (B, *shape)``.

    Shapes:
        ``(B, C, H, W) -> (B,)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.net(x).flatten(1).pow(2).sum(dim=1)
