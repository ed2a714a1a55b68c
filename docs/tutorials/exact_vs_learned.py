"""Tutorial 5: exact or learned canonicalizer? Measure what each guarantees before training anything.

Builds the exactly equivariant canonicalizer for continuous rotations (an escnn steerable network whose averaged vector
field gives the angle) and for rotations with reflections (O(2)), and a learned one of the same interface (the direct
canonicalizer, one pass of an ordinary CNN). Untrained, with random weights, it measures with ``equican.testing``:

1. the exact canonicalizer is invariant to rounding error under rot90 and flips, in float64;
2. under arbitrary angles it is invariant within the group's own action tolerance (two bilinear resamplings);
3. the learned one is neither: its invariance has to come from training, and is then only approximate.

Every claim of docs/tutorials/exact_vs_learned.md is asserted here. Needs escnn (``pip install 'equican[escnn]'``).

Run:  python docs/tutorials/exact_vs_learned.py     (about a minute on one CPU thread, offline)
"""

from __future__ import annotations

import torch

from equican import make_group
from equican.canon import DirectCanonicalizer, UpdateNet
from equican.canon.equivariant import equivariant_canonicalizer
from equican.testing import band_limited_images, canonicalizer_invariance_error, white_noise_images

torch.set_num_threads(1)
torch.manual_seed(0)


def grid_error(canon, x: torch.Tensor, reflections: bool) -> float:
    """Largest change of the canonical input when ``x`` is turned by 90°, 180°, 270° (and mirrored)."""
    ref = canon(x).x
    moves = [lambda t, k=k: torch.rot90(t, k, dims=(-2, -1)) for k in (1, 2, 3)]
    if reflections:
        moves += [lambda t: t.flip(-1), lambda t: t.flip(-2)]
    return max(float((canon(move(x)).x - ref).abs().max()) for move in moves)


def main() -> None:
    noise = white_noise_images(4, 1, 24, generator=torch.Generator().manual_seed(0))
    smooth = band_limited_images(8, 1, 32, generator=torch.Generator().manual_seed(1))
    rows = []
    with torch.no_grad():
        for name in ("rotation", "o2"):
            group = make_group(name)
            reflections = group.param_shape == (2,)
            exact = equivariant_canonicalizer(group, in_channels=1, channels=(4,)).double().eval()
            learned = DirectCanonicalizer(group, UpdateNet.for_group(group, 1, channels=(8, 16))).double()
            # An untrained UpdateNet's head starts at 0 (the identity); give it random weights like any trained net.
            torch.nn.init.normal_(learned.net.head.weight, std=0.5)
            learned.eval()
            tolerance = group.tolerance(torch.float64).action
            for kind, canon in (("exact", exact), ("learned", learned)):
                on_grid = grid_error(canon, noise, reflections)
                off_grid = float(canonicalizer_invariance_error(canon, smooth, seed=3, crop=4).max())
                rows.append((name, kind, on_grid, off_grid, tolerance))

    print(f"{'group':<9} {'kind':<8} {'rot90/flip error':>17} {'arbitrary-angle error':>22} {'tolerance':>10}")
    for name, kind, on_grid, off_grid, tolerance in rows:
        print(f"{name:<9} {kind:<8} {on_grid:>17.2e} {off_grid:>22.4f} {tolerance:>10.3f}")

    for name, kind, on_grid, off_grid, tolerance in rows:
        if kind == "exact":
            assert on_grid <= 1e-10, (name, on_grid)  # claim 1
            assert off_grid <= tolerance, (name, off_grid)  # claim 2
        else:
            assert on_grid > 1e-2 and off_grid > tolerance, (name, on_grid, off_grid)  # claim 3
    print("\nall claims hold")


if __name__ == "__main__":
    main()
