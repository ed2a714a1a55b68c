"""Training benchmark: plain, augmentation, invariance loss, optimization canonicalization and DEC, 3 seeds each.

Every method trains the same small CNN with the same optimizer, epochs and data, on a CPU-sized Locally Scaled
MNIST (two digits per composite, so the scaling is really local; see ``BASE`` for every setting), and is evaluated
on the same test composites: top-1 accuracy on the rescaled test set and with every digit at scale 1, the paper's
monotone invariance error (R = 8, strength 0.25) and the local-scale error (k = 3 rescalings). Mean and sample
standard deviation over the seeds.

Target (issue 4): DEC beats augmentation by at least 1 point of accuracy and halves its local-scale error.

Data: the full MNIST in ``../shared/data/mnist`` beside the checkout when it is there (``--data`` to choose), else the
bundled subset (then the numbers are not comparable: the JSON records which was used).

Usage::

    python benchmarks/training.py                 # the documented configuration (~1 h on 2 cores)
    python benchmarks/training.py --quick         # a pipeline check in seconds (what the tests run)
    python benchmarks/training.py --methods plain dec --seeds 0

Writes ``results.json`` (every run: config, history, metrics, seconds; the machine), ``results.md`` (the table) and
``training.png`` (bars with spread) to ``--out`` (default ``outputs/bench/training``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from equican.config import TrainConfig, apply_overrides
from equican.report import METRIC_COLUMNS, results_table
from equican.train import train

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

#: The documented configuration, as overrides of the defaults of :class:`equican.config.TrainConfig`.
BASE: tuple[str, ...] = (
    "data.dataset=local_scale",
    "data.options.digits=2", "data.options.cell=36", "data.options.canvas=72",
    "data.options.scale_range=[0.4, 1.25]",
    "data.train_limit=6000", "data.test_limit=1000",
    "model.name=cnn", "model.options.channels=[16, 32, 64]",
    "optim.epochs=3", "optim.batch_size=32", "optim.lr=2e-3", "optim.warmup_steps=50",
    "eval.limit=500", "eval.batch_size=50", "eval.rescalings=3",
    # The paper's invariance error for every method, plain included (its default is the method's own group).
    "eval.invariance_group=monotone", "eval.invariance_options.monotone.cells=8",
    "eval.invariance_options.monotone.strength=0.25",
)
#: Per-method settings on top of BASE. The three canonicalizers share one update network size.
METHODS: dict[str, tuple[str, ...]] = {
    "plain": ("method.name=plain",),
    "augment": ("method.name=augment",),
    "invariance": ("method.name=invariance",),
    "optimization": ("method.name=optimization", "method.options.channels=[16, 32]", "method.options.steps=3",
                     "method.options.prior_weight=10"),
    "dec": ("method.name=dec", "method.options.channels=[16, 32]", "method.options.prior_weight=10"),
}
QUICK: tuple[str, ...] = ("data.train_limit=48", "data.test_limit=12", "optim.epochs=1", "optim.batch_size=16",
                          "eval.limit=6", "eval.rescalings=2")
SEEDS = (0, 1, 2)


def run_config(method: str, seed: int, *, out: Path, data: str | None, quick: bool,
               base: tuple[str, ...] = BASE, methods: dict[str, tuple[str, ...]] = METHODS,
               quick_overrides: tuple[str, ...] = QUICK) -> TrainConfig:
    """The config of one run (``base``, ``methods`` and ``quick_overrides``: another benchmark's settings)."""
    overrides = [*base, *methods[method], f"seed={seed}", f"out={json.dumps(str(out / f'{method}-seed{seed}'))}",
                 "progress=false"]
    if data is not None:
        overrides.append(f"data.root={json.dumps(str(data))}")
    if quick:
        overrides += quick_overrides
    return apply_overrides(TrainConfig(), overrides)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one run) of every metric over a method's seeds."""
    keys = [key for key, _ in METRIC_COLUMNS if all(key in r["eval"] for r in runs)] + ["train_seconds"]
    out = {}
    for key in keys:
        values = [r["train_seconds"] if key == "train_seconds" else r["eval"][key] for r in runs]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def verdict(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's target, checked on the means: lines saying met or missed, and by how much."""
    if "dec" not in summary or "augment" not in summary:
        return ["target not checked: needs both dec and augment"]
    dec, aug = summary["dec"], summary["augment"]
    gain = dec["accuracy"][0] - aug["accuracy"][0]
    ratio = dec["local_scale_error"][0] / max(aug["local_scale_error"][0], 1e-12)
    return [f"accuracy: DEC - augmentation = {100 * gain:+.2f} points (target >= +1): "
            f"{'met' if gain >= 0.01 else 'missed'}",
            f"local-scale error: DEC / augmentation = {ratio:.3f} (target <= 0.5): "
            f"{'met' if ratio <= 0.5 else 'missed'}"]


def plot(summary: dict[str, dict[str, Any]], path: Path, title: str,
         columns: tuple[tuple[str, str], ...] = METRIC_COLUMNS) -> None:
    """One bar panel (mean, spread) per column of ``columns`` that every method has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, name) for key, name in columns if all(key in s for s in summary.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    names = list(summary)
    for ax, (key, name) in zip(axes[0], panels):
        means = [summary[m][key][0] for m in names]
        spreads = [summary[m][key][1] for m in names]
        ax.bar(range(len(names)), means, yerr=spreads, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def configuration_section(payload: dict[str, Any]) -> str:
    """The page's last section: the base overrides and each method's, from ``payload``."""
    settings = "\n".join(f"- `{item}`" for item in payload["base"])
    methods = "\n".join(f"- {name}: " + ", ".join(f"`{o}`" for o in options)
                         for name, options in payload["methods"].items())
    return f"## Configuration (overrides of `TrainConfig()`)\n\n{settings}\n\nPer method:\n\n{methods}\n"


def report(table: str, lines: list[str], payload: dict[str, Any]) -> str:
    """The markdown page: configuration, machine, table, target (copied to docs/results/training.md)."""
    machine = payload["machine"]
    return (f"# Training benchmark: Locally Scaled MNIST\n\n"
            f"Written by `benchmarks/training.py`{' --quick' if payload['quick'] else ''}. Data: {payload['data']}. "
            f"Seeds: {payload['seeds']}. Mean ± sample standard deviation over the seeds.\n\n"
            f"Machine: {machine['cpus']} CPUs ({machine['processor']}), {machine['torch_threads']} torch threads, "
            f"torch {machine['torch']}, Python {machine['python']}; load average at the end "
            f"{', '.join(f'{v:.2f}' for v in machine['load_average'])}.\n\n"
            f"{table}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n\n"
            "![accuracy and errors per method](training.png)\n\n" + configuration_section(payload))


def write_outputs(payload: dict[str, Any], out: Path) -> None:
    """Summary, table, target check, results.json/.md and the plot, from the runs in ``payload``."""
    summary = {method: summarize(r) for method, r in payload["runs"].items()}
    table = results_table(list(summary.items()), [*METRIC_COLUMNS, ("train_seconds", "seconds per run")])
    lines = verdict(summary)
    payload.update(summary=summary, target=lines)
    print()
    print(table)
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "runs.partial.json").unlink(missing_ok=True)
    (out / "results.md").write_text(report(table, lines, payload), encoding="utf-8")
    plot(summary, out / "training.png",
         f"Locally Scaled MNIST (2 digits, 72x72), small CNN, {len(payload['seeds'])} seed(s)")
    print(f"\nwrote {out / 'results.json'}, results.md and training.png")


def make_parser(description: str, methods: dict[str, Any], default_out: Path) -> argparse.ArgumentParser:
    """The command line shared by the training benchmarks: --quick, --methods, --seeds, --data, --out, --from-json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks the pipeline, measures nothing")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: ../shared/data/mnist if present, "
                                                    "else the bundled subset)")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--from-json", type=Path, default=None, metavar="RESULTS",
                        help="train nothing: rewrite the table, page and plot from an earlier results.json")
    return parser


def data_root(args: argparse.Namespace) -> str | None:
    """The MNIST directory of a run: --data, else the shared full MNIST if present; the bundled subset (None) in quick
    mode, which must run anywhere."""
    if args.quick:
        return None
    return args.data if args.data is not None else (str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None)


def run_all(args: argparse.Namespace, data: str | None, config_of: Callable[..., TrainConfig],
            measure: Callable[[dict[str, Any], TrainConfig], str]) -> dict[str, list[dict[str, Any]]]:
    """Train every method and seed of ``args``; ``measure(run, config)`` adds to a run's record and returns the line
    printed for it. Every finished run is written to ``runs.partial.json`` at once."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for method in args.methods:
        for seed in args.seeds:
            config = config_of(method, seed, out=args.out, data=data, quick=args.quick)
            started = time.perf_counter()
            result = train(config, overwrite=True)  # a rerun of the benchmark replaces its runs
            run = {"seed": seed, "train_seconds": time.perf_counter() - started, "eval": result["eval"],
                   "history": result["history"], "config": result["config"]}
            line = measure(run, config)
            runs.setdefault(method, []).append(run)
            print(f"{method:<16} seed {seed}: {line} ({run['train_seconds']:.0f} s)", flush=True)
            # An interrupted benchmark keeps what it measured.
            (args.out / "runs.partial.json").write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return runs


def main(argv: list[str] | None = None) -> int:
    args = make_parser(__doc__.split("\n\n")[0], METHODS, ROOT / "outputs" / "bench" / "training").parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        write_outputs(json.loads(args.from_json.read_text(encoding="utf-8")), args.out)
        return 0
    data = data_root(args)

    def measure(run: dict[str, Any], config: TrainConfig) -> str:
        e = run["eval"]
        return (f"accuracy {e['accuracy']:.4f}, local-scale error {e['local_scale_error']:.4f}, invariance error "
                f"{e['invariance_error']:.4f}")

    runs = run_all(args, data, run_config, measure)
    machine = {"load_average": os.getloadavg(), "platform": platform.platform(),
               "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0], "torch": torch.__version__}
    write_outputs({"quick": args.quick, "data": data or "bundled subset", "base": list(BASE), "methods": METHODS,
                   "seeds": args.seeds, "machine": machine, "runs": runs}, args.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
