"""The hot path of issue 14: per-call overhead of group actions, group calls inside a DEQ step, working resolution.

Three sections, each a ratio of times measured side by side in one run (interleaved rounds, the minimum over rounds
of the mean per call: on a CPU shared with other work the minimum is the least disturbed estimate):

* ``calls``: every registered group's public (validated) ``act`` and ``act_inverse``, and the same members through
  ``group.unchecked`` (what solver loops call), divided by ``F.grid_sample`` of the same images on a precomputed
  grid of the same size; at ``(1, 3, 32, 32)``, ``(64, 3, 224, 224)`` and, for monotone scaling with ``cells=8``,
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
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


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
        grid = (torch.rand(b, h, w, 2, generator=gen) * 1.8 - 0.9)
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
    canon = DEQCanonicalizer(group, UpdateNet(shape[1], group.unconstrained_shape)).eval()
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
    net = UpdateNet(3, group.unconstrained_shape, channels=(32, 64), out_scale=20.0)
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (seconds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", nargs="+", choices=("calls", "deq_step", "resolution"),
                        default=["calls", "deq_step", "resolution"])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        shapes = [("1x32", (1, 3, 16, 16), {})]
        calls, rounds = 3, 2
        step_shape, res_size, res_batch, resolutions = (2, 8, 14, 14), 48, 2, [None, 24]
    else:
        shapes = [("1x32", (1, 3, 32, 32), {}), ("64x224", (64, 3, 224, 224), {}),
                  ("1x32,cells=8", (1, 3, 32, 32), {"groups": ["monotone"], "kwargs": {"cells": 8}}),
                  ("64x224,cells=8", (64, 3, 224, 224), {"groups": ["monotone"], "kwargs": {"cells": 8}})]
        calls, rounds = 200, 7
        step_shape, res_size, res_batch, resolutions = (8, 32, 14, 14), 210, 16, [None, 140, 105, 70, 52, 35]
    payload: dict[str, Any] = {"threads": args.threads, "quick": args.quick, "calls": [], "deq_step": None,
                               "resolution": []}
    if "calls" in args.sections:
        payload["calls"] = run_calls(shapes, calls=calls, rounds=rounds)
    if "deq_step" in args.sections:
        payload["deq_step"] = run_deq_step(step_shape, calls=max(calls // 4, 1), rounds=rounds)
    if "resolution" in args.sections:
        payload["resolution"] = run_resolution(res_size, res_batch, resolutions, rounds=max(rounds // 2, 1))
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hot_path.json").write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
