"""equican against the paper's reference code, side by side in one process (issue 14's targets).

The reference, github.com/ashiq24/local-scale-equivariance, has no license, so it never ships with equican: fetch
it into a scratch folder and pass the folder with ``--reference``. This script imports two of its functions at run
time (``utils.sampling_utils.inv_deform`` and ``models.surrogate_model.DEMAdapter``) and times them beside equican's
counterparts, interleaved, one torch thread, the minimum over rounds:

* ``inverse``: the inverse local-scaling action on ``(16, 3, 70, 70)`` images (the reference's MNIST size), for 4 and
  8 cells: ``inv_deform(φ_x, φ_y, x)`` with random ``φ`` of shape ``(16, R+1, R)`` against
  ``MonotoneScaling(cells=R).act_inverse(g, x)`` with sampled ``g``. Speed only: the accuracy of both inverses is
  measured by ``benchmarks/group_actions.py`` (its paper-style per-axis inverse row).
* ``dec``: one evaluation solve of the DEC on 16 inputs of 210×210 (the size of the Locally Scaled MNIST
  composites): the reference's ``DEMAdapter`` with its MNIST settings (``adapter_channels [3, 32, 64, 64]``,
  3×3 filters, pooling 2-2-1, 4 knots, 5 Anderson iterations; it resizes every input to 224×224) against equican's
  DEC on the same chart (``monotone``, ``cells=3``, ``min_width=0``), ``UpdateNet`` 3 -> (32, 64), 5 Anderson
  iterations, at full resolution and at working resolutions. Random weights on both sides: this times the solve;
  what a working resolution costs a trained canonicalizer is ``benchmarks/hot_path.py``'s trade-off.

    python benchmarks/paper_reference.py --reference /tmp/local-scale-equivariance
    python benchmarks/paper_reference.py --reference DIR --quick     # seconds (exercised by a test when DIR exists)
    python benchmarks/paper_reference.py                             # without a reference: says so, exits 0

Writes ``paper_reference.json`` and its page ``paper_reference.md`` to ``--out`` (default outputs/benchmarks; with
``--page``, also to docs/results) and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the repository root makes the siblings the package ``benchmarks``
    sys.path.insert(0, str(ROOT))

from equican.report import machine_info  # noqa: E402
from benchmarks import write_result  # noqa: E402

#: The files of the reference this script imports, relative to its folder.
REFERENCE_FILES = ("utils/sampling_utils.py", "models/surrogate_model.py")


def load_reference(folder: Path) -> tuple[Callable[..., torch.Tensor], type]:
    """``(inv_deform, DEMAdapter)`` imported from a fetched copy of the reference at ``folder``.

    Raises:
        FileNotFoundError: ``folder`` lacks one of :data:`REFERENCE_FILES` (the message names it).
    """
    missing = [name for name in REFERENCE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--reference {folder}: expected a copy of ashiq24/local-scale-equivariance with "
                                f"{', '.join(REFERENCE_FILES)}, got a folder without {', '.join(missing)}")
    sys.path.insert(0, str(folder))
    from models.surrogate_model import DEMAdapter  # noqa: E402 (the reference's own module layout)
    from utils.sampling_utils import inv_deform

    return inv_deform, DEMAdapter


def interleaved(work: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """The minimum over ``rounds`` interleaved rounds of each callable's time, after one warm-up call each."""
    times: dict[str, list[float]] = {k: [] for k in work}
    for fn in work.values():
        fn()
    for _ in range(rounds):
        for key, fn in work.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def run_inverse(inv_deform: Callable[..., torch.Tensor], *, batch: int, size: int, cells: int,
                rounds: int) -> dict[str, float]:
    """Milliseconds per call of the reference's ``inv_deform`` and equican's monotone ``act_inverse``."""
    from equican import make_group

    gen = torch.Generator().manual_seed(cells)
    x = torch.rand(batch, 3, size, size, generator=gen)
    group = make_group("monotone", cells=cells)
    g = group.sample(batch, generator=gen)
    phi_x, phi_y = (torch.rand(batch, cells + 1, cells, generator=gen) for _ in range(2))
    with torch.no_grad():
        t = interleaved({"reference": lambda: inv_deform(phi_x, phi_y, x),
                         "equican": lambda: group.act_inverse(g, x)}, rounds)
    return {"cells": cells, "reference_ms": 1e3 * t["reference"], "equican_ms": 1e3 * t["equican"],
            "speedup": t["reference"] / t["equican"]}


def run_dec(dem_adapter: type, *, batch: int, size: int, resolutions: list[int | None],
            rounds: int) -> dict[str, Any]:
    """Milliseconds per image of one evaluation solve: the reference's DEMAdapter and equican's DEC per resolution."""
    from equican import make_group
    from equican.canon import DEQCanonicalizer, DEQConfig, SolverSettings
    from equican.canon.nets import UpdateNet

    params = types.SimpleNamespace(adapter_num_layers=2, adapter_channels=[3, 32, 64, 64], adapter_filter_size=[3, 3],
                                   adapter_pool_rate=[2, 2, 1], adapter_coarse_resolution=[4], num_phi_layers=1,
                                   inner_epochs=5, dem_image_scale=True)
    torch.manual_seed(0)
    reference = dem_adapter(params).eval()
    group = make_group("monotone", cells=3, min_width=0.0)
    config = DEQConfig(eval=SolverSettings(solver="anderson", max_iter=5, tol=1e-6))
    net = UpdateNet.for_group(group, 3, channels=(32, 64))
    canons = {r: DEQCanonicalizer(group, net, config, resolution=r).eval() for r in resolutions}
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    start = torch.ones(batch, 4, 3)  # the reference's initial φ, as its backbones pass it
    work: dict[str, Callable[[], Any]] = {"reference": lambda: reference._DEQ(x, [start], [start])}
    work.update({f"equican@{r or size}": (lambda c=c: c(x)) for r, c in canons.items()})
    with torch.no_grad():
        t = interleaved(work, rounds)
    ms = {k: 1e3 * v / batch for k, v in t.items()}
    return {"size": size, "batch": batch, "ms_per_image": ms,
            "speedup": {k: ms["reference"] / v for k, v in ms.items() if k != "reference"}}


def page(payload: dict[str, Any]) -> str:
    """The results page (docs/results/paper_reference.md), from the JSON alone."""
    m = payload["machine"]
    dec = payload["dec"]
    lines = ["# equican against the paper's reference code", "",
             f"Written by `benchmarks/paper_reference.py` from `paper_reference.json`; measured with "
             f"`{payload['command']}` against a fetched copy of github.com/ashiq24/local-scale-equivariance (commit "
             f"1c07b54; it has no license, so it is imported at run time and never ships). One process, 1 torch "
             f"thread, interleaved rounds, the minimum over rounds; {m['cpu']}, torch {m['torch']}. See the "
             f"script's docstring for the protocol.", "",
             "## Inverse local-scaling action", "",
             "`inv_deform` against `MonotoneScaling(cells=R).act_inverse`, 16 images of 70×70 (speed only; the "
             "accuracy of both inverses is measured by `benchmarks/group_actions.py`, the per-axis inverse row).", "",
             "| cells | reference (ms) | equican (ms) | equican's speedup |", "|---|---|---|---|"]
    lines += [f"| {r['cells']} | {r['reference_ms']:.1f} | {r['equican_ms']:.1f} | {r['speedup']:.2f} |"
              for r in payload["inverse"]]
    lines += ["", f"## DEC evaluation at {dec['size']}×{dec['size']}", "",
              f"One evaluation solve of {dec['batch']} inputs, 5 Anderson iterations on both sides, random weights. "
              "The reference resizes every input to 224×224; `equican@N` works on an N px copy (the element acts "
              "on the full input), `equican@" + str(dec["size"]) + "` at full resolution.", "",
              "| | ms per image | equican's speedup |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {dec['speedup'][k]:.2f} |" if k in dec["speedup"] else f"| {k} | {v:.1f} | |"
              for k, v in dec["ms_per_image"].items()]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, default=os.environ.get("EQUICAN_REFERENCE"), metavar="DIR",
                        help="a fetched copy of ashiq24/local-scale-equivariance (default: $EQUICAN_REFERENCE)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (seconds)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--page", type=Path, nargs="?", const=ROOT / "docs" / "results", default=None,
                        metavar="DIR", help="also write paper_reference.json and .md to DIR (default docs/results)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="measure nothing: regenerate the page from an earlier JSON")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text(encoding="utf-8"))
        write_result("paper_reference", payload, page(payload), args.out, args.page)
        return payload
    if args.reference is None:  # `make bench` runs every script: without the reference there is nothing to compare
        print("paper_reference: skipped (no --reference DIR and no EQUICAN_REFERENCE: fetch "
              "ashiq24/local-scale-equivariance into a scratch folder to run it)")
        return {}
    inv_deform, dem_adapter = load_reference(args.reference)
    torch.set_num_threads(1)
    from equican.errors import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # random weights: the 5 iterations rarely converge
    batch, small, large, rounds = (2, 24, 48, 1) if args.quick else (16, 70, 210, 3)
    payload: dict[str, Any] = {"command": " ".join(["python benchmarks/paper_reference.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
                               "quick": args.quick, "machine": machine_info()}
    payload["inverse"] = [run_inverse(inv_deform, batch=batch, size=small, cells=c, rounds=2 * rounds + 1)
                          for c in (4, 8)]
    for row in payload["inverse"]:
        print(f"inverse action, cells={row['cells']}: reference {row['reference_ms']:.1f} ms, equican "
              f"{row['equican_ms']:.1f} ms, speedup {row['speedup']:.2f}")
    payload["dec"] = run_dec(dem_adapter, batch=batch, size=large, resolutions=[None, 70, 64] if not args.quick
                             else [None, 24], rounds=rounds)
    for key, value in payload["dec"]["ms_per_image"].items():
        speedup = payload["dec"]["speedup"].get(key)
        print(f"DEC at {large}x{large}, {key}: {value:.1f} ms per image"
              + (f", {speedup:.2f}x the reference's speed" if speedup else ""))
    write_result("paper_reference", payload, page(payload), args.out, args.page)
    return payload


if __name__ == "__main__":
    main()
