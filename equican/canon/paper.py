"""The "paper" preset: the DEC of the reference implementation of Rahman et al. (ICCV 2025), as published.

The reference is github.com/ashiq24/local-scale-equivariance at commit 1c07b54 (``models/surrogate_model.py``:
``DEMResidualBlock`` and ``DEMAdapter``; ``utils/sampling_utils.py``: ``deform``). This module re-states its
canonicalizer in equican's terms, written from a reading of that code (none of it is copied; the reference has no
license):

* **Network** ([`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet]): blocks of *one* ``k × k`` convolution with
  reflect padding, plus a 1×1 projection of the block's input added *before* the norm, then
  ``InstanceNorm2d(affine=True)``, softplus and max pooling; a head of a 1×1 convolution to 2 channels,
  ``InstanceNorm2d(2, affine=True)``, adaptive average pooling to ``(R+1) × (R+1)`` and a sigmoid.
* **Update** ([`PaperDEQCanonicalizer`][equican.canon.paper.PaperDEQCanonicalizer]): the replacement
  ``φ ← H(act(h(φ), x))``: the new chart parameters are the network's output on the input warped by the current
  ones, with no term in ``φ`` itself.
* **Input**: resized to 224 × 224 and, for RGB inputs, ImageNet-normalized inside the canonicalizer (the update's
  input only; the canonical input is the warp of the original ``x``).
* **Solver** ([`paper_deq_config`][equican.canon.paper.paper_deq_config]): 5 Anderson iterations (tolerance 1e-6),
  a 1-step phantom gradient, started from the identity ``φ = 1`` (the reference's ``torch.ones``). The reference
  keeps its torchdeq modules in a plain list, which ``.eval()`` does not reach, so its evaluation runs the training
  path: the same 5 iterations, then one more application of the update. The preset does the same in both modes.
* **Chart**: ``φ`` of shape ``(B, 2, R+1, R)``, row ``i`` of ``φ[:, 0]`` the logits of the ``R`` x-segments on coarse
  row ``i`` and ``φ[:, 1]`` those of the y-segments per coarse column, with knots ``cumsum(softmax(3 φ))``. That is
  monotone scaling's [`from_unconstrained`][equican_groups.monotone.MonotoneScaling.from_unconstrained] with
  ``temperature=3`` and ``min_width=0``, so ``φ`` *is* the chart parameter ``z`` and no conversion is needed. The
  reference's ``adapter_coarse_resolution: 4`` counts knots: its MNIST models have ``R = 3`` segments, i.e.
  ``make_group("monotone", cells=3, min_width=0.0)``. One step of the reference is left out: it blurs ``φ`` with a
  5×5 Gaussian of σ = 0.2 before the softmax, whose neighbour weight is ``exp(-12.5) ≈ 4e-6`` (its warps differ
  from the unblurred ones by at most 2e-5).

Nothing here names a concrete group: the network needs a chart of shape ``(2, R+1, R)``, and any group with one
works. How the preset differs from equican's own DEC, and why equican's defaults differ, is on the docs page
"The paper preset"; its parity with the reference is measured on the results page of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as V
from ..errors import ConfigError, ShapeError
from ..group import Group
from .deq import DEQCanonicalizer, DEQConfig, SolverSettings

__all__ = ["PRESETS", "PaperResidualBlock", "PaperUpdateNet", "PaperDEQCanonicalizer", "paper_deq_config",
           "preset_canonicalizer"]

PRESETS = ("equican", "paper")
"""The DEC presets the ``dec`` method offers (option ``preset``): equican's own DEC, or the reference's."""

# ImageNet channel statistics, as torchvision's Normalize uses them in the reference.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class PaperResidualBlock(nn.Module):
    """``pool(softplus(IN(conv(x) + proj(x))))``: the reference's residual block.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output; ``proj`` is a 1×1 convolution (with bias) when they differ from
            ``in_channels``, else the identity.
        kernel_size: side of the convolution (odd), reflect-padded so the size is kept.
        pool: max-pooling factor (1: none).

    Shapes:
        ``(B, in_channels, H, W) -> (B, out_channels, H // pool, W // pool)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, pool: int = 2) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("kernel_size", kernel_size), ("pool", pool)):
            V.require_int(value, low=1, where="PaperResidualBlock", name=key)
        if kernel_size % 2 == 0:
            raise ConfigError(f"PaperResidualBlock: expected an odd kernel_size, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                              padding_mode="reflect")
        self.proj = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H // pool, W // pool)``."""
        y = F.softplus(self.norm(self.conv(x) + self.proj(x)))
        return F.max_pool2d(y, self.pool) if self.pool > 1 else y


class PaperUpdateNet(nn.Module):
    """The reference's update network: residual blocks, then a head onto the ``(2, R+1, R)`` chart in ``(0, 1)``.

    The head is a 1×1 convolution to 2 channels, ``InstanceNorm2d(2, affine=True)``, adaptive average pooling to an
    ``(R+1) × (R+1)`` grid and a sigmoid. Channel 0 of that grid, without its last column, is ``φ[:, 0]`` (the
    x-segments of each of the ``R+1`` coarse rows); channel 1, without its first row and transposed, is ``φ[:, 1]``
    (the y-segments of each coarse column). That indexing is the reference's.

    Unlike [`UpdateNet`][equican.canon.nets.UpdateNet] its output is never 0: a constant output (any constant) is the
    identity in the chart, and the head's norm makes a constant output rare, so an untrained network does warp.

    Args:
        in_channels: channels of the input images.
        out_shape: the group's ``unconstrained_shape``; must be ``(2, R+1, R)``.
        channels: output channels of the residual blocks (the reference's MNIST models: ``(32, 64)``).
        kernel_size: convolution size of every block (the reference's: 3).
        pool: max-pooling factor after every block (the reference's: 2).

    Shapes:
        ``(B, in_channels, H, W) -> (B, 2, R+1, R)``, values in ``(0, 1)``.

    Raises:
        ConfigError: on an invalid argument, or a chart not of shape ``(2, R+1, R)``.
    """

    def __init__(self, in_channels: int, out_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 kernel_size: int = 3, pool: int = 2) -> None:
        super().__init__()
        out_shape = tuple(out_shape)
        if not (len(out_shape) == 3 and out_shape[0] == 2 and all(isinstance(s, int) for s in out_shape)
                and out_shape[2] >= 1 and out_shape[1] == out_shape[2] + 1):
            raise ConfigError(f"PaperUpdateNet: expected out_shape (2, R+1, R) (a monotone-scaling chart), "
                              f"got {out_shape!r}")
        channels = V.require_widths(channels, where="PaperUpdateNet")
        V.require_int(in_channels, low=1, where="PaperUpdateNet", name="in_channels")
        self.in_channels, self.out_shape = in_channels, out_shape
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*(PaperResidualBlock(a, b, kernel_size, pool)
                                      for a, b in zip(widths[:-1], widths[1:])))
        self.head = nn.Conv2d(channels[-1], 2, 1)
        self.head_norm = nn.InstanceNorm2d(2, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, 2, R+1, R)``, in ``(0, 1)``."""
        knots = self.out_shape[1]
        s = torch.sigmoid(F.adaptive_avg_pool2d(self.head_norm(self.head(self.blocks(x))), knots))
        return torch.stack([s[:, 0, :, :-1], s[:, 1, 1:, :].transpose(-1, -2)], dim=1)


def paper_deq_config(iterations: int = 5, tol: float = 1e-6) -> DEQConfig:
    """The reference's solver: ``iterations`` Anderson evaluations in both modes, a 1-step phantom gradient.

    Args:
        iterations: evaluations of the update per solve (the reference's ``inner_epochs``: 5); at least 3.
        tol: the early-stopping tolerance (the reference's ``f_tol``: 1e-6, which 5 iterations rarely reach, so a
            [`ConvergenceWarning`][equican.errors.ConvergenceWarning] is the rule, not a fault).

    Returns:
        A [`DEQConfig`][equican.canon.deq.DEQConfig] with the same settings for training and evaluation.
    """
    settings = SolverSettings(solver="anderson", max_iter=iterations, tol=tol)
    return DEQConfig(train=settings, eval=settings, gradient="phantom", phantom_steps=1, phantom_tau=1.0)


class PaperDEQCanonicalizer(DEQCanonicalizer):
    """The reference's DEC: the fixed point of the replacement update ``φ ← H_θ(act(h(φ), x'))``.

    ``h(φ) = group.from_unconstrained(φ)`` and ``x' = normalize(resize(x))`` is computed once per solve. The solve
    starts from ``φ = 1`` (the identity: every constant row of logits is). In both modes the returned ``φ`` is one
    application of the update to the solver's best iterate, as in the reference (in training mode that application
    is the phantom gradient's step; in evaluation mode it runs without gradient).

    This form cannot express an equivariant canonicalizer: its fixed point depends on the input only through the
    canonical input (see [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer]); that is one reason
    equican's own DEC uses the residual form ``z ← P(z) + Δ_θ(act(h(z), x))``.

    ``info`` keys are those of [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer]; they describe the solver's
    best iterate, before the final application.

    Args:
        group: the group; its chart must be ``(2, R+1, R)`` for [`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet].
            The reference's chart is ``make_group("monotone", cells=R, min_width=0.0)`` (temperature 3, the
            default); ``R = 3`` for its MNIST models.
        net: the update network ``H_θ`` (e.g. [`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet]), mapping
            ``(B, C, size, size)`` images to ``(B, *group.unconstrained_shape)``.
        config: solver settings (default [`paper_deq_config`][equican.canon.paper.paper_deq_config]).
        resize: side the update's input is resized to (bilinear, antialiased, as torchvision's ``Resize``); the
            reference's is 224. None: no resize.
        normalize: subtract ImageNet's channel means and divide by its standard deviations (the reference's
            ``dem_image_scale``); needs 3-channel inputs in ``[0, 1]``.
        final_update: apply the update once more to the returned iterate in evaluation mode too (the reference's
            behaviour). False gives equican's evaluation mode: the solver's best iterate.

    Raises:
        ConfigError: on an invalid argument.
    """

    def __init__(self, group: Group, net: nn.Module, config: DEQConfig | None = None, *, resize: int | None = 224,
                 normalize: bool = False, final_update: bool = True) -> None:
        super().__init__(group, net, paper_deq_config() if config is None else config)
        if resize is not None:
            V.require_int(resize, low=2, where="PaperDEQCanonicalizer", name="resize")
        for key, value in (("normalize", normalize), ("final_update", final_update)):
            if not isinstance(value, bool):
                raise ConfigError(f"PaperDEQCanonicalizer: expected {key} to be a bool, got {value!r}")
        self.size, self.normalize, self.final_update = resize, normalize, final_update
        # Buffers, so that .to(device, dtype) moves them with the network.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def update_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the update warps: ``x: (B, C, H, W)`` resized to ``(B, C, size, size)`` and normalized as configured.

        Raises:
            ShapeError: ``normalize`` is set and ``x`` does not have 3 channels.
        """
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            # torchvision's Resize on tensors: bilinear, half-pixel centres, antialiased when shrinking.
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if self.normalize:
            if x.shape[1] != 3:
                raise ShapeError(f"PaperDEQCanonicalizer.update_input: expected x of shape (B, 3, H, W) for ImageNet "
                                 f"normalization, got {tuple(x.shape)}")
            x = (x - self.mean) / self.std
        return x

    def correction(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The replacement update in the base class's two parts: ``(0, H_θ(act(h(z), x)))``, each
        ``(B, *unconstrained_shape)``, so that ``step`` gives ``H_θ(act(h(z), x))`` (``z`` enters only through the
        warp) and the DEQ's true residual ``f(z) − z = (0 − z) + H`` is measured like equican's own.

        ``x: (B, C, size, size)`` is the output of
        [`update_input`][equican.canon.paper.PaperDEQCanonicalizer.update_input].
        """
        _, h, _ = self.elements(z)
        return torch.zeros_like(z), self.net(self.group.unchecked.act(h, x))

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """The start of the solve, the reference's identity initialization: ones of shape
        ``(B, *unconstrained_shape)`` (every constant row of logits is the identity; the name is the base class's)."""
        return x.new_ones((x.shape[0], *self.group.unconstrained_shape))

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The DEQ solve of [`DEQCanonicalizer`][equican.canon.deq.DEQCanonicalizer] for ``x: (B, C, H, W)``, plus
        the final update in evaluation mode when ``final_update`` is set.

        Returns:
            ``(z, info)``: chart parameters ``(B, *unconstrained_shape)`` and the solver statistics.
        """
        z, info = super().solve(x)
        if self.final_update and not self.training:
            with torch.no_grad():
                z = self.step(z, self.update_input(x))
        return z, info

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, resize={self.size}, normalize={self.normalize}, "
                f"final_update={self.final_update}")


def preset_canonicalizer(preset: str, group: Group, in_channels: int, *, channels: Sequence[int] = (32, 64),
                         pool: int = 2, iterations: int = 5) -> PaperDEQCanonicalizer:
    """The canonicalizer of a non-default DEC preset, as the ``dec`` method builds it for ``preset != "equican"``.

    For ``"paper"``: [`PaperUpdateNet`][equican.canon.paper.PaperUpdateNet] (3×3 kernels) in a
    [`PaperDEQCanonicalizer`][equican.canon.paper.PaperDEQCanonicalizer] that resizes to 224 and ImageNet-normalizes
    3-channel inputs (other channel counts are not normalized: the first convolution can absorb any per-channel
    affine map of a single channel).

    Args:
        preset: a name in [`PRESETS`][equican.canon.paper.PRESETS] other than ``"equican"``.
        group: the group, with a chart ``(2, R+1, R)``.
        in_channels: channels of the inputs.
        channels: output channels of the residual blocks.
        pool: max-pooling factor after every block.
        iterations: Anderson evaluations per solve, in training and evaluation alike.

    Raises:
        ConfigError: an unknown preset, or an argument the preset's parts reject.
    """
    if preset not in PRESETS or preset == "equican":
        raise ConfigError(f"preset_canonicalizer: expected preset in {PRESETS[1:]}, got {preset!r}")
    net = PaperUpdateNet(in_channels, group.unconstrained_shape, channels=channels, pool=pool)
    return PaperDEQCanonicalizer(group, net, paper_deq_config(iterations), normalize=in_channels == 3)
