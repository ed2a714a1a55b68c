"""Time and invariance error of the canonicalizer kinds, side by side, in the paper's MNIST configuration.

DEC: monotone group with R = 4, update network of two residual blocks 3→32→64, 5 Anderson iterations, 70×70
inputs, batch 16. The same network, briefly trained (seeded) to undo random monotone warps of a few fixed smooth
patterns, serves three kinds:

* ``deq``: the fixed point of its update (5 Anderson iterations);
* ``direct``: one application of the update (the no-fixed-point ablation);
* ``optimization``: gradient descent on ``E(y) = ½‖Δ(y)‖²`` (the same network as the energy: its minima are the
  DEQ's fixed points), for a range of step counts; the table reports the fewest steps that reach the DEQ's
  invariance error;
* ``identity``: no canonicalization (the error to beat).

Invariance error: mean |canon(k₁ p).x - canon(k₂ p).x| over pairs of held-out warps of the same pattern. Times are
per image, median over repeats, all kinds measured interleaved in one run. Writes ``canonicalizers.json`` and
``canonicalizers.png`` to ``--out`` (default outputs/benchmarks) and prints a table.

    python benchmarks/canonicalizers.py            # full
    python benchmarks/canonicalizers.py --quick    # seconds: tiny training, few repeats (exercised by a test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from equican import make_group
from equican.canon import (ConvergenceWarning, DEQCanonicalizer, DEQConfig, DirectCanonicalizer,
                           IdentityCanonicalizer, OptimizationCanonicalizer, OptimizationConfig, SolverSettings)
from equican.canon.nets import FixedPointEnergy, UpdateNet


def patterns(count: int, size: int, channels: int, seed: int) -> torch.Tensor:
    """Smooth random textures in [0, 1], shape (count, channels, size, size)."""
    noise = torch.randn(count, channels, size // 7, size // 7, generator=torch.Generator().manual_seed(seed))
    p = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=True)
    lo, hi = p.amin((1, 2, 3), keepdim=True), p.amax((1, 2, 3), keepdim=True)
    return (p - lo) / (hi - lo)


def warped(group, base: torch.Tensor, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    p = base[torch.arange(batch) % base.shape[0]]
    return group.act(group.sample(batch, generator=generator), p), p


def train(canon, group, base, steps: int, batch: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(canon.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    canon.train()
    losses = []
    for _ in range(steps):
        x, p = warped(group, base, batch, gen)
        loss = (canon(x).x - p).square().mean()  # undo the warp: the pattern is the canonical form
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    canon.eval()
    return losses


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny training and few repeats (seconds)")
    parser.add_argument("--out", default="outputs/benchmarks", help="output directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.simplefilter("ignore", ConvergenceWarning)

    size, channels, batch = 70, 3, 16
    train_steps, repeats, opt_steps = (1, 1, (1,)) if args.quick else (100, 5, (1, 2, 4, 8, 16, 32))
    group = make_group("monotone", cells=4)
    base = patterns(4, size, channels, seed=0)
    net = UpdateNet(channels, group.unconstrained_shape, channels=(32, 64), pool=2)
    five = SolverSettings(solver="anderson", max_iter=5, tol=1e-3)
    deq = DEQCanonicalizer(group, net, DEQConfig(train=five, eval=five))
    t0 = time.perf_counter()
    losses = train(deq, group, base, train_steps, batch, lr=3e-3)
    train_seconds = time.perf_counter() - t0

    kinds = {"identity": IdentityCanonicalizer(group), "direct": DirectCanonicalizer(group, net).eval(), "deq": deq}
    for k in opt_steps:
        kinds[f"optimization[{k}]"] = OptimizationCanonicalizer(
            group, FixedPointEnergy(net), OptimizationConfig(steps=k, lr=1.0, unroll=0)).eval()

    x1, _ = warped(group, base, batch, torch.Generator().manual_seed(100))
    x2, _ = warped(group, base, batch, torch.Generator().manual_seed(101))
    times: dict[str, list[float]] = {name: [] for name in kinds}
    errors: dict[str, float] = {}
    with torch.no_grad():
        for name, canon in kinds.items():  # warm-up and error
            errors[name] = float((canon(x1).x - canon(x2).x).abs().mean())
        for _ in range(repeats):  # interleaved, so load on the shared machine hits every kind alike
            for name, canon in kinds.items():
                t = time.perf_counter()
                canon(x1)
                times[name].append((time.perf_counter() - t) / batch * 1e3)
    rows = {name: {"ms_per_image": statistics.median(times[name]), "ms_all": times[name],
                   "invariance_error": errors[name]} for name in kinds}

    deq_row = rows["deq"]
    matching = [n for n in kinds
                if n.startswith("optimization") and rows[n]["invariance_error"] <= deq_row["invariance_error"]]
    result = {
        "config": {"size": size, "channels": channels, "batch": batch, "group": repr(group), "net": "3→32→64",
                   "deq_solver": "anderson, 5 iterations", "train_steps": train_steps, "train_seconds": train_seconds,
                   "final_train_loss": losses[-1] if losses else None, "repeats": repeats, "threads": args.threads,
                   "quick": args.quick},
        "rows": rows,
        "optimization_matching_deq": matching[0] if matching else None,
        "speedup_vs_matching_optimization": (rows[matching[0]]["ms_per_image"] / deq_row["ms_per_image"]
                                             if matching else None),
        "targets": {"deq_ms_per_image<=15": deq_row["ms_per_image"] <= 15},
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "canonicalizers.json").write_text(json.dumps(result, indent=2))
    print(f"{'kind':<20}{'ms/image':>10}{'invariance error':>18}")
    for name, row in rows.items():
        print(f"{name:<20}{row['ms_per_image']:>10.2f}{row['invariance_error']:>18.4f}")
    print(f"optimization matching the DEQ's error: {result['optimization_matching_deq']}; "
          f"DEQ speed-up: {result['speedup_vs_matching_optimization']}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        opt = [n for n in rows if n.startswith("optimization")]
        ax.plot([rows[n]["ms_per_image"] for n in opt], [rows[n]["invariance_error"] for n in opt], "o-",
                label="optimization (steps " + ", ".join(n.split("[")[1][:-1] for n in opt) + ")")
        for n, marker in (("deq", "*"), ("direct", "s"), ("identity", "x")):
            ax.plot(rows[n]["ms_per_image"], rows[n]["invariance_error"], marker, markersize=12, label=n)
        ax.set_xscale("log")
        ax.set_xlabel("time per image (ms, log scale)")
        ax.set_ylabel("invariance error")
        ax.set_title("Canonicalizers: monotone R=4, 70×70, batch 16")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "canonicalizers.png", dpi=120)
        plt.close(fig)
    except ImportError:  # pragma: no cover
        print("matplotlib not installed: no plot")
    return result


if __name__ == "__main__":
    main()
