"""The hot path of issue 14: per-call overhead of group actions, group calls inside a DEQ step, working resolution.

Three sections, each a ratio of times measured side by side in one run (interleaved rounds, the minimum over rounds
of the mean per call: on a CPU shared with other work the minimum is the least disturbed estimate):

* ``calls``: every registered group's public (validated) ``act`` and ``act_inverse``, and the same members through
  ``group.unchecked`` (what solver loops call), divided by ``F.grid_sample`` of the same images on a precomputed
  smooth grid of the same size (the identity lattice shrunk by 5%); at ``(1, 3, 32, 32)``, ``(64, 3, 224, 224)`` and, for monotone scaling with ``cells=8``,
  ``(64, 3, 224, 224)`` again.
* ``deq_step``: one update-map evaluation of the DEC (monotone scaling, ``UpdateNet`` 32 -> (32, 64), inputs
  ``(8, 32, 14, 14)``, the latent token grid): the time of its group calls (chart with fallback, action,
  projection; the unchecked members the solver loop calls) divided by the network's time on the warped features.
* ``resolution``: DEC evaluation on 210×210 inputs (the Locally Scaled MNIST composites; the paper's MNIST
  configuration: cells 3 (R = 4 knots), UpdateNet 3 -> (32, 64), 5 Anderson iterations, batch 16) at working
  resolutions from full down to 35 px: time per batch, and how far the element found at each working resolution is
  from the one found at full resolution (RMS field distance, relative to the full-resolution element's distance
  from the identity). The network is randomly initialized (its head scaled so that it predicts visible warps):
  this measures what the downsampled copy changes in the prediction, not a trained canonicalizer's invariance.

    python benchmarks/hot_path.py            # the full run (about a minute, 1 thread)
    python benchmarks/hot_path.py --quick    # seconds, small sizes (exercised by a test)

Writes ``hot_path.json`` to ``--out`` (default outputs/benchmarks) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from equican.report import machine_info

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the repository root makes the siblings the package ``benchmarks``
    sys.path.insert(0, str(ROOT))

from benchmarks import write_result  # noqa: E402


def interleaved(work: dict[str, Callable[[], Any]], *, calls: int, rounds: int) -> dict[str, float]:
    """Seconds per call of every entry of ``work``: the minimum over ``rounds`` of the mean of ``calls`` calls, the
    entries run in turn within each round so that load from other work hits all alike."""
    for fn in work.values():  # warm-up: caches, allocator, lazy imports
        fn()
    best = {key: float("inf") for key in work}
    for _ in range(rounds):
        for key, fn in work.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[key] = min(best[key], (time.perf_counter() - start) / calls)
    return best


def run_calls(shapes: list[tuple[str, tuple[int, int, int, int], dict]], *, calls: int,
              rounds: int) -> list[dict[str, Any]]:
    """Per group and shape: public and unchecked act / act_inverse over grid_sample (see the module docstring)."""
    from equican import list_groups, make_group

    rows = []
    for label, shape, only in shapes:
        b, c, h, w = shape
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(shape, generator=gen)
        # A smooth near-identity grid (the lattice shrunk by 5%), like the grids of the groups' default elements:
        # grid_sample's cost depends on how local its reads are, and a random grid would read all over the image.
        grid = F.affine_grid(torch.tensor([[[0.95, 0.0, 0.0], [0.0, 0.95, 0.0]]]).expand(b, 2, 3), [b, c, h, w],
                             align_corners=True)
        for name in only.get("groups", list_groups()):
            group = make_group(name, **only.get("kwargs", {}))
            g = group.sample(b, generator=torch.Generator().manual_seed(1))
            u = group.unchecked
            n = max(1, calls // (1 + b * h * w // 4096))
            times = interleaved({
                "grid_sample": lambda: F.grid_sample(x, grid, align_corners=True),
                "act": lambda: group.act(g, x), "act_inverse": lambda: group.act_inverse(g, x),
                "act_unchecked": lambda: u.act(g, x), "act_inverse_unchecked": lambda: u.act_inverse(g, x),
            }, calls=n, rounds=rounds)
            ref = times["grid_sample"]
            rows.append({"case": label, "group": name, "shape": list(shape), "seconds": times,
                         **{f"ratio_{k}": v / ref for k, v in times.items() if k != "grid_sample"}})
    return rows


def run_deq_step(shape: tuple[int, int, int, int], *, calls: int, rounds: int) -> dict[str, Any]:
    """Group calls per DEQ update-map evaluation over the update network's time (see the module docstring)."""
    from equican import make_group
    from equican.canon import DEQCanonicalizer
    from equican.canon.nets import UpdateNet

    group = make_group("monotone")
    canon = DEQCanonicalizer(group, UpdateNet.for_group(group, shape[1])).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen)
    z = 0.3 * torch.randn((shape[0], *group.unconstrained_shape), generator=gen)
    u = group.unchecked

    def group_calls() -> torch.Tensor:
        # The group's share of UpdateCanonicalizer.correction: the chart (with its per-input fallback), the action
        # on the features, and the projection P(z); timed apart from the network, whose time is far noisier.
        _, h, _ = canon.elements(z)
        u.act(h, x)
        return u.to_unconstrained(h)

    with torch.no_grad():
        warped = u.act(canon.elements(z)[1], x)
        times = interleaved({"group_calls": group_calls, "net": lambda: canon.net(warped),
                             "correction": lambda: canon.correction(z, x)}, calls=calls, rounds=rounds)
    return {"shape": list(shape), "seconds": times, "group_seconds": times["group_calls"],
            "ratio": times["group_calls"] / times["net"]}


def run_resolution(size: int, batch: int, resolutions: list[int | None], *, rounds: int) -> list[dict[str, Any]]:
    """DEC evaluation time and element deviation per working resolution (see the module docstring)."""
    from equican import make_group
    from equican.canon import DEQCanonicalizer, DEQConfig, SolverSettings
    from equican.canon.nets import UpdateNet
    from equican.errors import ConvergenceWarning

    group = make_group("monotone", cells=3)
    torch.manual_seed(0)
    net = UpdateNet.for_group(group, 3, channels=(32, 64), out_scale=20.0)
    # A random head predicts visible warps (the zero-initialized head would predict the identity everywhere).
    for p in net.parameters():
        if p.abs().sum() == 0:
            p.data.normal_(0, 0.05)
    solver = SolverSettings(solver="anderson", max_iter=5, tol=1e-12)
    config = DEQConfig(train=solver, eval=solver)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = F.avg_pool2d(x, 9, stride=1, padding=4)  # smooth, image-like content
    canons = {r: DEQCanonicalizer(group, net, config, resolution=r).eval() for r in resolutions}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h = {r: c(x).h for r, c in canons.items()}
        times = interleaved({r: (lambda c=c: c(x)) for r, c in canons.items()}, calls=1, rounds=rounds)
    full = h[resolutions[0]]
    scale = float(group.distance(full, group.identity_like(full)).mean())
    rows = []
    for r in resolutions:
        deviation = float(group.distance(h[r], full).mean())
        rows.append({"resolution": r if r is not None else size, "seconds": times[r],
                     "speedup": times[resolutions[0]] / times[r], "deviation": deviation,
                     "relative_deviation": deviation / scale if scale else 0.0})
    return rows


def run_tradeoff(upscale: int, resolutions: list[int | None], *, steps: int, batch: int,
                 limits: tuple[int, int], group_name: str = "monotone") -> list[dict[str, Any]]:
    """Canonical-form invariance against working resolution, for DECs trained at each resolution.

    Locally Scaled MNIST digits (48×48, the compare task's inputs) are upsampled ``upscale``-fold (bilinear) into
    larger inputs with the same content. One DEC per working resolution (``group_name``, UpdateNet 1 -> (16, 32),
    seeded alike) trains ``steps`` Adam steps on the self-supervised canonicalization loss
    (``benchmarks/canonicalization.py``'s setting) and is measured on held-out digits: the canonical-form error
    over the identity's (``metrics.canonicalization_error``; 1 is no better than not canonicalizing) and the
    evaluation time per batch. The trade-off only means something where the canonicalizer learns: in a few hundred
    steps it does for ``scale`` (the canonicalization benchmark's ratio 0.22), barely for ``monotone`` (0.89).
    """
    from equican import make_group, metrics
    from equican.canon import DEQCanonicalizer, DEQConfig, IdentityCanonicalizer, SolverSettings
    from equican.canon.nets import UpdateNet
    from equican.config import apply_overrides, load_config
    from equican.errors import ConvergenceWarning
    from equican.train import load_split

    from benchmarks.canonicalization import self_supervised_step

    base = apply_overrides(load_config("compare"), [f"data.train_limit={limits[0]}", f"data.test_limit={limits[1]}"])
    train, held = (F.interpolate(load_split(base.data, split).x, scale_factor=upscale, mode="bilinear",
                                 align_corners=True) for split in ("train", "test"))
    group = make_group(group_name)
    identity_error = metrics.canonicalization_error(IdentityCanonicalizer(group), (held,), seed=1)
    rows = []
    for r in resolutions:
        torch.manual_seed(0)
        config = DEQConfig(train=SolverSettings(max_iter=5),
                           eval=SolverSettings(max_iter=10, tol=0.01, stop_mode="rel"), residual_weight=1.0)
        canon = DEQCanonicalizer(group, UpdateNet.for_group(group, 1, channels=(16, 32)), config,
                                 resolution=r)
        optimizer = torch.optim.Adam(canon.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            started = time.perf_counter()
            for _ in range(steps):
                self_supervised_step(canon, optimizer, train, batch, gen)
            train_s = time.perf_counter() - started
            canon.eval()
            error = metrics.canonicalization_error(canon, (held,), seed=1)
            with torch.no_grad():
                eval_s = interleaved({"eval": lambda: canon(held[:batch])}, calls=1, rounds=3)["eval"]
        rows.append({"group": group_name, "resolution": r if r is not None else train.shape[-1],
                     "ratio": error / identity_error,
                     "train_seconds": train_s, "eval_seconds": eval_s})
    full = rows[0]
    for row in rows:
        row["ratio_vs_full"] = row["ratio"] / full["ratio"]
        row["eval_speedup"] = full["eval_seconds"] / row["eval_seconds"]
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def page(payload: dict[str, Any]) -> str:
    """The results page (docs/results/hot_path.md), from the JSON alone."""
    m = payload["machine"]
    lines = ["# The hot path", "",
             f"Written by `benchmarks/hot_path.py` from `hot_path.json`; measured with `{payload['command']}` "
             f"({payload['threads']} torch thread; load average {m['load_average_before'][0]:.1f} before, "
             f"{m['load_average_after'][0]:.1f} after, on a CPU shared with other work; times are the minimum "
             f"over interleaved rounds). See the script's docstring for the protocol.", ""]
    if payload["calls"]:
        lines += ["## Group actions over grid_sample", "",
                  "Public calls validate their arguments (one host synchronisation for the finiteness of all "
                  "arguments, one for a group's own validity test, one for the result); `unchecked` calls are what "
                  "solver loops make.", ""]
        lines += _table(["case", "group", "grid_sample (ms)", "act", "act_inverse", "unchecked act",
                         "unchecked act_inverse"],
                        [[r["case"], r["group"], f"{1e3 * r['seconds']['grid_sample']:.3f}", f"{r['ratio_act']:.2f}",
                          f"{r['ratio_act_inverse']:.2f}", f"{r['ratio_act_unchecked']:.2f}",
                          f"{r['ratio_act_inverse_unchecked']:.2f}"] for r in payload["calls"]])
        lines.append("")
    step = payload["deq_step"]
    if step is not None:
        lines += ["## Group calls in one DEQ step", "",
                  f"Inputs {tuple(step['shape'])}, monotone scaling: group calls "
                  f"{1e6 * step['group_seconds']:.0f} µs, update network {1e6 * step['seconds']['net']:.0f} µs, "
                  f"ratio **{step['ratio']:.3f}** (the whole update map: {1e6 * step['seconds']['correction']:.0f} "
                  f"µs).", ""]
    if payload["resolution"]:
        lines += ["## DEC evaluation at 210×210 against working resolution", "",
                  "The paper's MNIST configuration (random weights): time per batch of 16 and the element's "
                  "deviation from the full-resolution one (RMS field distance over the full-resolution element's "
                  "distance from the identity). A random network's prediction depends on the pixel scale it sees, "
                  "so this deviation is large at every working resolution: the trained trade-off is the next "
                  "table.", ""]
        lines += _table(["working resolution", "ms / batch", "ms / image", "speedup", "relative deviation"],
                        [[str(r["resolution"]), f"{1e3 * r['seconds']:.1f}", f"{1e3 * r['seconds'] / 16:.1f}",
                          f"{r['speedup']:.2f}", f"{r['relative_deviation']:.3f}"] for r in payload["resolution"]])
        lines.append("")
    if payload["tradeoff"]:
        lines += ["## Trained canonicalizers against working resolution", "",
                  "One DEC per working resolution, trained on the self-supervised canonicalization loss on Locally "
                  "Scaled MNIST digits (48×48) upsampled to the full resolution of its first row, measured on held-out "
                  "digits. A row says "
                  "something only where the canonicalizer learns, i.e. where its ratio at full resolution is well "
                  "below 1: the 'vs full resolution' column is then the invariance a working resolution gives up.",
                  ""]
        lines += _table(["group", "trained at", "canonical-form error / identity's", "vs full resolution",
                         "eval speedup", "training s"],
                        [[r.get("group", "monotone"), str(r["resolution"]), f"{r['ratio']:.3f}",
                          f"{r['ratio_vs_full']:.3f}",
                          f"{r['eval_speedup']:.2f}", f"{r['train_seconds']:.0f}"] for r in payload["tradeoff"]])
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", nargs="+", choices=("calls", "deq_step", "resolution", "tradeoff"),
                        default=["calls", "deq_step", "resolution", "tradeoff"])
    parser.add_argument("--page", type=Path, nargs="?", const=ROOT / "docs" / "results", default=None,
                        metavar="DIR", help="also write hot_path.json and hot_path.md to DIR (default docs/results)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="measure nothing: regenerate the page from an earlier JSON")
    parser.add_argument("--tradeoff-steps", type=int, default=150, help="training steps per working resolution")
    parser.add_argument("--tradeoff-groups", nargs="+", default=["monotone"], metavar="GROUP",
                        help="the groups whose DECs the trade-off trains (default: monotone)")
    parser.add_argument("--tradeoff-upscale", type=int, default=2, metavar="K",
                        help="the trade-off's inputs: 48x48 digits upsampled K-fold (default 2: 96x96)")
    parser.add_argument("--tradeoff-resolutions", nargs="+", default=None, metavar="PX",
                        help="working resolutions of the trade-off, 'full' for the input's own (default: full 64 48 "
                             "32 24)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        shapes = [("1x32", (1, 3, 16, 16), {})]
        calls, rounds = 3, 2
        step_shape, res_size, res_batch, resolutions = (2, 8, 14, 14), 48, 2, [None, 24]
        tradeoff = dict(upscale=1, resolutions=[None, 24], steps=1, batch=2, limits=(8, 4))
    else:
        shapes = [("1x32", (1, 3, 32, 32), {}), ("64x224", (64, 3, 224, 224), {}),
                  ("1x32,cells=8", (1, 3, 32, 32), {"groups": ["monotone"], "kwargs": {"cells": 8}}),
                  ("64x224,cells=8", (64, 3, 224, 224), {"groups": ["monotone"], "kwargs": {"cells": 8}})]
        calls, rounds = 200, 7
        step_shape, res_size, res_batch, resolutions = (8, 32, 14, 14), 210, 16, [None, 140, 105, 70, 52, 35]
        resolutions = [None if r == "full" else int(r) for r in (args.tradeoff_resolutions or
                                                                  ["full", "64", "48", "32", "24"])]
        tradeoff = dict(upscale=args.tradeoff_upscale, resolutions=resolutions, steps=args.tradeoff_steps, batch=16,
                        limits=(1000, 200))
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text(encoding="utf-8"))
        write_result("hot_path", payload, page(payload), args.out, args.page)
        return payload
    shown = sys.argv[1:] if argv is None else argv
    payload: dict[str, Any] = {"command": " ".join(["python benchmarks/hot_path.py", *shown]),
                               "threads": args.threads, "quick": args.quick, "calls": [], "deq_step": None,
                               "resolution": [], "tradeoff": [],
                               "machine": {**machine_info(), "load_average_before": list(os.getloadavg())}}
    if "calls" in args.sections:
        payload["calls"] = run_calls(shapes, calls=calls, rounds=rounds)
    if "deq_step" in args.sections:
        payload["deq_step"] = run_deq_step(step_shape, calls=max(calls // 4, 1), rounds=rounds)
    if "resolution" in args.sections:
        payload["resolution"] = run_resolution(res_size, res_batch, resolutions, rounds=max(rounds // 2, 1))
    if "tradeoff" in args.sections:
        payload["tradeoff"] = [row for name in args.tradeoff_groups
                               for row in run_tradeoff(**tradeoff, group_name=name)]
    print("case            group      act  act_inv | unchecked: act  act_inv   (ratios to grid_sample)")
    for row in payload["calls"]:
        print(f"{row['case']:15s} {row['group']:9s} {row['ratio_act']:6.2f} {row['ratio_act_inverse']:8.2f} |"
              f"            {row['ratio_act_unchecked']:6.2f} {row['ratio_act_inverse_unchecked']:8.2f}")
    step = payload["deq_step"]
    if step is not None:
        print(f"DEQ step {tuple(step['shape'])}: group calls {1e6 * step['group_seconds']:.0f} us, network "
              f"{1e6 * step['seconds']['net']:.0f} us, ratio {step['ratio']:.3f}")
    print("resolution  ms/batch  speedup  relative element deviation")
    for row in payload["resolution"]:
        print(f"{row['resolution']:10d} {1e3 * row['seconds']:9.1f} {row['speedup']:8.2f} "
              f"{row['relative_deviation']:10.3f}")
    print("trained at   canonical-form error / identity's   vs full resolution   eval speedup")
    for row in payload["tradeoff"]:
        print(f"{row['group']:9s} {row['resolution']:10d} {row['ratio']:14.3f} {row['ratio_vs_full']:22.3f} {row['eval_speedup']:15.2f}")
    payload["machine"]["load_average_after"] = list(os.getloadavg())
    write_result("hot_path", payload, page(payload), args.out, args.page)
    return payload


if __name__ == "__main__":
    main()
