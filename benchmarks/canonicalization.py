"""How far self-supervised training brings a canonicalizer toward invariance, per group, kind, training signal and
number of digits per image, with the collapse checks beside every number.

Each run trains a fresh canonicalizer alone, with no labels and no classifier, on the canonicalization loss
(``equican.canon.objective.canonicalization_loss``: input target, round-trip guard, ink term, by default) over
Locally Scaled MNIST composites, Adam at ``--lr``, batch ``--batch``, the update network 1→16→32 working at half the
input's side (24 px for the one-digit 48×48 images). The second view of each training image is either ``act(k, x)``
with ``k`` from the group's sampler rescaled in its chart by ``--strength`` (``--train-on sampler``; several values
are an equal mixture), or the same digits rendered at other scales (``--train-on pairs``: the data's own nuisance).
At each step count in ``--checkpoints`` it measures, on held-out composites:

* ``ratio``: canonical-form error over the identity's under the group's own (unscaled) sampler: 1 is no better
  than not canonicalizing, 0 is exactly invariant;
* ``pair_ratio``: the same on the data's own nuisance (two renderings of each held-out composite at independent
  per-digit scales), which needs no group sampler and so compares groups on equal terms;
* the collapse checks: ``spread`` (canonical forms of distinct inputs apart, over the identity's; ``oracle_spread``,
  the same for every digit rendered at scale 1, is what a perfect size normalizer scores), and ``ink`` and
  ``radius`` (the canonical forms' ink mass and ink radius over the inputs'; a shrink by ``s`` gives ``s²`` and
  ``s``);
* for the DEC, the converged fraction at the evaluation settings (10 Anderson iterations, relative tolerance 0.01)
  and the mean residual.

Results go to ``canonicalization.json`` under ``results["<kind>[<group>]<tag>"]`` (``<tag>``: ``@2digits`` for
composites of two digits, ``/pairs`` for pair training, ``/s4`` for strength 4, ...), one entry per seed and
checkpoint; ``canonicalization.md`` has the table (mean ± spread over seeds) and ``canonicalization.png`` the
frontier. ``--merge`` joins the JSON files of separate runs (e.g. one process per core) into one page.

    python benchmarks/canonicalization.py --groups monotone --kinds dec --strength 4 --checkpoints 250 1000
    python benchmarks/canonicalization.py --digits 2 --train-on pairs --groups monotone scale
    python benchmarks/canonicalization.py --merge out1/canonicalization.json out2/canonicalization.json --out docs/results
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
from equican.canon.objective import CanonicalizationLoss, ElementDistribution, canonicalization_loss
from equican.data.local_scale import LocalScaleConfig, LocalScaleMNIST
from equican.data.mnist import load_mnist
from equican.data.seeding import keyed_elements
from equican.errors import ConvergenceWarning
from equican.metrics import _interior
from equican.report import canonicalize, machine_info

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    # Run as a script or loaded from its file: the repository root makes ``benchmarks`` importable (as suite.py).
    sys.path.insert(0, str(HERE.parent))

from benchmarks.canonicalization_report import digit_count, forms_figures, page, plot, table  # noqa: E402

GROUPS = ("monotone", "scale", "affine", "rotation")
KINDS = ("dec", "direct")
SIGNALS = ("sampler", "pairs")


def data_config(digits: int, seed: int = 0) -> LocalScaleConfig:
    """The composites: one digit on 48×48 in [0.4, 1.7] (the compare task's), or ``digits`` 28 px cells in a
    row, column or diagonal, each digit scaled in [0.5, 1.25] independently (the MNIST digit's ink, about 20 px,
    stays inside its cell)."""
    if digits == 1:
        return LocalScaleConfig(digits=1, cell=48, canvas=48, scale_range=(0.4, 1.7), seed=seed)
    return LocalScaleConfig(digits=digits, cell=28, canvas=28 * digits, scale_range=(0.5, 1.25), seed=seed)


def load(split: str, digits: int, limit: int, root: str | None) -> LocalScaleMNIST:
    images, labels = load_mnist(split, root, limit)
    return LocalScaleMNIST.from_tensors(images, labels, data_config(digits))


def views(dataset: LocalScaleMNIST) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, a, b, reference)``, each ``(N, 1, S, S)``: the composites, two independent rescalings of each (the
    pairs) and every digit at scale 1 (the oracle's canonical forms)."""
    x = dataset.tensors()[0]
    pairs = torch.stack([dataset.rescalings(i, 2) for i in range(len(dataset))])
    reference = torch.stack([dataset.reference(i) for i in range(len(dataset))])
    return x, pairs[:, 0], pairs[:, 1], reference


def build(kind: str, group_name: str, seed: int, resolution: int | None, eval_iter: int = 10,
          train_iter: int = 5, bound: float | None = None) -> tuple[Any, Any]:
    """A fresh canonicalizer of ``kind`` over ``group_name`` (seeded), working at ``resolution`` px; a DEC trains
    with ``train_iter`` and evaluates with ``eval_iter`` Anderson iterations, its iterate soft-bounded by ``bound``
    (``DEQConfig.bound``; None: unbounded)."""
    group = make_group(group_name)
    torch.manual_seed(seed)
    net = UpdateNet.for_group(group, 1, channels=(16, 32))
    if kind == "dec":
        config = DEQConfig(train=SolverSettings(max_iter=train_iter),
                           eval=SolverSettings(max_iter=eval_iter, tol=0.01, stop_mode="rel"), residual_weight=1.0,
                           bound=bound)
        return group, DEQCanonicalizer(group, net, config, resolution=resolution)
    return group, DirectCanonicalizer(group, net, resolution=resolution)


def measure(canon: Any, held: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """The numbers of the module docstring on the held-out ``(x, a, b, reference)``."""
    x, a, b, _ = held
    with metrics.solver_statistics(canon) as record:
        report = metrics.canonicalization_report(canon, (x,), pairs=(a, b), seed=1)
    row = {"ratio": report["invariance"] / report["invariance_identity"], "pair_ratio": report["pair_ratio"],
           "spread": report["spread"] / report["spread_identity"], "ink": report["ink"], "radius": report["radius"]}
    row.update(metrics.summarize_solver_statistics(record))
    return row


def oracle(held: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """What a perfect size normalizer scores: the spread, ink and radius of the scale-1 renderings over the
    inputs' (ratios of sums, as [`canonical_ink`][equican.metrics.canonical_ink] computes them)."""
    x, reference = held[0], held[3]
    identity = IdentityCanonicalizer(make_group("scale"))
    (mr, rr), (mx, rx) = metrics.ink_moments(reference), metrics.ink_moments(x)
    return {"spread": metrics.canonical_spread(identity, (reference,)) / metrics.canonical_spread(identity, (x,)),
            "ink": float(mr.sum() / mx.sum()), "radius": float(rr.sum() / rx.sum())}


def resampling_floor(group_name: str, x: torch.Tensor) -> float:
    """The ratio of a canonicalizer that is exactly equivariant and leaves ``x`` itself as its canonical form:
    ``|act(k⁻¹, act(k, x)) − x|`` over ``|act(k, x) − x|``, with ``k`` drawn as the ratio draws them. What is left is
    the blur of resampling twice, which for the small elements of a group's default sampler is a sizeable part of the
    difference the ratio divides by: no canonicalizer that resamples can go far below it."""
    group = make_group(group_name)
    u = group.unchecked
    # The ratio's own elements (measure() draws them with seed 1).
    k = keyed_elements(group, 1, [(n,) for n in range(x.shape[0])], device=x.device, dtype=x.dtype)
    kx = u.act(k, x)
    return float(_interior(u.act_inverse(k, kx) - x, 4).abs().mean() / _interior(kx - x, 4).abs().mean())


def scale_oracle(dataset: LocalScaleMNIST, held: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """One digit per image: the size normalizer that knows each digit's scale ``s`` and applies ``1/s`` by the scale
    group, exactly equivariant. Its ratio (the scale group's sampler) and pair ratio are the floors of a global
    size normalizer on this data."""
    group = make_group("scale")
    u = group.unchecked
    x, a, b, _ = held
    n = x.shape[0]
    k = keyed_elements(group, 1, [(i,) for i in range(n)], device=x.device, dtype=x.dtype)
    h = -torch.stack([dataset.scales(i) for i in range(n)]).float().log()
    ha, hb = (-torch.stack([dataset.rescaling_scales(i, 2)[j] for i in range(n)]).float().log() for j in (0, 1))

    def mean_abs(t: torch.Tensor) -> torch.Tensor:
        return _interior(t, 4).abs().mean()

    ratio = mean_abs(u.act(h - k, u.act(k, x)) - u.act(h, x)) / mean_abs(u.act(k, x) - x)
    pair = mean_abs(u.act(ha, a) - u.act(hb, b)) / mean_abs(a - b)
    return {"ratio": float(ratio), "pair_ratio": float(pair)}


def self_supervised_step(canon: Any, optimizer: torch.optim.Optimizer, train: torch.Tensor, batch: int,
                         gen: torch.Generator, *, loss: CanonicalizationLoss | None = None,
                         elements: ElementDistribution = ElementDistribution(),
                         pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """One optimizer step of ``canon`` on the canonicalization loss alone, for ``batch`` images drawn (from ``gen``)
    from ``train (N, C, H, W)`` with second views ``act(k, x)``, ``k`` from ``elements``; or, with ``pairs``
    (two ``(N, C, H, W)`` renderings of the same composites), the pairs' first and second renderings."""
    i = torch.randint(len(train), (batch,), generator=gen)
    if pairs is not None:
        terms = canonicalization_loss(canon, pairs[0][i], config=loss, pair=pairs[1][i])
    else:
        terms = canonicalization_loss(canon, train[i], elements.sample(canon.group, batch, generator=gen), loss)
    total = terms.loss.mean() + canon.regularizer(terms.result.info)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def run(kind: str, group_name: str, train: tuple[torch.Tensor, ...], held: tuple[torch.Tensor, ...],
        args: argparse.Namespace, seed: int) -> list[dict[str, float]]:
    """Train one canonicalizer and measure it at every checkpoint."""
    resolution = args.resolution or train[0].shape[-1] // 2
    group, canon = build(kind, group_name, seed, resolution, args.eval_iter, args.train_iter, args.bound)
    loss = CanonicalizationLoss(target=args.target, ink=args.ink, centre=args.centre, blur=args.blur)
    elements = ElementDistribution(strengths=tuple(args.strength))
    optimizer = torch.optim.Adam(canon.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(seed)
    rows, started = [], time.perf_counter()
    for step in range(1, max(args.checkpoints) + 1):
        canon.train()
        self_supervised_step(canon, optimizer, train[0], args.batch, gen, loss=loss, elements=elements,
                             pairs=train[1:3] if args.train_on == "pairs" else None)
        if step in args.checkpoints:
            canon.eval()
            rows.append({"seed": seed, "steps": step, "seconds": time.perf_counter() - started,
                         **measure(canon, held)})
    stem = run_name(kind, group_name, args).replace("/", "~")
    if not args.quick:
        (args.out / "models").mkdir(parents=True, exist_ok=True)
        torch.save(canon.state_dict(), args.out / "models" / f"{stem}~seed{seed}.pt")
    if seed == min(args.seeds) and not args.quick:
        save_forms(canon, held, args.out / "forms" / f"{stem}.pt")
    return rows


FIGURE_COUNT = 6


def save_forms(canon: Any, held: tuple[torch.Tensor, ...], path: Path) -> None:
    """The first held-out pairs ``a``, ``b`` and their canonical forms, for the figure."""
    a, b = held[1][:FIGURE_COUNT], held[2][:FIGURE_COUNT]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"a": a, "b": b, "ca": canonicalize(canon, a), "cb": canonicalize(canon, b)}, path)


def run_name(kind: str, group: str, args: argparse.Namespace) -> str:
    """``kind[group]`` with the tags of every setting that differs from the defaults."""
    tags = f"@{args.digits}digits" if args.digits > 1 else ""
    if args.train_on == "pairs":
        tags += "/pairs"
    elif tuple(args.strength) != (1.0,):
        tags += "/s" + "+".join(f"{s:g}" for s in args.strength)
    if args.target != "input":
        tags += f"/{args.target}"
    if args.ink != 1.0:
        tags += f"/ink{args.ink:g}"
    if args.blur:
        tags += f"/blur{args.blur:g}"
    if args.resolution:
        tags += f"/res{args.resolution}"
    if args.train_iter != 5 and kind == "dec":
        tags += f"/train{args.train_iter}"
    if args.eval_iter != 10 and kind == "dec":
        tags += f"/eval{args.eval_iter}"
    if args.bound is not None and kind == "dec":
        tags += f"/bound{args.bound:g}"
    if args.lr != 1e-3:
        tags += f"/lr{args.lr:g}"
    if args.tag:
        tags += f"/{args.tag}"
    return f"{kind}[{group}]{tags}"


def save(payload: dict[str, Any], out: Path, figure: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "canonicalization.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "canonicalization.md").write_text(page(payload), encoding="utf-8")
    if figure:
        plot(payload, out / "canonicalization.png")


def merge(paths: list[Path], out: Path, data: str | None | bool = None) -> dict[str, Any]:
    """Join the payloads of separate runs: their commands, oracle spreads and results (a run name present in two
    files must hold different seeds)."""
    payload: dict[str, Any] = {"commands": [], "machine": None, "oracle": {}, "results": {}}
    for path in paths:
        part = json.loads(path.read_text(encoding="utf-8"))
        payload["commands"] += part["commands"]
        payload["machine"] = payload["machine"] or part["machine"]
        payload["oracle"].update(part["oracle"])
        for name, entries in part["results"].items():
            have = {(e["seed"], e["steps"]) for e in payload["results"].get(name, [])}
            clash = have & {(e["seed"], e["steps"]) for e in entries}
            if clash:
                raise SystemExit(f"canonicalization --merge: {name} has seed/steps {sorted(clash)} in two files")
            payload["results"].setdefault(name, []).extend(entries)
    if data is not False:
        payload["floors"] = floors(payload, data)
    save(payload, out)
    forms_figures([path.parent for path in paths], out)
    return payload


def floors(payload: dict[str, Any], root: str | None, limit: int = 200) -> dict[str, dict[str, Any]]:
    """The floors of every (digit count, group) in the results, on the held-out composites: each group's
    ``resampling_floor`` and, for one digit, the ``scale_oracle``."""
    found: dict[str, set[str]] = {}
    for name in payload["results"]:
        found.setdefault(digit_count(name), set()).add(name.split("[")[1].split("]")[0])
    result: dict[str, dict[str, Any]] = {}
    for digits, groups in sorted(found.items()):
        dataset = load("test", int(digits), limit, root)
        held = views(dataset)
        result[digits] = {"resampling": {g: resampling_floor(g, held[0]) for g in sorted(groups)}}
        if digits == "1":
            result[digits]["scale_oracle"] = scale_oracle(dataset, held)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: the bundled subset)")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--digits", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--train-on", default="sampler", choices=SIGNALS)
    parser.add_argument("--strength", nargs="+", type=float, default=[1.0])
    parser.add_argument("--target", default="input", choices=("input", "element"))
    parser.add_argument("--ink", type=float, default=1.0)
    parser.add_argument("--centre", type=float, default=0.0)
    parser.add_argument("--blur", type=float, default=0.0, help="input target's Gaussian blur, pixels")
    parser.add_argument("--train-iter", type=int, default=5, help="the DEC's Anderson iterations in training")
    parser.add_argument("--eval-iter", type=int, default=10, help="the DEC's Anderson iterations in evaluation")
    parser.add_argument("--resolution", type=int, default=None, help="working resolution (default: half the side)")
    parser.add_argument("--bound", type=float, default=None, help="the DEC's soft bound on its iterate (default: none)")
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[250, 1000])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--train-limit", type=int, default=1000)
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="a tag appended to the run names (to tell runs apart)")
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    parser.add_argument("--merge", nargs="+", type=Path, help="join these canonicalization.json files into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.data)
    if args.quick:
        args.groups = ["scale"] if args.groups == list(GROUPS) else args.groups[:1]
        args.checkpoints, args.batch = [2, 3], 4
        args.train_limit, args.test_limit = 16, 8
    args.checkpoints = sorted(set(args.checkpoints))
    train = views(load("train", args.digits, args.train_limit, args.data))
    held = views(load("test", args.digits, args.test_limit, args.data))
    shown = sys.argv[1:] if argv is None else argv
    payload: dict[str, Any] = {"commands": [" ".join(["python benchmarks/canonicalization.py", *shown])],
                               "machine": {**machine_info(), "load_average_before": list(os.getloadavg())},
                               "oracle": {str(args.digits): oracle(held)},
                               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "results": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted per input in the table
            for group_name in args.groups:
                for kind in args.kinds:
                    name = run_name(kind, group_name, args)
                    for seed in args.seeds:
                        payload["results"].setdefault(name, []).extend(run(kind, group_name, train, held, args, seed))
                        print(table({name: payload["results"][name]}).splitlines()[-1], flush=True)
                        # Written after every run, so that a failure later keeps what was measured.
                        save(payload, args.out, figure=False)
    finally:
        torch.set_num_threads(threads)
    payload["machine"]["load_average_after"] = list(os.getloadavg())
    save(payload, args.out, figure=not args.quick)
    print(table(payload["results"]))
    return payload


if __name__ == "__main__":
    main()
