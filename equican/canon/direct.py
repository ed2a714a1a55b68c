"""The update map shared by the direct and DEQ canonicalizers, and the direct (single-pass) canonicalizer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as V
from ..errors import ConfigError
from ..group import Group
from .base import Canonicalizer

__all__ = ["UpdateCanonicalizer", "DirectCanonicalizer", "RECOMMENDED_RESOLUTION"]

RECOMMENDED_RESOLUTION = 64
"""A working resolution (pixels, shorter side) for speed, opt-in (``resolution=RECOMMENDED_RESOLUTION``): inputs larger
than this are canonicalized on an antialiased copy of this size. From ``benchmarks/hot_path.py``'s trade-off
(docs/results/hot_path.md): scale DECs trained at 64 px keep their canonical-form error within 7% of full resolution
on 96×96 inputs, but lose 217% on 192×192 ones (40% at 128 px), so no working resolution is the default."""


class UpdateCanonicalizer(Canonicalizer):
    """A canonicalizer built on an update network ``Δ_θ``: base of
    [`DirectCanonicalizer`][equican.canon.direct.DirectCanonicalizer] and the DEQ kind.

    The update map on chart parameters is

    ```text
    f_θ(z; x) = P(z) + Δ_θ(act(h(z), x)),   h(z) = from_unconstrained(z),   P = to_unconstrained ∘ h.
    ```

    Why this form: the network looks at the input as the current estimate canonicalizes it and predicts the
    remaining correction, so a fixed point ``z*`` is a ``z`` whose canonical input the network accepts
    (``Δ_θ = 0``). That condition is unchanged when ``x`` is replaced by ``act(k, x)`` and ``h`` by ``h k⁻¹``,
    so the form can express equivariant predictions; the paper's replacement form ``z ← Δ_θ(act(h(z), x))``
    cannot (its fixed point is a function of the canonical input alone, which is the same for ``x`` and
    ``act(k, x)``). ``P`` maps ``z`` to the chart's own representative of ``h(z)``: charts with redundant
    directions (softmax logits are unchanged by adding a constant to a row) would otherwise drift along them
    without end and never meet a residual tolerance.

    Wide inputs (latent features with hundreds of channels) can first be reduced by ``reduce``, a bias-free 1×1
    convolution applied once, before the update map's iterations: ``f_θ(z; x) = P(z) + Δ_θ(act(h(z), R x))``. This
    is the same as giving ``Δ_θ`` a first layer ``R`` on ``act(h(z), x)``, because a linear map over channels
    commutes with any resampling that treats every channel alike (``act(h, R x) = R act(h, x)``), but every
    iteration then warps the reduced channels instead of all of them.

    Args:
        group: the group.
        net: ``Δ_θ``, mapping ``(B, C', H, W)`` images to ``(B, *group.unconstrained_shape)``; e.g.
            [`UpdateNet`][equican.canon.nets.UpdateNet]. ``C'`` is the input's channels, or ``reduce``'s output
            channels.
        reduce: None, or the channel reduction (e.g. ``nn.Conv2d(C, C', 1, bias=False)``); it must act on channels
            alone (pointwise in space, linear, no bias) for the identity above to hold.
        resolution: the working resolution: None, or the side in pixels of the copy of the input that the update map
            looks at. Inputs whose shorter side is larger are downsampled once before the solve (bilinear with
            antialiasing, keeping the aspect ratio). Elements act in normalized coordinates, so the element found on
            the small copy is applied to the full-resolution input. Every iteration then costs the update network at
            the working size: for 48×48 digits and ``resolution=24``, a quarter of the work. The measured
            trade-off (``benchmarks/hot_path.py``, docs/results/hot_path.md): scale DECs lose 7% of
            their canonical-form invariance at 64 px on 96×96 inputs, 217% on 192×192 ones; at 210×210
            the paper's MNIST configuration runs 15× faster at 70 px. Default None (the input's own);
            [`RECOMMENDED_RESOLUTION`][equican.canon.direct.RECOMMENDED_RESOLUTION] (64) when speed matters more.
    """

    def __init__(self, group: Group, net: nn.Module, reduce: nn.Module | None = None,
                 resolution: int | None = None) -> None:
        super().__init__(group)
        for name, module in (("net", net), ("reduce", reduce)):
            if module is not None and not isinstance(module, nn.Module):
                raise ConfigError(f"{type(self).__name__}: expected {name} to be a torch.nn.Module, "
                                  f"got {type(module).__name__}")
        if net is None:
            raise ConfigError(f"{type(self).__name__}: expected net to be a torch.nn.Module, got NoneType")
        if resolution is not None:
            V.require_int(resolution, low=2, where=type(self).__name__, name="resolution")
        self.net = net
        self.reduce = reduce
        self.resolution = resolution

    def update_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the update map warps: ``x: (B, C, H, W)``, reduced by ``reduce`` and downsampled to the working
        resolution where those are set: ``(B, C', H', W')``.

        Computed once per solve, before the iterations.
        """
        x = x if self.reduce is None else self.reduce(x)
        h, w = x.shape[-2:]
        if self.resolution is not None and min(h, w) > self.resolution and x.shape[0]:
            scale = self.resolution / min(h, w)
            size = (max(round(h * scale), 1), max(round(w * scale), 1))
            # align_corners=True matches the groups' convention, so the small copy samples the same square [-1, 1]².
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True, antialias=True)
        return x

    def correction(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two parts of the update map: ``(P(z), Δ_θ(act(h(z), x)))``, each ``(B, *unconstrained_shape)``.

        Kept apart so that the DEQ can measure its residual ``f(z) − z = (P(z) − z) + Δ`` without subtracting two
        large, nearly equal numbers (which in float32 absorbs a small update and reads as 0).

        The group's members are called unchecked: ``x`` was validated at the public entry point, and ``z`` comes
        from the solver. A ``z`` whose element is not finite acts as the identity
        ([`elements`][equican.canon.base.Canonicalizer.elements]), so the group's own code never meets a NaN mid-solve; the
        DEQ flags such inputs through its residual, measured on the raw ``z``.
        """
        u = self.group.unchecked
        _, h, _ = self.elements(z)
        dz = self.net(u.act(h, x))
        if tuple(dz.shape) != tuple(z.shape):
            raise ConfigError(f"{type(self).__name__}: expected the update network to return shape "
                              f"{tuple(z.shape)}, got {tuple(dz.shape)}")
        return u.to_unconstrained(h), dz

    def step(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One application of the update map ``f_θ(z; x) = P(z) + Δ_θ(act(h(z), x))``.

        Args:
            z: chart parameters ``(B, *unconstrained_shape)``.
            x: inputs ``(B, C, H, W)`` (after [`update_input`][equican.canon.direct.UpdateCanonicalizer.update_input]).

        Returns:
            The updated chart parameters, ``(B, *unconstrained_shape)``.
        """
        projected, dz = self.correction(z, x)
        return projected + dz


class DirectCanonicalizer(UpdateCanonicalizer):
    """One application of the update map from the identity: ``z = f_θ(0; x)`` (the "no fixed point" ablation).

    ``info`` is empty. See [`UpdateCanonicalizer`][equican.canon.direct.UpdateCanonicalizer] for the arguments.
    """

    def solve(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """One update from ``z = 0``: chart parameters ``(B, *unconstrained_shape)`` for ``x: (B, C, H, W)``, and an
        empty ``info``."""
        return self.step(self.zeros(x), self.update_input(x)), {}
