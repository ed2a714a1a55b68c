"""The performance suite: what every part of equican costs, from one command (issue 6), with a results page.

Four sections, each a set of side-by-side measurements (interleaved, so that load from other work on a shared
machine hits all alike; medians of repeats), each reported as ratios to a reference measured in the same run:

``groups``
    ``act``, the inverse action ``act_inverse`` and ``compose`` of every registered group
    (``equican.list_groups()``, each at its defaults), as ratios to ``F.grid_sample`` of the same images on a
    precomputed grid of the same size (the grid that reproduces that group's action, see
    ``benchmarks/group_actions.py``, whose operations and timing loop this reuses), at resolutions 32–512 and batch
    sizes 1, 8, 32, every pair with at most 2^21 pixels per batch (big resolutions only with small batches).
    Calls shorter than 2 ms are repeated inside one measurement. Plot: time against pixels (B·H·W), log-log, one
    panel per group, with the grid_sample lines and a slope-1 guide; the JSON and the page give the fitted log-log
    slope over the batches of 2^16 pixels or more (1 means linear).
``canonicalizers``
    The DEC network of ``benchmarks/canonicalizers.py`` (monotone R = 4, update net 3→32→64), trained there for
    200 steps at 48×48 (smaller than that benchmark's 70×70 and 300 steps, to keep this section to a few minutes),
    then: time per image (batch 16, no gradient) against solver iterations, forced (tolerance 1e-12) — Anderson at
    3, 5, 10, 20 (it needs at least 3) and plain fixed-point iteration at 1, 2, 3, 5, 10, 20 — and the invariance
    error of each; the direct canonicalizer (one pass of the same network); optimization on the fixed-point energy
    (SGD lr 1, the setting that benchmark found best) at 1, 2, 4, 8, 16 steps; and the identity. Ratios: time per
    image over the direct canonicalizer's. Plot: time against iterations, and time against invariance error.
``latent``
    ``benchmarks/latent_overhead.py``'s ``build`` and ``time_all``: wrapped / bare forward time of timm models with
    the DEC at 1 and 2 insertion points (10 forced iterations), for ``vit_tiny_patch16_224``,
    ``vit_small_patch16_224``, ``vit_base_patch16_224``, ``swin_tiny_patch4_window7_224`` and ``resnet50`` at
    224×224. Batch 8 on the CPU (that benchmark's 32 would take over 10 minutes for vit_base alone on one thread),
    32 on a GPU. Plot: the ratio against the parameter count.
``training``
    Training throughput (images/s) of the ``plain`` and ``dec`` methods of ``benchmarks/training.py`` (its ``BASE``
    and ``METHODS``: Locally Scaled MNIST with 2 digits on a 72×72 canvas, the small CNN, batch 32), on the
    bundled MNIST subset (the digits do not change the cost), alternating segments of 5 optimizer steps,
    10 segments each after 2 warm-up steps each. Ratio: plain / DEC throughput.

Devices: the CPU, and also a GPU when ``torch.cuda.is_available()`` (or only those named by ``--device``). The
page reports absolute times from the GPU when one was measured (from the CPU otherwise, stated as such) and ratios
from every device; the JSON records every device's numbers and names.

Outputs in ``--out`` (default ``outputs/benchmarks/suite``): ``performance.json`` (every measurement, the machine,
the settings), ``performance_<section>_<device>.png`` and ``performance.md`` (the page, generated from the JSON
alone). ``--page [DIR]`` writes the same files to DIR too (default ``docs/results``); ``--from-json PATH`` measures
nothing and regenerates the figures and page from an earlier JSON.

Expected time of the full CPU run with one torch thread on this kind of machine (2 shared cores, AMD EPYC, with
another job on the other core), estimated from single calls and earlier benchmark results (the full run was not
timed yet): groups under 1 min (~1.5 s of calls per round, 15 rounds); canonicalizers about 4 min (200 training
steps at ~0.8 s, then ~8 s per timing round for 9 rounds); latent about 4 min (~30 s per round, 6 rounds, of which
vit_base is half: ~4.6 s per bare batch of 8; plus ~20 s building the models); training about 2 min (plain
~0.25 s and DEC ~1.2 s per step of 32, 52 steps each): about 10–12 minutes in all, up to ~20 when the machine is
busier. A GPU adds a few minutes. ``--quick`` shrinks everything (tiny models and sizes, 1–2 repeats): a pipeline
check in about 10 s plus imports, whose numbers measure nothing.

    python benchmarks/suite.py                                  # full: every section, CPU (+ GPU when present)
    python benchmarks/suite.py --quick                          # seconds (run by the tests)
    python benchmarks/suite.py --sections groups latent --device cuda
    python benchmarks/suite.py --page                           # and publish to docs/results/performance.md
    python benchmarks/suite.py --from-json outputs/benchmarks/suite/performance.json --page
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from equican.report import cpu_model, machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    # Run as a script (python benchmarks/suite.py) or loaded from its file: the repository root makes the sibling
    # scripts importable as the package ``benchmarks``, with ordinary import statements.
    sys.path.insert(0, str(ROOT))

from benchmarks.suite_report import (GROUP_OPS, JSON_NAME, PAGE_NAME, PLOTS, REFERENCE_OPS,  # noqa: E402
                                     figure_name, page)

SECTIONS = ("groups", "canonicalizers", "latent", "training")


def log(message: str) -> None:
    print(f"[suite] {message}", flush=True)


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


# ================================================================================================ settings
@dataclass(frozen=True)
class GroupSettings:
    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    batches: tuple[int, ...] = (1, 8, 32)
    max_pixels: int = 2 ** 21  # B·H·W per call: big resolutions only with small batches
    channels: int = 3
    repeats: int = 15
    min_seconds: float = 2e-3  # shorter calls are repeated inside one measurement
    slope_min_pixels: int = 2 ** 16  # the log-log slope is fitted above this (below, fixed costs dominate)


@dataclass(frozen=True)
class CanonSettings:
    size: int = 48
    channels: int = 3
    batch: int = 16
    cells: int = 4
    widths: tuple[int, ...] = (32, 64)
    train_steps: int = 200
    anderson: tuple[int, ...] = (3, 5, 10, 20)
    fixed_point: tuple[int, ...] = (1, 2, 3, 5, 10, 20)
    optimization_steps: tuple[int, ...] = (1, 2, 4, 8, 16)
    optimizer: tuple[str, float] = ("sgd", 1.0)
    repeats: int = 5


@dataclass(frozen=True)
class LatentSettings:
    models: tuple[tuple[str, dict], ...] = (
        ("vit_tiny_patch16_224", {}), ("vit_small_patch16_224", {}), ("vit_base_patch16_224", {}),
        ("swin_tiny_patch4_window7_224", {}), ("resnet50", {}))
    size: int = 224
    batch: int = 8  # CPU; a GPU run uses gpu_batch
    gpu_batch: int = 32
    iterations: int = 10
    repeats: int = 5


@dataclass(frozen=True)
class TrainingSettings:
    methods: tuple[str, ...] = ("plain", "dec", "dec@64", "dec@36", "dec,ce", "dec@64,ce")
    segments: int = 10  # per method, alternating
    steps_per_segment: int = 5
    warmup_steps: int = 2
    train_limit: int = 500  # source digits of the bundled subset (all of it); batches cycle over the composites
    quick: bool = False


_VIT_QUICK = {"img_size": 32, "patch_size": 8, "depth": 2}
QUICK_GROUPS = GroupSettings(sizes=(16, 32), batches=(1, 2), max_pixels=2048, repeats=2, min_seconds=0.0,
                             slope_min_pixels=0)
QUICK_CANON = CanonSettings(size=24, batch=4, widths=(4, 8), train_steps=1, anderson=(3,), fixed_point=(1, 2),
                            optimization_steps=(1, 2), repeats=1)
QUICK_LATENT = LatentSettings(
    models=(("vit_tiny_patch16_224", {**_VIT_QUICK, "embed_dim": 48, "num_heads": 1}),
            ("vit_small_patch16_224", {**_VIT_QUICK, "embed_dim": 96, "num_heads": 2}),
            ("vit_base_patch16_224", {**_VIT_QUICK, "embed_dim": 192, "num_heads": 3}),
            ("swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 2, "depths": (2, 2, 2, 2),
                                              "embed_dim": 24, "num_heads": (1, 1, 1, 1)}),
            ("resnet50", {"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128), "stem_width": 16})),
    size=32, batch=2, gpu_batch=2, iterations=3, repeats=2)
QUICK_TRAINING = TrainingSettings(segments=2, steps_per_segment=1, warmup_steps=1, train_limit=48, quick=True)


# ================================================================================================ groups
def run_groups(device: torch.device, s: GroupSettings) -> dict[str, Any]:
    """Every group's operations and their grid_sample references at every (size, batch) pair, interleaved."""
    from equican import list_groups, make_group

    from benchmarks import group_actions as ga
    configs = [(size, batch) for size in s.sizes for batch in s.batches if batch * size * size <= s.max_pixels]
    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for i, (size, batch) in enumerate(configs, start=1):
            x = torch.rand(batch, s.channels, size, size, generator=generator).to(device)
            work = {}
            for name in list_groups():
                ops, _ = ga.group_operations(make_group(name), x, generator)
                work.update({(name, op): ops[op] for op in (*REFERENCE_OPS, *GROUP_OPS)})
            times = ga.time_interleaved(work, s.repeats, sync=synchronizer(device), min_seconds=s.min_seconds,
                                        desc=f"{size}x{size} batch {batch}")
            median = {key: statistics.median(t) for key, t in times.items()}
            for (name, op), seconds in median.items():
                reference = ga.REFERENCES.get(op)
                rows.append({"group": name, "op": op, "size": size, "batch": batch, "pixels": batch * size * size,
                             "seconds": seconds, "seconds_all": times[(name, op)], "reference": reference,
                             "ratio": seconds / median[(name, reference)] if reference else None})
            act = {name: median[(name, "act")] / median[(name, "grid_sample[act]")] for name in list_groups()}
            log(f"  groups {i}/{len(configs)}: {size}x{size}, batch {batch}: act / grid_sample "
                + ", ".join(f"{n} {r:.2f}" for n, r in act.items()))
    return {"settings": asdict(s), "configs": [list(c) for c in configs], "rows": rows,
            "slopes": loglog_slopes(rows, s.slope_min_pixels)}


def loglog_slopes(rows: list[dict], min_pixels: int) -> dict[str, dict[str, float | None]]:
    """Least-squares slope of log(seconds) against log(pixels) per group and op (None with < 2 pixel counts)."""
    slopes: dict[str, dict[str, float | None]] = {}
    for name in sorted({r["group"] for r in rows}):
        for op in (*REFERENCE_OPS, *GROUP_OPS):
            points = [(math.log(r["pixels"]), math.log(r["seconds"])) for r in rows
                      if r["group"] == name and r["op"] == op and r["pixels"] >= min_pixels]
            xs = [p for p, _ in points]
            slope = None
            if len(set(xs)) >= 2:
                mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
                slope = (sum((p - mx) * (y - my) for p, y in points)
                         / sum((p - mx) ** 2 for p in xs))
            slopes.setdefault(name, {})[op] = slope
    return slopes


# ================================================================================================ canonicalizers
def run_canonicalizers(device: torch.device, s: CanonSettings, *, quick: bool) -> dict[str, Any]:
    """Train the DEC network, then time and measure the invariance error of every kind and iteration count."""
    from equican import make_group
    from equican.canon import (DEQCanonicalizer, DEQConfig, DirectCanonicalizer, IdentityCanonicalizer,
                               OptimizationCanonicalizer, OptimizationConfig, SolverSettings)
    from equican.canon.nets import FixedPointEnergy, UpdateNet
    from equican.errors import ConvergenceWarning

    from benchmarks import canonicalizers as cb
    bench = cb.Settings(size=s.size, channels=s.channels, batch=s.batch, cells=s.cells, widths=s.widths,
                        train_steps=s.train_steps, repeats=s.repeats, threads=(torch.get_num_threads(),),
                        quick=quick)
    torch.manual_seed(0)
    group = make_group("monotone", cells=s.cells)
    base = cb.patterns(bench.patterns, s.size, s.channels, seed=0).to(device)
    net = UpdateNet.for_group(group, s.channels, channels=s.widths).to(device)
    trained = SolverSettings(solver="anderson", max_iter=bench.anderson_iterations, tol=1e-3)
    deq = DEQCanonicalizer(group, net, DEQConfig(train=trained, eval=trained))
    log(f"  canonicalizers: training the DEC for {s.train_steps} steps at {s.size}x{s.size}")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        losses = cb.train(deq, group, base, bench)
    train_seconds = time.perf_counter() - started

    def forced(solver: str, iterations: int) -> DEQCanonicalizer:
        settings = SolverSettings(solver=solver, max_iter=iterations, tol=1e-12)  # tiny tol: every iteration runs
        return DEQCanonicalizer(group, net, DEQConfig(train=settings, eval=settings)).eval()

    kinds: dict[str, Any] = {"identity": IdentityCanonicalizer(group), "direct": DirectCanonicalizer(group, net).eval()}
    families: dict[str, tuple[str, int | None]] = {"identity": ("identity", None), "direct": ("direct", None)}
    for k in s.anderson:
        kinds[f"dec_anderson[{k}]"], families[f"dec_anderson[{k}]"] = forced("anderson", k), ("dec_anderson", k)
    for k in s.fixed_point:
        kinds[f"dec_fixed_point[{k}]"] = forced("fixed_point_iter", k)
        families[f"dec_fixed_point[{k}]"] = ("dec_fixed_point", k)
    energy = FixedPointEnergy(net, group)
    optimizer, lr = s.optimizer
    for k in s.optimization_steps:
        config = OptimizationConfig(steps=k, lr=lr, optimizer=optimizer, unroll=0)
        kinds[f"optimization[{k}]"] = OptimizationCanonicalizer(group, energy, config).eval()
        families[f"optimization[{k}]"] = ("optimization", k)

    pairs = (cb.warped(group, base, s.batch, torch.Generator().manual_seed(100))[0],
             cb.warped(group, base, s.batch, torch.Generator().manual_seed(101))[0])
    rows: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the forced solves never reach tolerance 1e-12
        for name, canon in kinds.items():
            with torch.no_grad():
                converged = canon(pairs[0]).info.get("converged")
            family, iterations = families[name]
            # A DEC solve stops early only where it converges: none does at tolerance 1e-12 (fraction 0), so every
            # solve ran all its iterations.
            rows[name] = {"family": family, "iterations": iterations,
                          "invariance_error": cb.invariance_error(canon, pairs),
                          "converged_fraction": float(converged.float().mean()) if torch.is_tensor(converged)
                          else None}
        log(f"  canonicalizers: timing {len(kinds)} kinds, {s.repeats} interleaved repeats, batch {s.batch}")
        times = cb.time_kinds(kinds, pairs[0], bench, sync=synchronizer(device))
    n = bench.threads[0]
    for name in kinds:
        rows[name].update(ms_per_image=statistics.median(times[name][n]), ms_all=times[name][n])
    direct = rows["direct"]["ms_per_image"]
    for row in rows.values():
        row["ratio_to_direct"] = row["ms_per_image"] / direct
    return {"settings": asdict(s), "group": repr(group), "train_seconds": train_seconds,
            "final_train_loss": losses[-1] if losses else None, "rows": rows}


# ================================================================================================ latent
def run_latent(device: torch.device, s: LatentSettings) -> dict[str, Any]:
    """Wrapped / bare forward time of every model, at 1 and 2 insertion points, interleaved."""
    from benchmarks import latent_overhead as lo
    batch = s.gpu_batch if device.type == "cuda" else s.batch
    models, params = {}, {}
    for name, kwargs in s.models:
        log(f"  latent: building {name}")
        models[name] = lo.build(name, kwargs, s.iterations, device)
        params[name] = sum(p.numel() for p in models[name]["bare"].parameters())
    generator = torch.Generator().manual_seed(0)
    inputs = {name: torch.rand(batch, 3, s.size, s.size, generator=generator).to(device) for name, _ in s.models}
    log(f"  latent: timing {len(models)} models x {len(lo.POINTS) + 1} variants, {s.repeats} interleaved rounds, "
        f"batch {batch}")
    times = lo.time_all(models, inputs, s.repeats, device)
    rows = {}
    for name, variants in times.items():
        bare = statistics.median(variants["bare"])
        rows[name] = {"params": params[name], "bare_s": bare,
                      **{v: statistics.median(t) / bare for v, t in variants.items() if v != "bare"}}
        log(f"  latent: {name}: bare {bare:.3f} s, DEC@1 {rows[name]['dec@1']:.3f}x, "
            f"DEC@2 {rows[name]['dec@2']:.3f}x")
    del models
    return {"settings": {**asdict(s), "models": [[n, k] for n, k in s.models]}, "batch": batch,
            "points": [list(p) for p in lo.POINTS], "rows": rows, "times_s": times}


# ================================================================================================ training
#: Variants measured beside benchmarks/training.py's methods, as (method, extra overrides): the DEC working at 36 px,
#: half the 72×72 canvas (the trade-off is measured in benchmarks/hot_path.py).
# ``dec`` is the method as built by name (at the input's own resolution); ``dec@64`` and ``dec@36`` solve on a 64 / 36 px
# copy. ``,ce``: the cross-entropy alone (canon_weight 0), the DEC's work per step before issue 12 added the
# canonicalization loss (its extra solves on transformed inputs).
TRAINING_VARIANTS = {"dec@64": ("dec", ("method.options.resolution=64",)),
                     "dec@36": ("dec", ("method.options.resolution=36",)),
                     "dec,ce": ("dec", ("method.options.canon_weight=0",)),
                     "dec@64,ce": ("dec", ("method.options.resolution=64", "method.options.canon_weight=0"))}


def training_overrides(tr: Any, name: str) -> list[str]:
    """The overrides of method or variant ``name`` on top of the training benchmark's ``BASE``."""
    method, extra = TRAINING_VARIANTS.get(name, (name, ()))
    return [*tr.METHODS[method], *extra]


def run_training(device: torch.device, s: TrainingSettings) -> dict[str, Any]:
    """Images/s of plain and DEC training steps on the training benchmark's data, alternating segments."""
    from equican.config import TrainConfig, apply_overrides
    from equican.train import build, load_split, train_step

    from benchmarks import training as tr
    overrides = {m: [*tr.BASE, *training_overrides(tr, m), "progress=false", f"data.train_limit={s.train_limit}"]
                 + ([o for o in tr.QUICK if not o.startswith("data.train_limit=")] if s.quick else [])
                 for m in s.methods}
    configs = {m: apply_overrides(TrainConfig(), o) for m, o in overrides.items()}
    first = configs[s.methods[0]]
    if any(c.data != first.data or c.optim != first.optim for c in configs.values()):
        raise RuntimeError("suite: the training methods must share the data and optimizer settings")
    data = load_split(first.data, "train")
    x_all, y_all = data.x.to(device), data.y.to(device)
    batch = first.optim.batch_size
    objectives = {m: build(c, data).to(device).train() for m, c in configs.items()}
    optimizers = {m: torch.optim.AdamW(o.parameters(), lr=first.optim.lr, weight_decay=first.optim.weight_decay,
                                       betas=first.optim.betas) for m, o in objectives.items()}
    order = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
    cursor = {m: 0 for m in s.methods}
    stats_sum: dict[str, dict[str, float]] = {m: {} for m in s.methods}
    sync = synchronizer(device) or (lambda: None)

    def steps(method: str, count: int, record: bool) -> None:
        objective, optimizer = objectives[method], optimizers[method]
        for _ in range(count):
            start = cursor[method] % x_all.shape[0]
            index = order[start:start + batch]
            if index.shape[0] < batch:  # wrap around the data
                index = torch.cat([index, order[:batch - index.shape[0]]])
            cursor[method] += batch
            stats = train_step(objective, optimizer, x_all[index], y_all[index], index, 0,
                               grad_clip=first.optim.grad_clip)
            if record:
                for key, value in stats.items():
                    stats_sum[method][key] = stats_sum[method].get(key, 0.0) + float(value)

    segments: dict[str, list[float]] = {m: [] for m in s.methods}
    for m in s.methods:
        steps(m, s.warmup_steps, record=False)
    for i in range(s.segments):
        for m in s.methods:
            sync()
            start = time.perf_counter()
            steps(m, s.steps_per_segment, record=True)
            sync()
            segments[m].append(time.perf_counter() - start)
        log(f"  training: segment {i + 1}/{s.segments}: "
            + ", ".join(f"{m} {s.steps_per_segment * batch / segments[m][-1]:.0f} img/s" for m in s.methods))
    timed_steps = s.segments * s.steps_per_segment
    rows = {}
    for m in s.methods:
        rows[m] = {"images_per_s": timed_steps * batch / sum(segments[m]),
                   "segment_images_per_s": [s.steps_per_segment * batch / t for t in segments[m]],
                   "ms_per_step": 1e3 * statistics.median(segments[m]) / s.steps_per_segment,
                   "segment_seconds": segments[m],
                   "stats": {k: v / timed_steps for k, v in stats_sum[m].items()}}
    ref = s.methods[0]
    for m in s.methods:
        rows[m]["slowdown_vs_" + ref] = rows[ref]["images_per_s"] / rows[m]["images_per_s"]
    return {"settings": asdict(s), "batch": batch, "image_shape": list(data.x.shape[1:]),
            "train_images": int(data.x.shape[0]), "overrides": overrides, "reference": ref, "rows": rows}


# ================================================================================================ run
def measure(sections: list[str], devices: list[str], *, quick: bool, command: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"suite": "equican performance suite", "quick": quick, "command": command,
                               "sections": sections, "devices": devices, "machine": machine_info(), "runs": {}}
    for name in devices:
        device = torch.device(name)
        run: dict[str, Any] = {"device": name,
                               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                               else cpu_model()}
        payload["runs"][name] = run
        for section in sections:
            log(f"{name}/{section}: start")
            load_before, started = os.getloadavg(), time.perf_counter()
            if section == "groups":
                result = run_groups(device, QUICK_GROUPS if quick else GroupSettings())
            elif section == "canonicalizers":
                result = run_canonicalizers(device, QUICK_CANON if quick else CanonSettings(), quick=quick)
            elif section == "latent":
                result = run_latent(device, QUICK_LATENT if quick else LatentSettings())
            else:
                result = run_training(device, QUICK_TRAINING if quick else TrainingSettings())
            result.update(wall_seconds=time.perf_counter() - started, load_average_before=list(load_before),
                          load_average_after=list(os.getloadavg()))
            run[section] = result
            log(f"{name}/{section}: done in {result['wall_seconds']:.1f} s")
    payload["machine"]["load_average_end"] = list(os.getloadavg())
    return payload


def write_outputs(payload: dict, out: Path) -> list[Path]:
    """``performance.json``, the figures and ``performance.md`` in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / JSON_NAME]
    written[0].write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    for device, run in payload["runs"].items():
        for section in payload["sections"]:
            if section in run:
                path = out / figure_name(section, device)
                PLOTS[section](run[section], device, path)
                written.append(path)
    written.append(out / PAGE_NAME)
    written[-1].write_text(page(payload), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and models: a pipeline check (seconds)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", nargs="+", choices=("cpu", "cuda"), default=None,
                        help="devices to measure (default: cpu, and cuda when available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable timings on a CPU shared with other work)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "suite")
    parser.add_argument("--page", type=Path, nargs="?", const=ROOT / "docs" / "results", default=None,
                        metavar="DIR", help="also write the page, figures and JSON to DIR (default docs/results)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="measure nothing: regenerate the figures and the page from an earlier JSON")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"expected --threads >= 1, got {args.threads}")
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
        if "cuda" in devices and not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device")
        command = "python benchmarks/suite.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            payload = measure(list(args.sections), devices, quick=args.quick, command=command)
        finally:
            torch.set_num_threads(threads)
    for directory in [args.out] + ([args.page] if args.page is not None else []):
        written = write_outputs(payload, directory)
        log(f"wrote {', '.join(str(p) for p in written)}")
    return payload


if __name__ == "__main__":
    main()
