"""The README's main job (``equican demo``): plain vs DEC-canonicalized training on Locally Scaled MNIST.

Trains the packaged ``demo`` configuration ([`equican.config.load_config`][equican.config.load_config] ``("demo")``)
twice, once with the ``plain`` method and once with ``dec`` (the deep equilibrium canonicalizer at the input, over the
config's group), on composites made from the MNIST digits bundled with the package; prints a table of accuracy, group
invariance error and local-scale error; and saves a figure of test composites at several scales beside their canonical
forms.

Files in ``out``: ``plain/`` and ``dec/`` (each run's checkpoint and metrics), ``results.md`` (the table),
``results.json`` (every number) and ``canonical_forms.png``, each written atomically. Rerunning the demo into the
same ``out`` (as ``make demo`` does) replaces the previous demo: its runs train with ``overwrite``; ``out`` is locked
while the demo runs, so a second demo into the same directory at the same time is refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from . import validation as V
from ._atomic import write_atomic, write_text_atomic
from ._paths import require_writable_dir
from ._rundir import RunLock
from .config import apply_overrides, load_config
from .report import results_table
from .train import CHECKPOINT, load_checkpoint, load_split, train

__all__ = ["DEMO_METHODS", "run_demo"]

DEMO_METHODS: dict[str, tuple[str, ...]] = {
    "plain": ("method.name=plain",),
    "dec": ("method.name=dec",),
}
"""The methods the demo compares, in table order, with their overrides of the packaged config. Each method's
options are its own table in ``equican/configs/demo.toml`` (``[method.options.dec]``: the DEC trains with the
canonicalization loss beside the classification loss, solves on a 24×24 copy of each 48×48 input and learns to
converge through the residual penalty)."""
# --quick: a pipeline check in seconds, not a result.
_QUICK = ("data.train_limit=64", "data.test_limit=16", "optim.epochs=1", "optim.batch_size=16", "eval.limit=8",
          "eval.rescalings=2")


def run_demo(*, out: str | Path = "outputs/demo", data: str | None = None, epochs: int | None = None,
             seed: int = 0, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and compare the demo's methods; print and save the results.

    Args:
        out: output directory.
        data: a directory of MNIST IDX files (None: the bundled subset).
        epochs: override the config's epochs.
        seed: the runs' seed.
        quick: a tiny run for tests.
        progress: progress bars.

    Returns:
        ``{method: metrics}`` with each run's evaluation and training time.
    """
    out = require_writable_dir(out, where="demo", name="--out")
    if epochs is not None:
        V.require_int(epochs, low=1, where="demo", name="--epochs")
    base = load_config("demo")
    overrides = [f"seed={seed}", f"progress={'true' if progress else 'false'}"]
    if data is not None:
        overrides.append(f"data.root={json.dumps(str(data))}")
    if quick:
        overrides += list(_QUICK)
    if epochs is not None:  # after --quick's settings: an explicit --epochs wins
        overrides.append(f"optim.epochs={epochs}")
    configs = {method: apply_overrides(base, [*overrides, *settings, f"out={json.dumps(str(out / method))}"])
               for method, settings in DEMO_METHODS.items()}
    results: dict[str, Any] = {}
    with RunLock(out, where="demo"):
        for method, config in configs.items():
            print(f"== training {method} ({config.model.name}, {config.optim.epochs} epochs) -> {config.out}",
                  flush=True)
            started = time.perf_counter()
            result = train(config, overwrite=True)  # a rerun replaces the previous demo
            results[method] = {**result["eval"], "train_seconds": time.perf_counter() - started}
        table = results_table(list(results.items()))
        print()
        print(table)
        write_text_atomic(out / "results.md", table + "\n")
        write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
        figure = out / "canonical_forms.png"
        _save_canonical_forms(out / "dec" / CHECKPOINT, figure, count=4 if quick else 8)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'} and {figure}")
    return results


def _save_canonical_forms(checkpoint: Path, path: Path, *, count: int) -> None:
    """Test composites at three scales (their own, all 1, one more draw) beside the DEC's canonical forms."""
    from .report import canonical_forms_figure

    config, objective, _ = load_checkpoint(checkpoint)
    source = load_split(dataclasses.replace(config.data, test_limit=count), "test").source
    count = min(count, len(source))
    images = torch.stack([torch.stack([source.reference(i), source[i][0], source.rescalings(i, 1)[0]])
                          for i in range(count)])
    fig = canonical_forms_figure(objective.model.canonicalizer, images,
                                 row_labels=["scale 1", "test draw", "rescaled"],
                                 title="DEC canonical forms: the same digits at three scales, each above its "
                                       "canonical form")
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
