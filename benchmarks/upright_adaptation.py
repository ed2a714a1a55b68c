"""Adapt a network trained upright to rotated digits with an exact canonicalizer and the trained prior (issue 24).

A small CNN is trained on upright MNIST digits (centred on a 33×33 canvas) and then frozen. Each exact (escnn)
canonicalizer, C8 (``cyclic``, n = 8: scores of 8 rotations) and SO(2) (``rotation``: the angle of an equivariant
vector field), is trained for a few hundred steps with the prior alone
([`prior_loss`][equican.canon.base.Canonicalizer.prior_loss] of its result: cross-entropy of the C8 scores toward
the identity, ``1 - cos θ`` of the SO(2) vector's angle) on upright training digits: no labels, no task loss. The
frozen CNN is then evaluated on test digits rotated by angles drawn from U[0, 2π), bare and behind each canonicalizer.

Reported per canonicalizer and seed: the canonical-form error at arbitrary angles over the identity's (``‖canon(R x)
- canon(x)‖ / ‖R x - x‖``, summed over the batch), the share of upright test digits given the identity (C8) or an
angle within π/8 of it (SO(2)), accuracy upright and rotated, the prior loss before and after, prior-training seconds
and ms per image (canonicalizer + CNN, batch 64, one thread). equiadapt's numbers are quoted from issue 24 (measured
there with equiadapt 0.1.2, which is not a dependency and not installed here).

Data: the full MNIST in ``../shared/data/mnist`` beside the checkout when it is there (``--data`` to choose), else the
bundled subset.

Usage::

    python benchmarks/upright_adaptation.py                 # 3 seeds (~10 min per seed on one thread)
    python benchmarks/upright_adaptation.py --quick         # a pipeline check in seconds (what the tests run)

Writes ``upright_adaptation.json`` and ``upright_adaptation.md`` to ``--out`` (default ``docs/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from equican import make_group
from equican.data import load_mnist

ROOT = Path(__file__).resolve().parent.parent
CANVAS = 33
#: equiadapt 0.1.2 on the same task, as measured in issue 24 (one seed, one thread); not rerun here.
EQUIADAPT = {"C8": {"rotated_accuracy": 0.541, "form_ratio_untrained": 0.706, "form_ratio_prior": 0.624,
                    "ms_per_image": 1.71},
             "SO(2)": {"rotated_accuracy": 0.451, "form_ratio_untrained": 0.752, "form_ratio_prior": 0.683,
                       "ms_per_image": 14.1}}
#: equican before the trained prior, from the same issue (its table's "now" column).
BEFORE = {"C8": 0.428, "SO(2)": 0.426}
#: The canonicalizers: label -> (group, group options, whether the frozen CNN's task loss on upright training digits
#: is added to the prior; that variant needs labels, the others do not).
CANONS = {"C8 + task": ("cyclic", {"n": 8}, True), "C8": ("cyclic", {"n": 8}, False),
          "SO(2)": ("rotation", {}, False)}
FULL = {"train": 20000, "test": 300, "cnn_epochs": 2, "prior_steps": {"C8": 300, "SO(2)": 100, "C8 + task": 300},
        "prior_batch": {"C8": 32, "SO(2)": 16, "C8 + task": 32}, "lr": 1e-2}
QUICK = {"train": 128, "test": 32, "cnn_epochs": 1, "prior_steps": {"C8": 3, "SO(2)": 2, "C8 + task": 2},
         "prior_batch": {"C8": 8, "SO(2)": 4, "C8 + task": 4}, "lr": 1e-2}


def digits(split: str, limit: int, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``limit`` digits of ``split`` on the canvas: ``(N, 1, 33, 33)`` in [0, 1] and labels ``(N,)``."""
    images, labels = load_mnist(split=split, root=root, limit=limit)
    pad = (CANVAS - 28) // 2
    x = F.pad(images.float().div(255)[:, None], (pad, CANVAS - 28 - pad, pad, CANVAS - 28 - pad))
    return x, labels


def cnn() -> nn.Module:
    """The upright classifier: three 3×3 conv layers, ReLU, pooling, a linear head; ``(B, 1, 33, 33) -> (B, 10)``."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))


def train_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int, gen: torch.Generator) -> nn.Module:
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval().requires_grad_(False)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, canon: nn.Module | None = None) -> float:
    with torch.no_grad():
        hits = 0
        for xb, yb in zip(x.split(64), y.split(64)):
            inp = xb if canon is None else canon(xb).x
            hits += int((model(inp).argmax(1) == yb).sum())
    return hits / len(x)


def train_prior(canon: nn.Module, x: torch.Tensor, steps: int, batch: int, lr: float, gen: torch.Generator,
                task: tuple[nn.Module, torch.Tensor] | None = None) -> tuple[float, float]:
    """Adam on the mean trained prior of random upright batches ``x: (N, 1, H, W)``, cosine-decayed lr, plus the
    frozen model's cross-entropy on the canonical inputs when ``task = (model, labels (N,))``; returns the (first,
    last) prior losses."""
    opt = torch.optim.Adam(canon.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    first = last = float("nan")
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        result = canon(x[idx])
        loss = canon.prior_loss(result).mean()
        total = loss if task is None else loss + F.cross_entropy(task[0](result.x), task[1][idx])
        opt.zero_grad()
        total.backward()
        opt.step()
        sched.step()
        last = loss.item()
        first = last if step == 0 else first
    return first, last


def form_ratio(canon: nn.Module, x: torch.Tensor, angles: torch.Tensor) -> float:
    """``Σ‖canon(R x) - canon(x)‖ / Σ‖R x - x‖`` over the batch (the identity canonicalizer scores 1)."""
    rot = make_group("rotation")
    num = den = 0.0
    with torch.no_grad():
        for xb, ab in zip(x.split(64), angles.split(64)):
            xr = rot.act(ab, xb)
            num += float((canon(xr).x - canon(xb).x).flatten(1).norm(dim=1).sum())
            den += float((xr - xb).flatten(1).norm(dim=1).sum())
    return num / den


def identity_share(canon: nn.Module, x: torch.Tensor) -> float:
    """Share of upright inputs ``(N, 1, H, W)`` whose element is within π/8 of the identity."""
    with torch.no_grad():
        g = torch.cat([canon(xb).g for xb in x.split(64)])
    return float((g[:, 0].abs() < math.pi / 8 - 1e-6).double().mean())


def ms_per_image(model: nn.Module, canon: nn.Module | None, x: torch.Tensor) -> float:
    xb = x[:64]
    with torch.no_grad():
        (model(xb) if canon is None else model(canon(xb).x))
        start = time.perf_counter()
        model(xb) if canon is None else model(canon(xb).x)
    return (time.perf_counter() - start) * 1000 / len(xb)


def run_seed(seed: int, cfg: dict[str, Any], root: Path | None, done: Any = None) -> dict[str, Any]:
    from equican.canon.equivariant import equivariant_canonicalizer

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = digits("train", cfg["train"], root)
    xt, yt = digits("test", cfg["test"], root)
    start = time.perf_counter()
    model = train_cnn(x, y, cfg["cnn_epochs"], gen)
    cnn_seconds = time.perf_counter() - start
    angles = torch.rand(len(xt), 1, generator=gen, dtype=torch.float64).float() * 2 * math.pi
    xr = make_group("rotation").act(angles, xt)
    out: dict[str, Any] = {"seed": seed, "cnn_seconds": cnn_seconds, "bare": {
        "upright_accuracy": accuracy(model, xt, yt), "rotated_accuracy": accuracy(model, xr, yt),
        "ms_per_image": ms_per_image(model, None, xt)}}
    for label, (name, kw, task) in CANONS.items():
        canon = equivariant_canonicalizer(make_group(name, **kw), 1, channels=(8, 8), kernel_size=5)
        row: dict[str, Any] = {"parameters": sum(p.numel() for p in canon.parameters()),
                               "form_ratio_untrained": form_ratio(canon, xt, angles),
                               "identity_share_untrained": identity_share(canon, xt),
                               "rotated_accuracy_untrained": accuracy(model, xr, yt, canon)}
        start = time.perf_counter()
        row["prior_first"], row["prior_last"] = train_prior(canon, x, cfg["prior_steps"][label],
                                                            cfg["prior_batch"][label], cfg["lr"], gen,
                                                            (model, y) if task else None)
        row["prior_seconds"] = time.perf_counter() - start
        row["prior_steps"] = cfg["prior_steps"][label]
        canon.eval()
        row.update(form_ratio=form_ratio(canon, xt, angles), identity_share=identity_share(canon, xt),
                   upright_accuracy=accuracy(model, xt, yt, canon), rotated_accuracy=accuracy(model, xr, yt, canon),
                   ms_per_image=ms_per_image(model, canon, xt))
        out[label] = row
        print(f"seed {seed} {label}: {json.dumps(row)}", flush=True)
        if done is not None:  # a partial run is written too: a run cut short keeps its canonicalizers
            done(out)
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def labels_in(runs: list[dict[str, Any]]) -> list[str]:
    """The canonicalizers measured in every run (all of them unless a run was cut short)."""
    return [label for label in CANONS if all(label in r for r in runs)]


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    keys = ("form_ratio_untrained", "form_ratio", "identity_share_untrained", "identity_share", "upright_accuracy",
            "rotated_accuracy_untrained", "rotated_accuracy", "prior_first", "prior_last", "prior_seconds",
            "ms_per_image")
    summary = {"bare": {k: _mean_sd([r["bare"][k] for r in runs]) for k in runs[0]["bare"]}}
    for label in labels_in(runs):
        summary[label] = {k: _mean_sd([r[label][k] for r in runs]) for k in keys}
    return summary


def page(payload: dict[str, Any]) -> str:
    """The markdown page of ``payload`` (runs, summary, config)."""
    s, n, labels = payload["summary"], len(payload["runs"]), labels_in(payload["runs"])

    def f(pair: tuple[float, float], pct: bool = False) -> str:
        m, sd = pair
        return f"{100 * m:.1f}% ± {100 * sd:.1f}" if pct else f"{m:.3g} ± {sd:.2g}"

    def row(name: str, bare: str, key: str, pct: bool, equiadapt: str | None = None) -> str:
        cells = [f(s[label][key], pct) for label in labels]
        ea = [EQUIADAPT[k].get(equiadapt, "—") if equiadapt else "—" for k in ("C8", "SO(2)")]
        ea = [f"{100 * v:.1f}%" if pct and v != "—" else str(v) for v in ea]
        return "| " + " | ".join([name, bare, *cells, *ea]) + " |"

    cfg = payload["config"]
    lines = ["# Upright adaptation: a CNN trained upright, rotated digits, the exact canonicalizers' trained prior", "",
             f"Written by `benchmarks/upright_adaptation.py`"
             f"{' --quick (a pipeline check, not a measurement)' if payload['quick'] else ''}. Data: "
             f"{payload['data']}; a small CNN trained upright on {cfg['train']} digits ({cfg['cnn_epochs']} epochs), "
             f"then frozen; {cfg['test']} test digits on a {CANVAS}×{CANVAS} canvas, rotated by angles U[0, 2π); seeds "
             f"{[r['seed'] for r in payload['runs']]} (mean ± sd over {n}); one thread on a shared machine. The "
             "canonicalizers (escnn, channels (8, 8), kernel 5) are trained with Adam (lr "
             f"{cfg['lr']}, cosine decay) on upright training digits: C8 and SO(2) with the trained prior alone (no "
             "labels); *C8 + task* adds the frozen CNN's cross-entropy on the canonical inputs (labels, still upright "
             "digits only).", "",
             "| | bare CNN | " + " | ".join(f"equican {label}" for label in labels)
             + " | equiadapt C8 (issue 24) | equiadapt SO(2) (issue 24) |",
             "|---|" + "---:|" * (len(labels) + 3),
             row("accuracy upright", f(s["bare"]["upright_accuracy"], True), "upright_accuracy", True),
             row("accuracy rotated, untrained canonicalizer", f(s["bare"]["rotated_accuracy"], True),
                 "rotated_accuracy_untrained", True),
             row("**accuracy rotated, trained**", f(s["bare"]["rotated_accuracy"], True), "rotated_accuracy", True,
                 "rotated_accuracy"),
             row("canonical-form error / identity's, untrained", "1", "form_ratio_untrained", False,
                 "form_ratio_untrained"),
             row("canonical-form error / identity's, trained", "1", "form_ratio", False, "form_ratio_prior"),
             row("upright test digits given the identity (±π/8), untrained", "—", "identity_share_untrained", True),
             row("upright test digits given the identity (±π/8), trained", "—", "identity_share", True),
             row("prior loss, first step", "—", "prior_first", False),
             row("prior loss, last step", "—", "prior_last", False),
             row("training seconds", "—", "prior_seconds", False),
             row("ms per image, batch 64 (canonicalizer + CNN)", f(s["bare"]["ms_per_image"]), "ms_per_image", False,
                 "ms_per_image"), "",
             "Training steps (batch): " + ", ".join(f"{label} {cfg['prior_steps'][label]} "
                                                    f"({cfg['prior_batch'][label]})" for label in labels)
             + "; equiadapt: 60 prior steps.", "",
             f"Before the trained prior (issue 24's table, the distance prior): equican C8 {100 * BEFORE['C8']:.1f}%, "
             f"SO(2) {100 * BEFORE['SO(2)']:.1f}% rotated accuracy.", "",
             "equiadapt's columns are quoted from issue 24 (equiadapt 0.1.2, one seed, its own CNN trained upright to "
             "96.1% / 35.9% rotated bare, 60 prior steps; its ms per image is the canonicalizer's alone); they were "
             "not rerun here (equiadapt is not a dependency of equican).", ""]
    target = EQUIADAPT["C8"]["rotated_accuracy"] + 0.05
    for label in labels:
        m = s[label]["rotated_accuracy"][0]
        lines.append(f"- {label}: rotated accuracy {100 * m:.1f}% against the target of issue 24, equiadapt C8 + 5 "
                     f"points ({100 * target:.1f}%): {'met' if m >= target else 'missed'}.")
    return "\n".join(lines) + "\n"


def write(payload: dict[str, Any], out: Path) -> None:
    payload["summary"] = summarize(payload["runs"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "upright_adaptation.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "upright_adaptation.md").write_text(page(payload))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a pipeline check in seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=None, help="MNIST IDX directory (default: ../shared/data/mnist)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="run nothing: merge the runs of these upright_adaptation.json files into --out")
    args = parser.parse_args(argv)
    if args.merge:
        payloads = [json.loads(p.read_text()) for p in args.merge]
        merged = {**payloads[0], "runs": sorted((r for p in payloads for r in p["runs"]), key=lambda r: r["seed"])}
        write(merged, args.out)
        return 0
    torch.set_num_threads(1)
    root = args.data
    if root is None and not args.quick:
        candidate = ROOT.parent / "shared" / "data" / "mnist"
        root = candidate if candidate.is_dir() else None
    cfg = QUICK if args.quick else FULL
    payload: dict[str, Any] = {"quick": args.quick, "data": "bundled subset" if root is None else "full MNIST",
                               "config": cfg, "equiadapt_issue_24": EQUIADAPT, "runs": []}
    for seed in args.seeds:
        runs = list(payload["runs"])
        payload["runs"] = runs + [run_seed(seed, cfg, root, lambda partial: write({**payload, "runs": runs + [partial]},
                                                                                    args.out))]
        write(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
