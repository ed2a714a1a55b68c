"""Accuracy of the monotone inverse and speed of every group's actions, side by side (issue 2, section 6).

(a) Monotone inverse accuracy. Smooth 64×64 images (bicubic upsampling of 8×8 uniform noise), one warp per image
with R = 4 cells and logits U(0, 1) per cell (``MonotoneScaling(cells=4, strength=1.0)``), non-separable warps (an
x-warp per coarse row, a y-warp per coarse column, all independent) and separable ones (one x-warp for every row,
one y-warp for every column). Error: mean and max of |act(g⁻¹, act(g, x)) − x| over the interior (4-pixel margin).
Rows:

* ``per_axis``: the paper's inversion (our own implementation of it): each pixel row's x-warp and each pixel
  column's y-warp inverted independently by searchsorted and linear interpolation;
* ``node_lattice``: ``act(inverse(g), ·)``, the inverse element (exact at the lattice nodes) interpolated;
* ``act_inverse``: ``MonotoneScaling.act_inverse`` (the inverse action; ``act(inverse(g), ·)`` by definition), the
  inverse re-solved per pixel where interpolating it misses by half a pixel or more;
* ``exact_per_pixel``: the inverse solved at every pixel (``inverse_grid(..., pixel_tol=0)``), the floor that the
  two bilinear resamplings leave to any inverse sampled at the pixels' exact preimages (the per-axis inversion
  edges below it on separable warps: it inverts the pixel samples' linear interpolation, whose weights match
  those of the resampling);
* ``exact_warp_exact_inverse`` (diagnostic): ``act(g, x)`` computed without resampling error (the bicubic image
  read at the sampling map), then the exact inverse: the error of the one remaining bilinear resampling.

(b) Speed on (64, 3, 224, 224) float32 CPU for every registered group at its defaults (``make_group(name)``):
``act``, ``inverse``, the inverse action ``act_inverse`` (inverse included) and ``compose``, each as a ratio to
``F.grid_sample`` of the same images on a precomputed grid of the same size: the grid that reproduces that group's
action (recovered by acting on the coordinate images), so the ratio is what the group adds to the sampling itself.
The sampling time depends on the grid (a monotone warp's grid samples ~2x slower than an identity grid here), which
is why each group is compared with its own. Reference rows: kornia's ``warp_affine`` with the pixel matrix
equivalent to the affine elements (the affine, rotation and scale groups build a separable grid instead, for speed),
and the per-axis inverse action. All operations are measured interleaved in one run; times are the minimum over
``--repeats`` (medians are in the JSON), with ``--threads`` torch threads (default 1: on a CPU shared with other
work, multi-threaded timings of many small operations are dominated by threads waiting for each other).

Writes ``group_actions.json`` and ``group_actions.png`` to ``--out`` (default outputs/benchmarks), prints a table.

    python benchmarks/group_actions.py            # full
    python benchmarks/group_actions.py --quick    # seconds: small sizes, few repeats (exercised by a test)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from equican import list_groups, make_group
from equican.sampling import grid_sample

TARGETS = {
    "nonseparable_mean": 0.01, "nonseparable_max": 0.1, "separable_mean": 0.002,
    "act_ratio": 1.5, "act_inverse_ratio": 3.0,
}
MARGIN = 4


# ---------------------------------------------------------------------- (a) accuracy
def smooth_images(count: int, *, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic upsampling of 8×8 uniform noise: ``(images (count, 1, size, size), noise (count, 1, 8, 8))``."""
    noise = torch.rand(count, 1, 8, 8, generator=generator)
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=True), noise


def exact_warp(noise: torch.Tensor, group, g: torch.Tensor, size: int) -> torch.Tensor:
    """``act(g, x)`` without resampling error: the continuous image (bicubic in the noise) read at the sampling map.

    ``F.grid_sample(noise, ..., mode="bicubic", padding_mode="border")`` is the same cubic convolution as
    ``F.interpolate(..., mode="bicubic")`` that made the images, evaluated at any point instead of the pixels.
    """
    sampling = group.act(g, coordinate_images(g.shape[0], size, size))  # g⁻¹·u at every pixel (exact: linear image)
    return F.grid_sample(noise, sampling.permute(0, 2, 3, 1), mode="bicubic", padding_mode="border",
                         align_corners=True)


def protocol_warps(count: int, *, generator: torch.Generator, separable: bool) -> tuple[object, torch.Tensor]:
    """The protocol's monotone group and ``count`` warps of it (logits U(0, 1) per cell)."""
    group = make_group("monotone", cells=4, strength=1.0)
    z = torch.rand(count, *group.unconstrained_shape, generator=generator)
    if separable:  # one x-warp shared by all coarse rows, one y-warp by all coarse columns
        z = z[:, :, :1].expand_as(z).contiguous()
    return group, group.from_unconstrained(z)


def per_axis_inverse_grid(g: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The paper's inversion: invert every pixel row's x-warp and every pixel column's y-warp on its own.

    Args:
        g: monotone elements ``(B, 2, N, N)`` (sampling maps on the node lattice).

    Returns:
        The grid ``(B, height, width, 2)`` of the inverse action: at pixel (i, j), x solves ``g_x(x, y_i) = x_j``
        along row i and y solves ``g_y(x_j, y) = y_i`` along column j, each by searchsorted and linear
        interpolation. Exact for separable warps; for non-separable ones the two solutions belong to different
        points, which is the error this baseline shows.
    """
    dense = F.interpolate(g, size=(height, width), mode="bilinear", align_corners=True)

    def invert_rows(values: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        # values: (B, R, L), increasing along L, sampled at the L uniform positions; returns (B, R, len(uniform)).
        length = values.shape[-1]
        position = torch.linspace(-1, 1, length, dtype=values.dtype)
        query = uniform.expand(*values.shape[:2], -1).contiguous()
        hi = torch.searchsorted(values.contiguous(), query).clamp(1, length - 1)
        v0, v1 = values.gather(-1, hi - 1), values.gather(-1, hi)
        w = ((query - v0) / (v1 - v0).clamp_min(torch.finfo(values.dtype).tiny)).clamp(0, 1)
        return position[hi - 1] + w * (position[hi] - position[hi - 1])

    gx = invert_rows(dense[:, 0], torch.linspace(-1, 1, width, dtype=g.dtype))
    gy = invert_rows(dense[:, 1].transpose(1, 2), torch.linspace(-1, 1, height, dtype=g.dtype)).transpose(1, 2)
    return torch.stack([gx, gy], dim=-1)


def round_trip_error(x: torch.Tensor, back: torch.Tensor) -> dict[str, float]:
    err = (back - x)[..., MARGIN:-MARGIN, MARGIN:-MARGIN].abs()
    return {"mean": float(err.mean()), "max": float(err.max()),
            "p99_9": float(torch.quantile(err.flatten().double(), 0.999))}


def accuracy(count: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    x, noise = smooth_images(count, size=64, generator=generator)
    methods: dict[str, dict[str, dict[str, float]]] = {}
    folds: dict[str, dict[str, float]] = {}
    for kind in ("nonseparable", "separable"):
        group, g = protocol_warps(count, generator=generator, separable=kind == "separable")
        y = group.act(g, x)
        folded = group.folded_fraction(g)
        folds[kind] = {"mean_folded_cells": float(folded.mean()),
                       "warps_with_folds": float((folded > 0).float().mean())}
        backs = {
            "per_axis": grid_sample(y, per_axis_inverse_grid(g, 64, 64)),
            "node_lattice": group.act(group.inverse(g), y),
            "act_inverse": group.act_inverse(g, y),
            "exact_per_pixel": grid_sample(y, group.inverse_grid(g, 64, 64, pixel_tol=0)),
            # Diagnostic: the forward warp without its resampling error, then the exact inverse: what one bilinear
            # resampling of the warped content costs by itself.
            "exact_warp_exact_inverse": grid_sample(exact_warp(noise, group, g, 64),
                                                    group.inverse_grid(g, 64, 64, pixel_tol=0)),
        }
        for name, back in backs.items():
            methods.setdefault(name, {})[kind] = round_trip_error(x, back)
    return {
        "protocol": {"images": count, "size": [64, 64], "cells": 4, "refine": 8, "logits": "U(0, 1)",
                     "temperature": 3.0, "margin": MARGIN, "seed": seed},
        "folds": folds,
        "methods": methods,
        "targets": {k: v for k, v in TARGETS.items() if not k.endswith("ratio")},
    }


# ---------------------------------------------------------------------- (b) speed
def coordinate_images(batch: int, height: int, width: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalized coordinates (x, y) of every pixel as a 2-channel image batch ``(batch, 2, height, width)``."""
    ys, xs = torch.linspace(-1, 1, height, device=device), torch.linspace(-1, 1, width, device=device)
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)]).expand(batch, 2, height,
                                                                                          width).contiguous()


def equivalent_grid(action: Callable[[torch.Tensor], torch.Tensor], batch: int, height: int,
                    width: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sampling grid ``(B, H, W, 2)`` that reproduces a bilinear, zero-padded action of a group.

    Acting on the coordinate images returns the sampled coordinates wherever the whole bilinear stencil is inside
    the image (bilinear interpolation reproduces linear functions). Where part of it is outside, zero padding
    scales the value by the weight inside, which acting on constant images measures; points entirely outside are
    put outside the image. Exact rot90 actions come back as the exact permuted grid.
    """
    coords = action(coordinate_images(batch, height, width, device=device))
    weight = action(torch.ones(batch, 1, height, width, device=device))
    grid = torch.where(weight > 1e-6, coords / weight.clamp_min(1e-6), torch.full_like(coords, 2.0))
    return grid.permute(0, 2, 3, 1).contiguous()


def kornia_matrix(g: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The pixel-space matrix ``(B, 2, 3)`` for ``kornia.geometry.transform.warp_affine`` of affine elements."""
    from equican.interop import to_kornia_matrix  # the public conversion (kornia's denormalize_homography)

    return to_kornia_matrix(make_group("affine"), g, (height, width))[:, :2]


#: The reference of every operation of :func:`group_operations`: the grid_sample it is divided by.
REFERENCES = {"act": "grid_sample[act]", "inverse": "grid_sample[act]", "act_inverse": "grid_sample[act_inverse]",
              "compose": "grid_sample[act]"}


def group_operations(group, x: torch.Tensor, generator: torch.Generator
                     ) -> tuple[dict[str, Callable[[], object]], torch.Tensor]:
    """The timed operations of one group on the images ``x`` ``(B, C, H, W)``, and the element ``g`` ``(B, *P)``.

    Returns ``({op: callable}, g)`` with the ops ``act``, ``inverse``, ``act_inverse`` (inverse included) and
    ``compose`` of random elements ``g, h`` (drawn with ``generator`` on the CPU, then moved to ``x``'s device), and
    their references ``grid_sample[act]`` and ``grid_sample[act_inverse]``: ``F.grid_sample`` of ``x`` on the
    precomputed grid that reproduces ``act(g, ·)`` (resp. ``act_inverse(g, ·)``); :data:`REFERENCES` pairs them.
    """
    batch, _, height, width = x.shape
    g = group.sample(batch, generator=generator).to(x.device)
    h = group.sample(batch, generator=generator).to(x.device)
    act_grid = equivalent_grid(lambda im: group.act(g, im), batch, height, width, device=x.device)
    inv_grid = equivalent_grid(lambda im: group.act_inverse(g, im), batch, height, width, device=x.device)
    work: dict[str, Callable[[], object]] = {
        "grid_sample[act]": lambda: F.grid_sample(x, act_grid, align_corners=True),
        "grid_sample[act_inverse]": lambda: F.grid_sample(x, inv_grid, align_corners=True),
        "act": lambda: group.act(g, x),
        "inverse": lambda: group.inverse(g),
        "act_inverse": lambda: group.act_inverse(g, x),
        "compose": lambda: group.compose(g, h),
    }
    return work, g


def time_interleaved(work: dict, repeats: int, *, sync: Callable[[], None] | None = None, min_seconds: float = 0.0,
                     desc: str = "timing rounds") -> dict:
    """Seconds per call of every operation in ``work`` (``{key: callable}``), ``repeats`` samples each.

    One warm-up call each (first calls allocate and load kernels); then, in every round, every operation once, so
    that load from elsewhere on the machine hits all alike. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before
    and after each measurement. With ``min_seconds > 0``, an operation whose warm-up call is shorter is called
    ``ceil(min_seconds / warm-up time)`` times per measurement (and the mean taken): calls of a few microseconds
    are then not measured one by one.
    """
    sync = sync or (lambda: None)
    number: dict = {}
    for key, fn in work.items():
        sync()
        start = time.perf_counter()
        fn()
        sync()
        first = time.perf_counter() - start
        number[key] = max(1, math.ceil(min_seconds / max(first, 1e-9))) if min_seconds > 0 else 1
    times: dict = {key: [] for key in work}
    for _ in tqdm(range(repeats), desc=desc, unit="round", leave=False, disable=None):  # bars on a terminal only
        for key, fn in work.items():
            n = number[key]
            sync()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            times[key].append((time.perf_counter() - start) / n)
    return times


def speed(batch: int, size: int, repeats: int, seed: int) -> dict:
    from kornia.geometry.transform import warp_affine

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=generator)
    work: dict[tuple[str, str], Callable[[], object]] = {}
    targets: dict[tuple[str, str], float] = {}
    references: dict[str, str] = {}
    with torch.no_grad():
        for name in list_groups():
            group = make_group(name)
            ops, g = group_operations(group, x, generator)
            work.update({(name, op): fn for op, fn in ops.items()})
            references.update({f"{name}/{op}": f"{name}/{ref}" for op, ref in REFERENCES.items()})
            if name in ("rotation", "scale", "affine", "monotone"):
                targets[(name, "act")] = TARGETS["act_ratio"]
            if name == "monotone":
                targets[(name, "act_inverse")] = TARGETS["act_inverse_ratio"]
                work[(name, "per_axis_act_inverse")] = lambda g=g: grid_sample(x, per_axis_inverse_grid(g, size, size))
                references[f"{name}/per_axis_act_inverse"] = f"{name}/grid_sample[act_inverse]"
            if name == "affine":
                matrix = kornia_matrix(g, size, size)
                kornia_error = float((warp_affine(x, matrix, (size, size), align_corners=True)
                                      - group.act(g, x)).abs().max())
                work[(name, "kornia_warp_affine")] = lambda m=matrix: warp_affine(x, m, (size, size),
                                                                                  align_corners=True)
                references[f"{name}/kornia_warp_affine"] = f"{name}/grid_sample[act]"
        times = time_interleaved(work, repeats)
    best = {f"{n}/{op}": min(t) for (n, op), t in times.items()}
    rows = []
    for (name, op), t in times.items():
        key = f"{name}/{op}"
        if op.startswith("grid_sample["):
            continue
        ref = references[key]
        rows.append({"group": name, "op": op, "seconds": best[key], "median_seconds": statistics.median(t),
                     "reference": ref, "reference_seconds": best[ref], "ratio": best[key] / best[ref],
                     "target": targets.get((name, op))})
    return {"shape": [batch, 3, size, size], "dtype": "float32", "device": "cpu", "repeats": repeats,
            "reference_seconds": {k: v for k, v in best.items() if "/grid_sample[" in k},
            "kornia_max_abs_difference": kornia_error, "rows": rows}


# ---------------------------------------------------------------------- report
def print_report(result: dict) -> None:
    acc = result["accuracy"]
    print(f"\n(a) monotone round trip |act(g⁻¹, act(g, x)) − x|, {acc['protocol']['images']} images 64×64, "
          f"interior (margin {MARGIN})")
    for kind, f in acc["folds"].items():
        print(f"    {kind}: {100 * f['warps_with_folds']:.0f}% of warps fold, "
              f"{100 * f['mean_folded_cells']:.1f}% of lattice cells folded on average")
    print(f"    {'method':26s} {'nonsep mean':>12s} {'nonsep max':>11s} {'sep mean':>10s} {'sep max':>9s}")
    for name, m in acc["methods"].items():
        n, s = m["nonseparable"], m["separable"]
        print(f"    {name:26s} {n['mean']:12.4f} {n['max']:11.3f} {s['mean']:10.4f} {s['max']:9.3f}")
    t = acc["targets"]
    print(f"    {'target':26s} {t['nonseparable_mean']:12.4f} {t['nonseparable_max']:11.3f} "
          f"{t['separable_mean']:10.4f} {'':>9s}")
    sp = result["speed"]
    print(f"\n(b) speed on {tuple(sp['shape'])} {sp['dtype']} {sp['device']}, {result['config']['threads']} thread(s), "
          f"min of {sp['repeats']} interleaved rounds; ratio to grid_sample on the group's own grid")
    print(f"    {'group':10s} {'operation':22s} {'ms':>9s} {'ref ms':>8s} {'ratio':>7s} {'target':>7s}")
    for row in sp["rows"]:
        target = "" if row["target"] is None else f"≤{row['target']:g}"
        flag = "" if row["target"] is None else ("  ok" if row["ratio"] <= row["target"] else "  MISSED")
        print(f"    {row['group']:10s} {row['op']:22s} {1e3 * row['seconds']:9.2f} "
              f"{1e3 * row['reference_seconds']:8.2f} {row['ratio']:7.2f} {target:>7s}{flag}")
    print(f"    kornia warp_affine vs affine act: max |difference| {sp['kornia_max_abs_difference']:.2e}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2.2, 1]})
    rows = result["speed"]["rows"]
    ops = ["act", "inverse", "act_inverse", "compose"]
    groups = sorted({r["group"] for r in rows})
    width = 0.8 / len(ops)
    for k, op in enumerate(ops):
        vals = [next((r["ratio"] for r in rows if r["group"] == gname and r["op"] == op), 0.0) for gname in groups]
        left.bar([i + (k - (len(ops) - 1) / 2) * width for i in range(len(groups))], vals, width, label=op)
    extras = [r for r in rows if r["op"] not in ops]
    base = len(groups)
    for i, r in enumerate(extras):
        left.bar(base + i, r["ratio"], 0.5, color="grey")
    left.set_xticks(list(range(base + len(extras))),
                    groups + [f"{r['group']}\n{r['op']}" for r in extras], fontsize=8)
    left.axhline(TARGETS["act_ratio"], color="C0", ls="--", lw=1, label=f"act target ≤{TARGETS['act_ratio']}")
    left.axhline(TARGETS["act_inverse_ratio"], color="C2", ls="--", lw=1,
                 label=f"monotone act_inverse target ≤{TARGETS['act_inverse_ratio']}")
    left.set_yscale("log")
    left.set_ylim(top=30)
    left.set_ylabel("time / grid_sample on the same grid")
    shape = "×".join(map(str, result["speed"]["shape"]))
    left.set_title(f"speed, {shape} float32 CPU, {result['config']['threads']} thread(s)")
    left.legend(fontsize=8, loc="upper left", ncol=3)

    methods = result["accuracy"]["methods"]
    names = list(methods)
    bars = [("nonseparable", "mean"), ("nonseparable", "max"), ("separable", "mean"), ("separable", "max")]
    width = 0.8 / len(bars)
    for k, (kind, stat) in enumerate(bars):
        vals = [methods[n][kind][stat] for n in names]
        right.bar([i + (k - 1.5) * width for i in range(len(names))], vals, width, label=f"{kind} {stat}")
    for value, label, color in ((TARGETS["nonseparable_mean"], "non-sep mean target", "C0"),
                                (TARGETS["nonseparable_max"], "non-sep max target", "C1"),
                                (TARGETS["separable_mean"], "sep mean target", "C2")):
        right.axhline(value, color=color, ls="--", lw=1, label=label)
    right.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
    right.set_yscale("log")
    right.set_ylim(1e-3, 5)
    right.set_ylabel("|act(g⁻¹, act(g, x)) − x| on the interior")
    right.set_title("monotone round trip, R=4, logits U(0,1)")
    right.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    parser.add_argument("--out", default="outputs/benchmarks", help="output directory")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 7, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    images, batch, size = (16, 2, 32) if args.quick else (64, 64, 224)

    result = {
        "config": {"quick": args.quick, "repeats": repeats, "threads": args.threads, "seed": args.seed,
                   "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor()},
        "accuracy": accuracy(images, args.seed),
        "speed": speed(batch, size, repeats, args.seed),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "group_actions.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "group_actions.png")
    print_report(result)
    print(f"\nwrote {out / 'group_actions.json'} and {out / 'group_actions.png'}")
    return result


if __name__ == "__main__":
    main()
