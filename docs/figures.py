"""Regenerate the documentation's figures in ``docs/images/`` (or in ``--out DIR``).

    python docs/figures.py              # writes docs/images/*.png
    python docs/figures.py --out /tmp/figures

Each figure is drawn from the bundled MNIST digits with fixed seeds, so a rerun redraws the same pictures:

* ``group_actions.png``: every registered group acting on six digits (original, ``act(g, x)``, and back by
  ``act(g⁻¹, ·)``), drawn by ``equican show-groups``' own ``equican.show.show_groups`` and
  ``equican.show.render_grid``.
* ``monotone_warp_grid.png``: one digit with a straight lattice, and two random monotone warps of it, each with the
  lattice lines carried along by the warp (the nodes' images ``g·u``, read off the field of ``inverse(g)``).
* ``canonical_forms.png``: digits rotated by 0°, 90°, 180° and 270°, each above its canonical form under an
  untrained escnn C4 canonicalizer. It is exactly invariant by construction, so the four canonical rows are
  identical (the script checks this) even though the orientation it picks is arbitrary. Needs escnn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGES = Path(__file__).resolve().parent / "images"
DPI = 110


def _figure(width: float, height: float):
    # A bare Figure on the Agg canvas: no pyplot state, works headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def group_actions(path: Path) -> None:
    """Every registered group acting on six training digits (``equican show-groups --count 6 --seed 0``)."""
    from equican.show import render_grid, show_groups

    rows = show_groups(count=6, seed=0)
    failed = [row.name for row in rows if not row.report.passed]
    if failed:
        raise RuntimeError(f"group laws failed for {failed}; not drawing them as if they held")
    render_grid(rows, title="each registered group acting on bundled MNIST digits (seed 0)").savefig(path, dpi=DPI)


def _lattice(ax, field: torch.Tensor, step: int) -> None:
    """Draw every ``step``-th node row and column of a ``(2, N, N)`` field of positions as lines."""
    for i in range(0, field.shape[-1], step):
        ax.plot(field[0, i, :], field[1, i, :], color="tab:orange", lw=0.9)
        ax.plot(field[0, :, i], field[1, :, i], color="tab:orange", lw=0.9)


def monotone_warp_grid(path: Path) -> None:
    """One digit and two monotone warps of it, with the lattice lines each warp carries along."""
    from equican import make_group
    from equican.show import load_digits

    # The first bundled digit, resampled to 120×120 so that the warped strokes look smooth.
    x = F.interpolate(load_digits(1), size=(120, 120), mode="bicubic", align_corners=True).clamp(0, 1)
    half = 1 / (x.shape[-1] - 1)  # half a pixel in normalized coordinates: pixel centres sit on [-1, 1]
    extent = (-1 - half, 1 + half, 1 + half, -1 - half)
    fig = _figure(10.5, 3.9)
    axes = fig.subplots(1, 3)
    base = make_group("monotone")
    panels = [(axes[0], x, base.identity(1)[0], "x  (lattice of the warp, every 4th node)")]
    for ax, strength, seed in ((axes[1], 0.25, 0), (axes[2], 0.5, 1)):
        group = make_group("monotone", strength=strength)
        generator = torch.Generator().manual_seed(seed)
        g = group.sample(1, generator=generator)
        while float(group.folded_fraction(g)) > 0:  # strength 0.5 folds some warps; draw one that does not
            g = group.sample(1, generator=generator)
        # act(g, x)(u) = x(g⁻¹·u): what sat at node p of x is at g·p, and the field of inverse(g) holds g·p.
        panels.append((ax, group.act(g, x), group.inverse(g)[0], f"act(g, x), logits ~ U[0, {strength})"))
    for ax, image, nodes, title in panels:
        ax.imshow(image[0, 0], cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="bilinear")
        _lattice(ax, nodes, base.refine // 2)
        ax.set(xlim=(-1, 1), ylim=(1, -1), xticks=[], yticks=[])
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"monotone scaling (cells={base.cells}): a piecewise-linear x-warp per row and y-warp per column",
                 fontsize=11)
    fig.savefig(path, dpi=DPI)


def canonical_forms(path: Path) -> None:
    """Rotated digits and their canonical forms under an (untrained) escnn C4 canonicalizer."""
    from equican import make_group
    from equican.canon import EquivariantCanonicalizer
    from equican.show import load_digits
    from equican.report import canonical_forms_figure, canonicalize

    torch.manual_seed(0)  # the canonicalizer's random weights: any weights give an invariant canonicalizer
    canonicalizer = EquivariantCanonicalizer(make_group("cyclic", n=4), in_channels=1, channels=(8, 8))
    x = load_digits(6)
    versions = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)], dim=1)  # (6, 4, 1, 40, 40)
    canonical = canonicalize(canonicalizer, versions.flatten(0, 1)).view(versions.shape)
    if not torch.equal(canonical, canonical[:, :1].expand_as(canonical)):
        raise RuntimeError("the C4 canonicalizer gave different canonical forms for rotated copies of a digit")
    fig = canonical_forms_figure(canonicalizer, versions, row_labels=["0°", "90°", "180°", "270°"],
                                 title="digits rotated by k·90° (rows 1, 3, 5, 7) and their canonical forms "
                                       "under an untrained escnn C4 canonicalizer")
    fig.savefig(path, dpi=90)


FIGURES: dict[str, Callable[[Path], None]] = {
    "group_actions.png": group_actions,
    "monotone_warp_grid.png": monotone_warp_grid,
    "canonical_forms.png": canonical_forms,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Write every figure of ``FIGURES`` into ``--out``; returns the exit status (2 on bad arguments)."""
    parser = argparse.ArgumentParser(prog="docs/figures.py", description="Regenerate the documentation's figures.")
    parser.add_argument("--out", type=Path, default=IMAGES, metavar="DIR",
                        help="directory to write the PNGs into (default: docs/images)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the problem; return its status instead of exiting
        return int(exc.code or 0)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"docs/figures.py: error: cannot write to --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for name, draw in FIGURES.items():
        draw(args.out / name)
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
