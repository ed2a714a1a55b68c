"""``equican compare``: which group approximates real local scaling best, on one dataset and one model.

One command trains the same model (same data split, optimizer, epochs, seeds) with the DEC canonicalizer for each
requested group, plus the ``plain`` and ``augment`` baselines, and evaluates every run on the same test samples:

* accuracy on clean test data (every digit at scale 1 for Locally Scaled MNIST; untransformed digits for the
  transformed-MNIST datasets) and on the transformed test data (the locally scaled composites);
* the local-scale error (Locally Scaled MNIST);
* the invariance error under every evaluated group's sampler: a cross table, trained-for × evaluated-under.

Outputs in ``out``: ``compare.md`` (the page: command, settings, machine, wall time, the tables, which are also
printed, and the figures), ``compare.json`` and ``compare.csv`` (every number of
every run), ``compare.png`` (grouped bars with the spread over seeds) and ``canonical_forms.png`` (the same test
images canonicalized by each group's DEC), and one directory per run with its checkpoint and metrics.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import metrics
from .config import TrainConfig, apply_overrides
from .data import TransformedMNIST
from .errors import ConfigError, ConvergenceWarning
from .group import list_groups, make_group
from .report import canonicalize, describe_machine, image_grid, machine_info, results_table
from .train import CHECKPOINT, SplitData, load_checkpoint, load_split, train

__all__ = ["DEFAULT_GROUPS", "BASELINES", "Run", "plan", "compare", "tables", "page"]

DEFAULT_GROUPS: tuple[str, ...] = ("monotone", "affine", "scale", "rotation")
"""The groups compared by default: the flagship and the global approximations of local scaling."""
BASELINES: tuple[str, ...] = ("plain", "augment")
"""The baselines that can be added: no invariance, and augmentation by ``augment_group``."""
# Settings of --quick: a pipeline check in seconds, not a result.
QUICK: tuple[str, ...] = ("data.train_limit=48", "data.test_limit=12", "optim.epochs=1", "optim.batch_size=16",
                          "eval.limit=6", "eval.rescalings=2")


@dataclass(frozen=True)
class Run:
    """One entry of the comparison: a name for the tables and its overrides of the base config."""

    name: str
    overrides: tuple[str, ...]


def plan(groups: Sequence[str] = DEFAULT_GROUPS, baselines: Sequence[str] = BASELINES, *,
         augment_group: str = "monotone") -> list[Run]:
    """The runs of a comparison: the baselines first, then ``dec[<group>]`` per group.

    Raises:
        UnknownNameError: an unregistered group. ConfigError: an unknown baseline, or nothing to run.
    """
    for name in (*groups, augment_group):
        make_group(name)  # an unknown name fails here, with the registry's closest match
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"compare: unknown baseline {unknown[0]!r}; expected some of {BASELINES}")
    if not groups and not baselines:
        raise ConfigError("compare: expected at least one group or baseline")
    # The base config's method options are the DEC's (e.g. its prior weight); the baselines take none. Group
    # options are dropped: each group runs at its defaults, since one group's arguments do not fit another.
    bare = ("method.options={}", "method.group_options={}")
    runs = [Run("plain", ("method.name=plain", *bare))] if "plain" in baselines else []
    if "augment" in baselines:
        runs.append(Run(f"augment[{augment_group}]", ("method.name=augment", f"method.group={augment_group}", *bare)))
    runs += [Run(f"dec[{g}]", ("method.name=dec", f"method.group={g}", "method.group_options={}")) for g in groups]
    return runs


def _evaluate_run(model: torch.nn.Module, config: TrainConfig, data: SplitData, eval_groups: Sequence[str],
                  base_metrics: dict[str, Any]) -> dict[str, Any]:
    n = base_metrics["samples"]
    x, y = data.x[:n], data.y[:n]
    row = {"accuracy": base_metrics["accuracy"]}
    if "local_scale_error" in base_metrics:
        row["local_scale_error"] = base_metrics["local_scale_error"]
    if "accuracy_unscaled" in base_metrics:  # Locally Scaled MNIST: the run's evaluation measured it already
        row["accuracy_clean"] = base_metrics["accuracy_unscaled"]
    with warnings.catch_warnings():
        # The run's own evaluation counted non-converged DEC batches (nonconverged_batches in its metrics.json).
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(data.source, TransformedMNIST):
            clean = torch.stack([data.source.untransformed(i) for i in range(n)])
            row["accuracy_clean"] = metrics.accuracy(model, (clean, y), batch_size=config.eval.batch_size)
        for name in eval_groups:
            row[f"invariance[{name}]"] = metrics.invariance_error(model, (x,), make_group(name),
                                                                  seed=config.eval.seed,
                                                                  batch_size=config.eval.batch_size)
    return row


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(base: TrainConfig, *, groups: Sequence[str] = DEFAULT_GROUPS, baselines: Sequence[str] = BASELINES,
            eval_groups: Sequence[str] | None = None, augment_group: str = "monotone", seeds: Sequence[int] = (0,),
            out: str | Path = "outputs/compare", progress: bool = True, figure_count: int = 8,
            command: str | None = None) -> dict[str, Any]:
    """Train and evaluate every run of [`plan`][equican.compare.plan] for every seed; write tables, data, figures.

    Args:
        base: the shared config (data, model, optimizer, eval); each run changes only its method and group.
        groups: the groups the DEC runs canonicalize over.
        baselines: some of [`BASELINES`][equican.compare.BASELINES].
        eval_groups: the groups of the invariance cross table (default: ``groups``, else every registered group).
        augment_group: the group of the ``augment`` baseline.
        seeds: one training run per seed and entry; tables show mean ± sample standard deviation.
        out: output directory.
        progress: progress bars (over runs, and each run's epochs).
        figure_count: test images in the canonical-forms panel.
        command: how the comparison was started, for the page (the CLI passes its command line).

    Returns:
        ``{"runs": {name: [per-seed metrics]}, "summary": {name: {metric: (mean, spread)}}, ...}`` as in
        ``compare.json``.

    Raises:
        UnknownNameError, ConfigError, DataError: before any training, for a bad name, value or file.
    """
    if not isinstance(base, TrainConfig):
        raise ConfigError(f"compare: expected a TrainConfig, got {type(base).__name__}")
    runs = plan(groups, baselines, augment_group=augment_group)
    eval_groups = list(eval_groups) if eval_groups is not None else (list(groups) or list_groups())
    for name in eval_groups:
        make_group(name)
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("compare: expected at least one seed")
    out = Path(out)
    configs = {(run.name, seed): apply_overrides(base, [*run.overrides, f"seed={seed}",
                                                        f"out={json.dumps(str(out / run.name / f'seed{seed}'))}",
                                                        "eval.enabled=true", f"progress={str(progress).lower()}"])
               for run in runs for seed in seeds}  # every config is validated before the first run trains
    machine, started_all = machine_info(), time.perf_counter()
    test = load_split(base.data, "test")
    results: dict[str, list[dict[str, Any]]] = {}
    canonicalizers: dict[str, torch.nn.Module] = {}  # the first seed's DECs, for the canonical-forms panel
    bar = tqdm(list(configs.items()), desc="compare", unit="run", disable=not progress, dynamic_ncols=True)
    for (name, seed), config in bar:
        bar.set_postfix(run=name, seed=seed)
        started = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - started
        _, objective, _ = load_checkpoint(Path(config.out) / CHECKPOINT)
        row = _evaluate_run(objective.model, config, test, eval_groups, result["eval"])
        if seed == seeds[0] and name.startswith("dec["):
            canonicalizers[name] = objective.model.canonicalizer
        results.setdefault(name, []).append({"seed": seed, "train_seconds": seconds, **row})
    bar.close()
    summary = {name: {key: _mean_spread([r[key] for r in rows]) for key in rows[0] if key != "seed"}
               for name, rows in results.items()}
    machine["load_average_end"] = list(os.getloadavg())
    payload = {"command": command, "machine": machine, "wall_seconds": time.perf_counter() - started_all,
               "base": base.to_dict(), "groups": list(groups), "baselines": list(baselines),
               "eval_groups": eval_groups, "seeds": seeds, "runs": results, "summary": summary}
    _write(payload, out)
    _figures(payload, canonicalizers, test, out, figure_count)
    return payload


_MAIN_COLUMNS = (("accuracy_clean", "accuracy (clean)"), ("accuracy", "accuracy (transformed)"),
                 ("local_scale_error", "local-scale error"), ("train_seconds", "seconds per run"))


def tables(payload: dict[str, Any]) -> str:
    """The markdown of ``compare.md``: the main table and the invariance cross table."""
    summary = payload["summary"]
    rows = list(summary.items())
    main = results_table(rows, _MAIN_COLUMNS, label="run")
    cross = results_table(rows, [(f"invariance[{g}]", g) for g in payload["eval_groups"]],
                          label="trained for \\ evaluated under")
    seeds = payload["seeds"]
    return (f"Mean ± sample standard deviation over seeds {seeds}.\n\n{main}\n\n"
            f"Invariance error (lower is better) of each run under each group's sampler:\n\n{cross}\n")


def page(payload: dict[str, Any]) -> str:
    """The markdown of ``compare.md``, from the JSON alone: how it ran (command, machine, wall time, settings), the
    tables of [`tables`][equican.compare.tables], and the figures."""
    base = payload["base"]
    data, model, optim, method = base["data"], base["model"], base["optim"], base["method"]
    runs = sum(len(rows) for rows in payload["runs"].values())
    command = payload.get("command") or "the Python API, `equican.compare.compare`"
    setting = (f"Data: `{data['dataset']}` {json.dumps(data['options'])}, from "
               f"{'`' + data['root'] + '`' if data['root'] else 'the bundled MNIST subset'} "
               f"({data['train_limit']} training and {data['test_limit']} test digits read; "
               f"{base['eval']['limit']} test samples evaluated). Model: `{model['name']}` {json.dumps(model['options'])}. "
               f"DEC options: {json.dumps(method['options'])}. Optimizer: {optim['epochs']} epochs, batch "
               f"{optim['batch_size']}, lr {optim['lr']:g}, {optim['schedule']} schedule.")
    return (f"# equican compare\n\nCommand: `{command}`. {runs} training runs in "
            f"{payload['wall_seconds'] / 60:.1f} minutes of wall time.\n\n{setting}\n\n"
            f"Machine: {describe_machine(payload['machine'])}\n\n{tables(payload)}\n"
            f"![accuracy and errors per run](compare.png)\n\n"
            f"![the same test images canonicalized by each group's DEC](canonical_forms.png)\n")


def _write(payload: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print()
    print(tables(payload))
    (out / "compare.md").write_text(page(payload), encoding="utf-8")
    (out / "compare.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    keys = sorted({k for rows in payload["runs"].values() for r in rows for k in r})
    with open(out / "compare.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *keys])
        for name, rows in payload["runs"].items():
            for r in rows:
                writer.writerow([name, *(r.get(k, "") for k in keys)])


def _figures(payload: dict[str, Any], canonicalizers: dict[str, torch.nn.Module], test: SplitData, out: Path,
             count: int) -> None:
    # A pyplot-free Figure: saving it needs no backend, so the caller's matplotlib backend is left alone.
    from matplotlib.figure import Figure

    summary = payload["summary"]
    names = list(summary)
    panels = [(k, t) for k, t in _MAIN_COLUMNS[:3] if all(k in summary[n] for n in names)]
    panels += [(f"invariance[{g}]", f"invariance error under {g}") for g in payload["eval_groups"]]
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        ax.bar(range(len(names)), [summary[n][key][0] for n in names], yerr=[summary[n][key][1] for n in names],
               capsize=3, color=["tab:gray" if not n.startswith("dec") else "tab:blue" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=110)
    # The same test images, canonicalized by each group's DEC (first seed).
    count = min(count, test.x.shape[0])
    images = test.x[:count]
    grid = [("input", images), *((name, canonicalize(c, images)) for name, c in canonicalizers.items())]
    if len(grid) > 1:
        figure = image_grid(grid, title="the same test images canonicalized by each group's DEC")
        figure.savefig(out / "canonical_forms.png", dpi=110)
