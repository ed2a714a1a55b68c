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

Every output file is written atomically (a reader sees the old file or the new one), ``compare.json`` last, so a
``compare.json`` means a finished comparison. ``out`` is locked while a comparison or a merge writes there (a
second one into the same directory is refused), and rerunning a comparison into the same ``out`` replaces it: its
runs train again with ``overwrite``. Each row of ``compare.json`` records its run's seed and ``config_hash``, the
identity by which [`merge`][equican.compare.merge] counts every run once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import metrics
from ._atomic import write_atomic, write_text_atomic
from ._merge import IDENTITY, config_hash, read_sources
from ._paths import require_path, require_writable_dir
from ._rundir import RunLock
from .config import TrainConfig, apply_overrides
from .data import LocalScaleMNIST, TransformedMNIST
from .errors import ConfigError, ConvergenceWarning, DataError
from .group import list_groups, make_group
from .report import canonical_forms_figure, canonicalize, describe_machine, image_grid, machine_info, results_table
from .train import CHECKPOINT, SplitData, load_checkpoint, load_split, train

__all__ = ["DEFAULT_GROUPS", "BASELINES", "KINDS", "OUTSIDE_SCALES", "Run", "plan", "compare", "merge", "tables",
           "page"]

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


KINDS: tuple[str, ...] = ("dec", "direct")
"""The canonicalizer methods a comparison can run per group: the DEQ and its single-pass ablation."""
OUTSIDE_SCALES: tuple[tuple[float, float], ...] = ((0.25, 0.4), (1.7, 2.2))
"""Scale ranges outside the default training range (0.4, 1.7), where Locally Scaled MNIST accuracy is also measured."""


def plan(groups: Sequence[str] = DEFAULT_GROUPS, baselines: Sequence[str] = BASELINES, *,
         augment_group: str | None = None, kinds: Sequence[str] = ("dec",)) -> list[Run]:
    """The runs of a comparison: the baselines first, then ``<kind>[<group>]`` per kind and group.

    ``augment_group`` (the group of the ``augment`` baseline) defaults to the first of ``groups``.

    Raises:
        UnknownNameError: an unregistered group. ConfigError: an unknown baseline or kind, nothing to run, or an
            augment baseline with no group to augment with.
    """
    if "augment" in baselines and augment_group is None:
        if not groups:
            raise ConfigError("compare: expected an augment_group for the augment baseline (no groups to take the "
                              "first of), got none")
        augment_group = groups[0]
    for name in (*groups, *([augment_group] if "augment" in baselines else [])):
        make_group(name)  # an unknown name fails here, with the registry's closest match
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"compare: unknown baseline {unknown[0]!r}; expected some of {BASELINES}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"compare: unknown kind {bad[0]!r}; expected some of {KINDS}")
    if not (groups and kinds) and not baselines:
        raise ConfigError("compare: expected at least one group and kind, or a baseline")
    # The base config's method options are the DEC's (e.g. its prior weight); the baselines take none, and the
    # direct kind takes those it shares with the DEC. Group options are dropped: each group runs at its defaults,
    # since one group's arguments do not fit another.
    bare = ("method.options={}", "method.group_options={}")
    runs = [Run("plain", ("method.name=plain", *bare))] if "plain" in baselines else []
    if "augment" in baselines:
        runs.append(Run(f"augment[{augment_group}]", ("method.name=augment", f"method.group={augment_group}", *bare)))
    runs += [Run(f"{kind}[{g}]", (f"method.name={kind}", f"method.group={g}", "method.group_options={}"))
             for kind in kinds for g in groups]
    return runs


def _evaluate_run(model: torch.nn.Module, config: TrainConfig, data: SplitData, eval_groups: Sequence[str],
                  base_metrics: dict[str, Any], outside: Sequence[tuple[tuple[float, float], SplitData]]
                  ) -> dict[str, Any]:
    n = base_metrics["samples"]
    x, y = data.x[:n], data.y[:n]
    row = {key: base_metrics[key] for key in _COPIED if key in base_metrics}
    if "accuracy_unscaled" in base_metrics:  # Locally Scaled MNIST: the run's evaluation measured it already
        row["accuracy_clean"] = base_metrics["accuracy_unscaled"]
    if "canon_invariance" in base_metrics:
        row["canon_ratio"] = base_metrics["canon_invariance"] / base_metrics["canon_invariance_identity"]
        row["spread_ratio"] = base_metrics["canon_spread"] / base_metrics["canon_spread_identity"]
    with warnings.catch_warnings():
        # The run's own evaluation counted non-converged DEC batches (nonconverged_batches in its metrics.json).
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(data.source, TransformedMNIST):
            clean = torch.stack([data.source.untransformed(i) for i in range(n)])
            row["accuracy_clean"] = metrics.accuracy(model, (clean, y), batch_size=config.eval.batch_size)
        for (low, high), split in outside:
            row[f"accuracy[{low:g}-{high:g}]"] = metrics.accuracy(model, (split.x[:n], split.y[:n]),
                                                                 batch_size=config.eval.batch_size)
        for name in eval_groups:
            row[f"invariance[{name}]"] = metrics.invariance_error(model, (x,), make_group(name),
                                                                  seed=config.eval.seed,
                                                                  batch_size=config.eval.batch_size)
    return row


_COPIED = ("accuracy", "local_scale_error", "solver_converged", "solver_residual", "canon_invariance",
           "canon_invariance_identity", "canon_spread", "canon_spread_identity", "canon_ink", "canon_radius",
           "canon_pair_ratio")


def _kind_options(run: Run, base: TrainConfig) -> tuple[str, ...]:
    """The base config's method options that a canonicalizer run's method takes (the direct kind has no solver
    settings; the base options are the DEC's)."""
    kind = run.name.split("[")[0]
    if kind not in KINDS:
        return ()
    from .methods import method_options

    accepted = set(method_options(kind))
    kept = {k: v for k, v in base.method.options.items() if k in accepted}
    return (f"method.options={json.dumps(kept)}",)


def _outside_splits(base: TrainConfig, ranges: Sequence[tuple[float, float]]
                    ) -> list[tuple[tuple[float, float], SplitData]]:
    """The test split redrawn at each scale range outside training (Locally Scaled MNIST only)."""
    if base.data.dataset != "local_scale":
        return []
    splits = []
    for low, high in ranges:
        data = dataclasses.replace(base.data, options={**base.data.options, "scale_range": [low, high]})
        splits.append(((low, high), load_split(data, "test")))
    return splits


def _mean_spread(values: list[float]) -> tuple[float, float]:
    if not all(math.isfinite(v) for v in values):  # e.g. a DEQ residual that never became finite (inf)
        return sum(values) / len(values), (math.nan if len(values) > 1 else 0.0)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{run: {metric: (mean, spread)}}`` over each run's rows (a metric some rows lack: over those that have it)."""
    summary = {}
    for name, rows in runs.items():
        keys = dict.fromkeys(k for r in rows for k in r if k not in IDENTITY)
        summary[name] = {key: _mean_spread([r[key] for r in rows if key in r]) for key in keys}
    return summary


def compare(base: TrainConfig, *, groups: Sequence[str] = DEFAULT_GROUPS, baselines: Sequence[str] = BASELINES,
            eval_groups: Sequence[str] | None = None, augment_group: str | None = None, seeds: Sequence[int] = (0,),
            kinds: Sequence[str] = ("dec",), outside_scales: Sequence[tuple[float, float]] = OUTSIDE_SCALES,
            out: str | Path = "outputs/compare", progress: bool = True, figure_count: int = 8,
            command: str | None = None) -> dict[str, Any]:
    """Train and evaluate every run of [`plan`][equican.compare.plan] for every seed; write tables, data, figures.

    Args:
        base: the shared config (data, model, optimizer, eval); each run changes only its method and group.
        groups: the groups the DEC runs canonicalize over.
        baselines: some of [`BASELINES`][equican.compare.BASELINES].
        eval_groups: the groups of the invariance cross table (default: ``groups``, else every registered group).
        augment_group: the group of the ``augment`` baseline (default: the first of ``groups``).
        kinds: canonicalizer methods run per group, some of [`KINDS`][equican.compare.KINDS] (the DEQ, and the
            direct single pass at the same training steps).
        outside_scales: scale ranges outside training where accuracy is measured too (Locally Scaled MNIST).
        seeds: one training run per seed and entry; tables show mean ± sample standard deviation.
        out: output directory (locked while the comparison runs; a previous comparison there is replaced).
        progress: progress bars (over runs, and each run's epochs).
        figure_count: test images in the canonical-forms panel.
        command: how the comparison was started, for the page (the CLI passes its command line).

    Returns:
        ``{"runs": {name: [per-seed metrics]}, "summary": {name: {metric: (mean, spread)}}, ...}`` as in
        ``compare.json``.

    Raises:
        UnknownNameError, ConfigError, DataError: before any training, for a bad name, value or file; a
            ConfigError too when another comparison is writing to ``out``.
    """
    if not isinstance(base, TrainConfig):
        raise ConfigError(f"compare: expected a TrainConfig, got {type(base).__name__}")
    out = require_path(out, where="compare", name="out")
    runs = plan(groups, baselines, augment_group=augment_group, kinds=kinds)
    eval_groups = list(eval_groups) if eval_groups is not None else (list(groups) or list_groups())
    for name in eval_groups:
        make_group(name)
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("compare: expected at least one seed")
    configs = {(run.name, seed): apply_overrides(base, [*run.overrides, *_kind_options(run, base), f"seed={seed}",
                                                        f"out={json.dumps(str(out / run.name / f'seed{seed}'))}",
                                                        "eval.enabled=true", f"progress={str(progress).lower()}"])
               for run in runs for seed in seeds}  # every config is validated before the first run trains
    machine, started_all = machine_info(), time.perf_counter()
    test = load_split(base.data, "test")
    outside = _outside_splits(base, outside_scales)
    with RunLock(out, where="compare"):
        payload = _train_all(configs, seeds, test, eval_groups, outside, progress)
        machine["load_average_end"] = list(os.getloadavg())
        payload = {"command": command, "machine": machine, "wall_seconds": time.perf_counter() - started_all,
                   "base": base.to_dict(), "groups": list(groups), "baselines": list(baselines), "kinds": list(kinds),
                   "eval_groups": eval_groups, "seeds": seeds, **payload}
        _figures(payload, payload.pop("canonicalizers"), test, out, figure_count)
        _write(payload, out)
    return payload


def _train_all(configs: dict[tuple[str, int], TrainConfig], seeds: list[int], test: SplitData,
               eval_groups: list[str], outside: Any, progress: bool) -> dict[str, Any]:
    """Train and evaluate every ``(run, seed)``: ``runs``, ``summary`` and the first seed's canonicalizers."""
    results: dict[str, list[dict[str, Any]]] = {}
    canonicalizers: dict[str, torch.nn.Module] = {}  # the first seed's DECs, for the canonical-forms panel
    # Bars only on a terminal (disable=None); a piped log gets one line per run instead.
    bar = tqdm(list(configs.items()), desc="compare", unit="run", disable=None if progress else True,
               dynamic_ncols=True)
    for (name, seed), config in bar:
        bar.set_postfix(run=name, seed=seed)
        tqdm.write(f"== {name}, seed {seed} -> {config.out}")
        sys.stdout.flush()
        started = time.perf_counter()
        result = train(config, overwrite=True)  # rerunning a comparison replaces it (its --out is locked)
        seconds = time.perf_counter() - started
        _, objective, _ = load_checkpoint(Path(config.out) / CHECKPOINT)
        row = _evaluate_run(objective.model, config, test, eval_groups, result["eval"], outside)
        if seed == seeds[0] and name.split("[")[0] in KINDS:
            canonicalizers[name] = objective.model.canonicalizer
        results.setdefault(name, []).append({"seed": seed, "config_hash": config_hash(config),
                                             "train_seconds": seconds, **row})
    bar.close()
    return {"runs": results, "summary": _summary(results), "canonicalizers": canonicalizers}


def merge(sources: Sequence[str | Path], *, out: str | Path, command: str | None = None) -> dict[str, Any]:
    """Join comparisons that ran as separate processes (same base config and evaluation) into one page.

    Each source is the ``out`` directory of a finished [`compare`][equican.compare.compare]; their runs are pooled
    (a run name present in two sources pools its seeds), the summary is recomputed, and the page, JSON, CSV and
    figures are written to ``out`` (the canonical-forms panels load the first seed's checkpoints from the sources).

    Every input is checked before anything is written: each ``compare.json`` against its schema, the sources
    against each other (each directory once, one base config and evaluation, each run and seed in one source only,
    so no seed is counted twice; none of them equal to or inside ``out``), the checkpoints the figures load, and the
    test data.

    Raises:
        DataError: a source without ``compare.json``, a corrupt or partial one (the message names the file and the
            field), or a checkpoint it refers to that is missing or unreadable. ConfigError: no sources, a source
            given twice or equal to or inside ``out``, sources with different base configs or evaluation groups,
            one run's seed in two sources, an empty ``out``, or another comparison writing to ``out``.
    """
    out = require_writable_dir(out, where="compare --merge", name="out")
    if command is not None and not isinstance(command, str):
        raise ConfigError(f"compare --merge: expected command to be a string or None, got {type(command).__name__}")
    payloads = read_sources(sources, out=out)
    first = payloads[0][1]
    runs: dict[str, list[dict[str, Any]]] = {}
    homes: dict[tuple[str, int], Path] = {}
    for source, p in payloads:
        for name, rows in p["runs"].items():
            runs.setdefault(name, []).extend(rows)
            homes.update({(name, r["seed"]): source for r in rows})
    for rows in runs.values():
        rows.sort(key=lambda r: r["seed"])
    checkpoints = {}  # the first seed's checkpoint of every canonicalizer run, for the figures
    for name, rows in runs.items():
        if name.split("[")[0] in KINDS:
            seed = rows[0]["seed"]
            path = homes[(name, seed)] / name / f"seed{seed}" / CHECKPOINT
            if not path.is_file():
                raise DataError(f"compare --merge: expected the checkpoint of {name} seed {seed} that "
                                f"{homes[(name, seed)] / 'compare.json'} lists, at {path}, got no such file")
            checkpoints[name] = path
    canonicalizers = {name: load_checkpoint(path)[1].model.canonicalizer for name, path in checkpoints.items()}
    test = load_split(TrainConfig.from_dict(first["base"], source="compare.json").data, "test")
    commands = [p.get("command") or "the Python API" for _, p in payloads]
    payload = {**first, "command": " ; ".join([*commands, command] if command else commands), "sources": commands,
               "wall_seconds": max(p["wall_seconds"] for _, p in payloads),
               "groups": sorted({g for _, p in payloads for g in p["groups"]}),
               "kinds": sorted({k for _, p in payloads for k in p.get("kinds", ["dec"])}),
               "seeds": sorted({r["seed"] for rows in runs.values() for r in rows}), "runs": runs,
               "summary": _summary(runs)}
    with RunLock(out, where="compare --merge"):
        _figures(payload, canonicalizers, test, out, 8)
        _write(payload, out)
    return payload


_COLOURS = {"dec": "tab:blue", "direct": "tab:orange"}
_MAIN_COLUMNS = (("accuracy_clean", "accuracy (clean)"), ("accuracy", "accuracy (transformed)"),
                 ("local_scale_error", "local-scale error"), ("train_seconds", "seconds per run"))
_CANON_COLUMNS = (("canon_ratio", "canonical-form error / identity's"), ("canon_invariance", "canonical-form error"),
                  ("canon_pair_ratio", "pair ratio (own rescalings)"), ("spread_ratio", "spread / identity's"),
                  ("canon_ink", "ink / input's"), ("canon_radius", "ink radius / input's"),
                  ("solver_converged", "DEQ converged (eval)"),
                  ("solver_residual", "DEQ residual (eval)"))


def _outside_columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    keys = sorted({k for metrics in summary.values() for k in metrics if k.startswith("accuracy[")})
    return [(k, f"accuracy, scales {k[len('accuracy['):-1]}") for k in keys]


def tables(payload: dict[str, Any]) -> str:
    """The markdown of ``compare.md``: the main table, the canonicalizer table and the invariance cross table."""
    summary = payload["summary"]
    rows = list(summary.items())
    main = results_table(rows, [*_MAIN_COLUMNS[:2], *_outside_columns(summary), *_MAIN_COLUMNS[2:]], label="run")
    canon_rows = [(name, m) for name, m in rows if "canon_ratio" in m]
    canon = results_table(canon_rows, _CANON_COLUMNS, label="run") if canon_rows else ""
    cross = results_table(rows, [(f"invariance[{g}]", g) for g in payload["eval_groups"]],
                          label="trained for \\ evaluated under")
    seeds = payload["seeds"]
    canon_text = (f"Canonicalizers on held-out test inputs, each under its own group's sampler: the canonical-form "
                  f"error is the mean interior |canon(act(k, x)) − canon(x)| (0: exactly invariant), divided by the "
                  f"same for no canonicalizer, |act(k, x) − x|. The spread (mean interior |canon(x_i) − canon(x_j)| "
                  f"of distinct inputs) near the identity's shows that the canonical forms did not collapse. "
                  f"Converged: the fraction of test inputs whose DEQ residual met its tolerance within the "
                  f"evaluation iteration cap.\n\n{canon}\n\n") if canon else ""
    return (f"Mean ± sample standard deviation over seeds {seeds}.\n\n{main}\n\n{canon_text}"
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
               f"Canonicalizer options: {json.dumps(method['options'])}. Optimizer: {optim['epochs']} epochs, batch "
               f"{optim['batch_size']}, lr {optim['lr']:g}, {optim['schedule']} schedule.")
    scales = "".join(f"\n![{name}: digits at three scales above their canonical forms]"
                     f"(scales_{name.replace('[', '_').replace(']', '')}.png)\n"
                     for name in payload["summary"] if name.split("[")[0] in KINDS
                     and data["dataset"] == "local_scale")
    return (f"# equican compare\n\nCommand: `{command}`. {runs} training runs in "
            f"{payload['wall_seconds'] / 60:.1f} minutes of wall time.\n\n{setting}\n\n"
            f"Machine: {describe_machine(payload['machine'])}\n\n{tables(payload)}\n"
            f"![accuracy and errors per run](compare.png)\n\n"
            f"![the same test images canonicalized by each run's canonicalizer](canonical_forms.png)\n{scales}")


def _write(payload: dict[str, Any], out: Path) -> None:
    """The page, the CSV and the JSON, each atomically; ``compare.json`` last: it marks a finished comparison."""
    print()
    print(tables(payload))
    write_text_atomic(out / "compare.md", page(payload))
    keys = sorted({k for rows in payload["runs"].values() for r in rows for k in r})
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["run", *keys])
    for name, rows in payload["runs"].items():
        for r in rows:
            writer.writerow([name, *(r.get(k, "") for k in keys)])
    write_atomic(out / "compare.csv", lambda tmp: tmp.write_bytes(text.getvalue().encode("utf-8")))
    write_text_atomic(out / "compare.json", json.dumps(payload, indent=2) + "\n")


def _save(figure: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))


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
               capsize=3, color=[_COLOURS.get(n.split("[")[0], "tab:gray") for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, out / "compare.png")
    # The same test images, canonicalized by each group's DEC (first seed).
    count = min(count, test.x.shape[0])
    images = test.x[:count]
    grid = [("input", images), *((name, canonicalize(c, images)) for name, c in canonicalizers.items())]
    if len(grid) > 1:
        figure = image_grid(grid, title="the same test images canonicalized by each run's canonicalizer")
        _save(figure, out / "canonical_forms.png")
    # The same digits at three scales, each above its canonical form: a canonicalizer that works makes the
    # canonical rows of one column look alike.
    if isinstance(test.source, LocalScaleMNIST):
        source, count = test.source, min(count, len(test.source))
        series = torch.stack([torch.stack([source.reference(i), source[i][0], source.rescalings(i, 1)[0]])
                              for i in range(count)])
        for name, canonicalizer in canonicalizers.items():
            figure = canonical_forms_figure(canonicalizer, series, row_labels=["scale 1", "test draw", "rescaled"],
                                            title=f"{name}: the same digits at three scales, each above its "
                                                  f"canonical form")
            _save(figure, out / f"scales_{name.replace('[', '_').replace(']', '')}.png")
