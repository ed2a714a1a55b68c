"""Inference overhead of latent DEC canonicalization inside timm models (issue 5).

For each model, the bare timm model and the same model wrapped by :func:`equican.create_model` with the DEC at 1
and at 2 insertion points (blocks/stages ``(0,)`` and ``(0, 1)``, monotone group, features as the canonicalizer's
input, mapped back after the block) run a forward pass in evaluation mode without gradients on one batch. The
wrapped models carry the bare model's weights. Times are the median over ``--repeats`` rounds; each round runs every
variant of every model once, interleaved, so that load from other work on the shared machine hits all alike. The
reported number is the ratio of medians, wrapped / bare.

The DEC's solver is forced to run all its iterations (tolerance 1e-12): an untrained update network predicts 0 and
would stop after its first step, which would flatter the overhead. ``--iterations`` sets the count (default 10, the
library's evaluation setting; the paper's MNIST training setting is 5).

Target (issue 5): ``vit_small_patch16_224`` at 224×224, batch 32: wrapped / bare ≤ 1.25 on this CPU.

    python benchmarks/latent_overhead.py             # vit_small, deit_tiny, swin_tiny at 224, batch 32
    python benchmarks/latent_overhead.py --quick     # tiny models and images: seconds (run by the tests)
    python benchmarks/latent_overhead.py --device cuda

Writes ``latent_overhead.json`` and ``latent_overhead.png`` to ``--out`` (default outputs/benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import equican
from equican.canon import DEQConfig, SolverSettings
from equican.errors import ConvergenceWarning

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.25
#: (name, timm keyword arguments) of the full run; image size 224.
MODELS = (("vit_small_patch16_224", {}), ("deit_tiny_patch16_224", {}), ("swin_tiny_patch4_window7_224", {}))
#: The quick run: the same families, shrunk.
QUICK_MODELS = (("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}),
                ("swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 2, "depths": (2, 2, 2, 2),
                                                  "embed_dim": 24, "num_heads": (1, 1, 1, 1)}))
POINTS = ((0,), (0, 1))


def build(name: str, kwargs: dict, iterations: int, device: torch.device) -> dict[str, torch.nn.Module]:
    """The bare model and its wrapped variants, with shared weights, in eval mode on ``device``."""
    import timm

    torch.manual_seed(0)
    bare = timm.create_model(name, pretrained=False, **kwargs)
    solver = SolverSettings(solver="anderson", max_iter=iterations, tol=1e-12)
    variants = {"bare": bare}
    for at in POINTS:
        torch.manual_seed(1)
        wrapped = equican.create_model(name, group="monotone", canonicalizer="deq", at=at,
                                       canonicalizer_options={"config": DEQConfig(train=solver, eval=solver)},
                                       **kwargs)
        wrapped.model.load_state_dict(bare.state_dict())
        # A small random head, so the update is not identically 0 (the solver runs its iterations regardless).
        for canon in wrapped.canonicalizers.values():
            torch.nn.init.normal_(canon.net.head.weight, std=1e-2)
        variants[f"dec@{len(at)}"] = wrapped
    return {k: v.to(device).eval() for k, v in variants.items()}


def time_all(models: dict[str, dict[str, torch.nn.Module]], inputs: dict[str, torch.Tensor], repeats: int,
             device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Seconds per forward pass of every variant of every model, interleaved over the rounds (one warm-up)."""
    times: dict[str, dict[str, list[float]]] = {m: {v: [] for v in variants} for m, variants in models.items()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the forced iterations never reach tolerance 1e-12
        for round_ in range(repeats + 1):
            for model_name, variants in models.items():
                for variant, model in variants.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    model(inputs[model_name])
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if round_:  # round 0 warms up
                        times[model_name][variant].append(time.perf_counter() - start)
    return times


def plot(rows: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    width = 0.35
    for i, variant in enumerate(("dec@1", "dec@2")):
        ax.bar([j + (i - 0.5) * width for j in range(len(names))], [rows[n][variant] for n in names], width,
               label=f"DEC at {variant[-1]} point(s)")
    ax.axhline(TARGET, color="tab:red", ls="--", lw=1, label=f"target {TARGET}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("time wrapped / bare")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and images (seconds)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=10, help="DEC solver iterations (forced)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args(argv)
    specs = QUICK_MODELS if args.quick else MODELS
    batch, size, repeats = (2, 32, 2) if args.quick else (args.batch, args.size, args.repeats)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    models = {name: build(name, kwargs, args.iterations, device) for name, kwargs in specs}
    generator = torch.Generator().manual_seed(0)
    inputs = {name: torch.rand(batch, 3, size, size, generator=generator).to(device) for name, _ in specs}
    times = time_all(models, inputs, repeats, device)
    rows = {}
    for name, variants in times.items():
        base = statistics.median(variants["bare"])
        rows[name] = {"bare_s": base, **{v: statistics.median(t) / base for v, t in variants.items() if v != "bare"}}
        print(f"{name:<32} bare {base:7.3f} s   DEC@1 {rows[name]['dec@1']:.3f}x   DEC@2 {rows[name]['dec@2']:.3f}x",
              flush=True)
    machine = {"device": str(device), "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": sys.version.split()[0], "load_average_before": load_before,
               "load_average_after": os.getloadavg()}
    first = specs[0][0]
    verdict = {variant: rows[first][variant] <= TARGET for variant in ("dec@1", "dec@2")}
    payload = {"quick": args.quick, "batch": batch, "size": size, "iterations": args.iterations,
               "repeats": repeats, "target": TARGET, "machine": machine, "rows": rows,
               "target_met_for": {first: verdict}, "times_s": times}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latent_overhead.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot(rows, args.out / "latent_overhead.png",
         f"latent DEC overhead, batch {batch}, {size}x{size}, {args.iterations} iterations, {device}")
    print(f"target wrapped/bare <= {TARGET} on {first}: "
          + ", ".join(f"{v} {'met' if ok else 'missed'} ({rows[first][v]:.3f})" for v, ok in verdict.items()))
    print(f"wrote {args.out / 'latent_overhead.json'} and latent_overhead.png")
    return payload


if __name__ == "__main__":
    main()
    sys.exit(0)
