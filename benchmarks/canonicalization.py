"""How far self-supervised training brings a canonicalizer toward invariance: DEC vs direct, per group, per step count.

Issue 12's frontier. Each (group, kind) trains a fresh canonicalizer alone, with no labels and no classifier, on the
canonicalization loss (``equican.canon.objective.canonicalization_loss``: element target, round-trip guard, centre
term) over Locally Scaled MNIST digits (one digit per 48×48 image, the compare task's inputs), Adam at ``--lr``,
batch 32, the update network 1→16→32 working at 24×24 (``resolution=24``). At each step count in ``--checkpoints``
it measures, on held-out test digits, under the group's own sampler:

* ``ratio``: ``canonicalization_error / identity's`` (the mean interior ``|canon(act(k, x)) − canon(x)|`` divided by
  ``|act(k, x) − x|``): 1 is no better than not canonicalizing, 0 is exactly invariant;
* ``spread``: ``canonical_spread / identity's``: near 1 means the canonical forms of different digits stay apart
  (no collapse); near 0 is a collapse, whatever the ratio says;
* for the DEC, the converged fraction at the evaluation settings (10 Anderson iterations, relative tolerance 0.01)
  and the mean residual.

Writes ``canonicalization.json`` and ``canonicalization.md`` (the table) to ``--out`` and prints the table.

    python benchmarks/canonicalization.py            # full: 4 groups x 2 kinds, 300 steps (about 20 min, 1 thread)
    python benchmarks/canonicalization.py --quick    # seconds (exercised by a test)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from equican import make_group, metrics
from equican.canon import DEQCanonicalizer, DEQConfig, DirectCanonicalizer, IdentityCanonicalizer, SolverSettings
from equican.canon.nets import UpdateNet
from equican.canon.objective import canonicalization_loss
from equican.config import apply_overrides, load_config
from equican.errors import ConvergenceWarning
from equican.report import machine_info, results_table
from equican.train import load_split

GROUPS = ("monotone", "scale", "affine", "rotation")
KINDS = ("dec", "direct")


def build(kind: str, group_name: str, seed: int) -> tuple[object, object]:
    """A fresh canonicalizer of ``kind`` over ``group_name`` (seeded)."""
    group = make_group(group_name)
    torch.manual_seed(seed)
    net = UpdateNet(1, group.unconstrained_shape, channels=(16, 32))
    if kind == "dec":
        config = DEQConfig(train=SolverSettings(max_iter=5),
                           eval=SolverSettings(max_iter=10, tol=0.01, stop_mode="rel"), residual_weight=1.0)
        return group, DEQCanonicalizer(group, net, config, resolution=24)
    return group, DirectCanonicalizer(group, net, resolution=24)


def measure(group, canon, held_out: torch.Tensor) -> dict[str, float]:
    """The ratio, spread and (DEC) convergence numbers of the module docstring on ``held_out``."""
    identity = IdentityCanonicalizer(group)
    with metrics.solver_statistics(canon) as record:
        error = metrics.canonicalization_error(canon, (held_out,), seed=1)
    row = {"error": error, "ratio": error / metrics.canonicalization_error(identity, (held_out,), seed=1),
           "spread": metrics.canonical_spread(canon, (held_out,)) / metrics.canonical_spread(identity, (held_out,))}
    row.update(metrics.summarize_solver_statistics(record))
    return row


def self_supervised_step(canon: Any, optimizer: torch.optim.Optimizer, train: torch.Tensor, batch: int,
                         gen: torch.Generator) -> None:
    """One optimizer step of ``canon`` on the canonicalization loss alone, for a batch of ``batch`` images drawn from
    ``train (N, C, H, W)`` with elements of its group, both from ``gen``."""
    x = train[torch.randint(len(train), (batch,), generator=gen)]
    terms = canonicalization_loss(canon, x, canon.group.sample(batch, generator=gen))
    loss = terms.loss.mean() + canon.regularizer(terms.result.info)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def run(kind: str, group_name: str, train: torch.Tensor, held_out: torch.Tensor, checkpoints: list[int], lr: float,
        batch: int, seed: int) -> list[dict[str, float]]:
    group, canon = build(kind, group_name, seed)
    optimizer = torch.optim.Adam(canon.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rows, started = [], time.perf_counter()
    for step in range(1, max(checkpoints) + 1):
        canon.train()
        self_supervised_step(canon, optimizer, train, batch, gen)
        if step in checkpoints:
            canon.eval()
            rows.append({"steps": step, "seconds": time.perf_counter() - started,
                         **measure(group, canon, held_out)})
    return rows


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """One markdown row per (run, step count)."""
    columns = [("ratio", "canonical-form error / identity's"), ("spread", "spread / identity's"),
               ("converged", "DEQ converged"), ("residual", "DEQ residual"), ("seconds", "training seconds")]
    rows = [(f"{name} @ {r['steps']} steps", r) for name, rs in results.items() for r in rs]
    return results_table(rows, columns, label="run")


def page(payload: dict[str, object]) -> str:
    """The markdown page, from the JSON alone: command, settings, machine and the table."""
    machine = payload["machine"]
    settings = payload["settings"]
    return (f"# Self-supervised canonicalization: the frontier\n\nCommand: `{payload['command']}` "
            f"({settings['threads']} thread, seed {settings['seed']}, Adam lr {settings['lr']:g}, batch "
            f"{settings['batch']}; load average {machine['load_average_before'][0]:.1f} before, "
            f"{machine['load_average_after'][0]:.1f} after, on a machine shared with other work).\n\n"
            f"Each canonicalizer trains alone on the canonicalization loss (no labels), on one-digit 48×48 Locally "
            f"Scaled MNIST composites, and is measured on held-out test digits under its own group's sampler. The "
            f"ratio is the canonical-form error over the identity's (1: no better than not canonicalizing); the "
            f"spread near 1 shows the canonical forms did not collapse (near 0: a collapse).\n\n"
            f"{table(payload['results'])}\n")


def _save(args: argparse.Namespace, argv: list[str] | None, load_before: list[float],
          results: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    shown = sys.argv[1:] if argv is None else argv
    payload = {"command": " ".join(["python benchmarks/canonicalization.py", *shown]),
               "machine": {**machine_info(), "load_average_before": load_before,
                           "load_average_after": list(os.getloadavg())},
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "canonicalization.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (args.out / "canonicalization.md").write_text(page(payload), encoding="utf-8")
    return payload


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: the bundled subset)")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[100, 300])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    overrides = ["data.train_limit=1000", "data.test_limit=200"]
    if args.data:
        overrides.append(f"data.root={json.dumps(args.data)}")
    if args.quick:
        args.groups, args.kinds, args.checkpoints = ["scale"], list(KINDS), [2, 3]
        overrides = ["data.train_limit=16", "data.test_limit=8"]
    base = apply_overrides(load_config("compare"), overrides)
    train, held_out = load_split(base.data, "train").x, load_split(base.data, "test").x
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {}
    load_before = list(os.getloadavg())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted per input in the table
            for group_name in args.groups:
                for kind in args.kinds:
                    name = f"{kind}[{group_name}]"
                    results[name] = run(kind, group_name, train, held_out, sorted(args.checkpoints), args.lr,
                                        args.batch if not args.quick else 4, args.seed)
                    print(table({name: results[name]}).splitlines()[-1], flush=True)
                    # Written after every run, so that a failure later keeps what was measured.
                    _save(args, argv, load_before, results)
    finally:
        torch.set_num_threads(threads)
    payload = _save(args, argv, load_before, results)
    text = table(results)
    print(text)
    return payload


if __name__ == "__main__":
    main()
