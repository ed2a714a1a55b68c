"""A small DEQ canonicalizer learns to undo monotone warps of a few fixed patterns (seeded, a few seconds)."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F

from equican import make_group
from equican.canon import ConvergenceWarning, DEQCanonicalizer, DEQConfig, IdentityCanonicalizer, SolverSettings
from equican.canon.nets import UpdateNet

SIZE, PATTERNS, COPIES, STEPS = 24, 3, 5, 150


def _patterns() -> torch.Tensor:
    """Smooth random textures in [0, 1] (content everywhere, so every warp segment is visible)."""
    noise = torch.randn(PATTERNS, 1, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(0))
    p = F.interpolate(noise, size=(SIZE, SIZE), mode="bicubic", align_corners=True)
    lo, hi = p.amin((2, 3), keepdim=True), p.amax((2, 3), keepdim=True)
    return (p - lo) / (hi - lo)


def _warped(group, patterns, generator, copies):
    p = patterns.repeat(copies, 1, 1, 1)
    return group.act(group.sample(p.shape[0], generator=generator), p), p


def _invariance_error(canon, group, patterns) -> float:
    """Mean |canon(k₁ p).x - canon(k₂ p).x| over held-out warp pairs of the patterns."""
    x1, _ = _warped(group, patterns, torch.Generator().manual_seed(100), 6)
    x2, _ = _warped(group, patterns, torch.Generator().manual_seed(101), 6)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float((canon(x1).x - canon(x2).x).abs().mean())


def test_trained_deq_canonicalizer_beats_identity_and_controls_do_not():
    torch.manual_seed(0)
    # A coarse warp grid (R = 2) and a strength at which the warps are clearly visible on 24×24 images.
    group = make_group("monotone", cells=2, refine=4, strength=0.4)
    patterns = _patterns()
    net = UpdateNet.for_group(group, 1, channels=(8, 16))
    settings = SolverSettings(solver="anderson", max_iter=5, tol=1e-3)
    canon = DEQCanonicalizer(group, net, DEQConfig(train=settings, eval=settings))
    untrained = copy.deepcopy(canon).eval()
    opt = torch.optim.Adam(canon.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    canon.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(STEPS):
            x, p = _warped(group, patterns, gen, COPIES)
            loss = (canon(x).x - p).square().mean()  # undo the warp: the pattern is the canonical form
            opt.zero_grad()
            loss.backward()
            opt.step()
    canon.eval()

    identity = _invariance_error(IdentityCanonicalizer(group), group, patterns)
    trained = _invariance_error(canon, group, patterns)
    print(f"invariance error: identity {identity:.4f}, trained {trained:.4f}")
    assert trained < 0.6 * identity, (trained, identity)

    # Negative controls: the untrained canonicalizer (zero head: the identity) and the trained one with its
    # weights shuffled within every tensor (same weight statistics, no learned structure) do not pass.
    assert _invariance_error(untrained, group, patterns) >= 0.6 * identity
    scrambled = copy.deepcopy(canon)
    shuffle = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in scrambled.parameters():
            flat = param.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=shuffle)])
    scrambled_error = _invariance_error(scrambled, group, patterns)
    print(f"scrambled {scrambled_error:.4f}")
    assert scrambled_error >= 0.6 * identity
