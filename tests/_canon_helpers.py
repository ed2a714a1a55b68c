"""Shared builders for the canonicalizer tests (not collected: no test_ prefix)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from equican.canon import (Canonicalizer, DEQCanonicalizer, DEQConfig, DirectCanonicalizer, IdentityCanonicalizer,
                           OptimizationCanonicalizer, OptimizationConfig, SolverSettings)
from equican.canon.nets import EnergyNet, UpdateNet

KINDS = ("identity", "direct", "deq", "optimization")


def mnist_digits(n: int, size: int = 40, *, offset: int = 0) -> torch.Tensor:
    """``n`` bundled MNIST test digits from ``offset``, centred on a ``size × size`` canvas, ``(n, 1, size, size)`` in
    [0, 1]."""
    from equican.data import load_mnist

    images, _ = load_mnist(split="test", limit=offset + n)
    images = images[offset:].float().div(255)[:, None]
    pad = (size - 28) // 2
    return F.pad(images, (pad, size - 28 - pad, pad, size - 28 - pad))


def finite_difference_gradient(loss, parameters, *, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of the scalar ``loss()`` in every entry of ``parameters``, flattened in order, float64.

    Each entry is perturbed in place by ``±eps`` and restored, under ``torch.no_grad``.
    """
    numeric = []
    with torch.no_grad():
        for p in parameters:
            flat = p.view(-1)
            for i in range(p.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
                numeric.append((up - down) / (2 * eps))
    return torch.tensor(numeric, dtype=torch.float64)


def smooth_images(batch: int, channels: int, size: int, *, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Band-limited images in [0, 1]: a few random low-frequency cosines, so bilinear resampling is accurate."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    out = torch.zeros(batch, channels, size, size, dtype=torch.float64)
    for _ in range(4):
        # At most a quarter turn of phase per unit of normalized coordinate: well below the pixel rate even at 16
        # pixels, so two bilinear resamplings stay within the groups' action tolerances.
        f = (torch.rand(batch, channels, 2, generator=gen, dtype=torch.float64) - 0.5) * math.pi
        phase = torch.rand(batch, channels, 1, 1, generator=gen, dtype=torch.float64) * 2 * math.pi
        out += torch.cos(f[..., 0, None, None] * xx + f[..., 1, None, None] * yy + phase)
    out = (out - out.amin((2, 3), keepdim=True)) / (out.amax((2, 3), keepdim=True) - out.amin((2, 3), keepdim=True))
    return out.to(dtype)


def random_update_net(group, channels: int, *, seed: int, head_std: float = 0.05) -> UpdateNet:
    """A small UpdateNet whose head is random (an untrained one predicts exactly the identity)."""
    torch.manual_seed(seed)
    net = UpdateNet.for_group(group, channels, channels=(4, 8))
    nn.init.normal_(net.head.weight, std=head_std)
    return net


def make_kind(kind: str, group, channels: int, *, seed: int = 0):
    if kind == "identity":
        return IdentityCanonicalizer(group)
    if kind == "direct":
        return DirectCanonicalizer(group, random_update_net(group, channels, seed=seed))
    if kind == "deq":
        cfg = DEQConfig(train=SolverSettings(max_iter=4), eval=SolverSettings(max_iter=4))
        # A random (non-contractive) update adds about its own size at every iteration: a smaller head keeps the
        # result within the strengths the groups' tolerances were measured at.
        return DEQCanonicalizer(group, random_update_net(group, channels, seed=seed, head_std=0.015), cfg)
    if kind == "optimization":
        torch.manual_seed(seed)
        # lr 0.1: three steps on this random energy move the elements 0.01-0.33 from the identity (measured), within
        # the strengths the groups' tolerances were measured at; lr 1 moves affine elements up to 6.9, out of frame.
        return OptimizationCanonicalizer(group, EnergyNet(channels, channels=(4, 8)),
                                         OptimizationConfig(steps=3, lr=0.1, unroll=1))
    raise ValueError(kind)


class FixedCanonicalizer(Canonicalizer):
    """Returns the same chart parameters ``z`` for every input (a non-identity canonicalizer with no network)."""

    def __init__(self, group, z: torch.Tensor) -> None:
        super().__init__(group)
        self.z = nn.Parameter(z.clone())

    def solve(self, x):
        return self.z.expand(x.shape[0], *self.z.shape[1:]), {}
