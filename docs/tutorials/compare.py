"""Tutorial 2: compare monotone and affine approximations of local scaling with ``equican compare``.

Runs a *quick* comparison (a pipeline check that takes seconds; its numbers mean nothing): the same small CNN on
the same Locally Scaled MNIST split, trained plainly, with monotone augmentation, and behind the DEC canonicalizer
over the monotone and the affine group, two seeds each. Then it reads ``compare.json`` back the way a reader reads
the table: the run with the lowest local-scale error, and each run's row of the invariance cross table.

Run it from any directory (it writes ``compare_quick/`` there):

    python docs/tutorials/compare.py

The same comparison on the command line:

    equican compare --quick --groups monotone affine --seeds 0 1 --out compare_quick \\
        --set "model.options.channels=[4, 8]" --set "method.options.channels=[4, 8]"
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from equican.compare import QUICK, compare, page, tables
from equican.config import apply_overrides, load_config

OUT = Path("compare_quick")
GROUPS = ("monotone", "affine")
SEEDS = (0, 1)

# 1. The base config: the packaged one of `equican compare` (equican/configs/compare.toml), shrunk by the same
#    overrides as `equican compare --quick` (48 training and 12 test digits, 1 epoch, 6 evaluated samples) and
#    narrower networks, so that all 8 runs train in seconds on one CPU thread.
base = apply_overrides(load_config("compare"), [*QUICK, "model.options.channels=[4, 8]",
                                                "method.options.channels=[4, 8]"])
print(f"data: {base.data.dataset}, {base.data.options['digits']} digit(s) on a {base.data.options['canvas']}px "
      f"canvas, scales U{tuple(base.data.options['scale_range'])}; {base.optim.epochs} epoch(s)")

# 2. Train and evaluate every run: plain, augment[monotone], dec[monotone], dec[affine], for each seed. It prints
#    the two tables and writes compare.md/.json/.csv, compare.png and canonical_forms.png into OUT.
payload = compare(base, groups=GROUPS, baselines=("plain", "augment"), seeds=SEEDS, out=OUT, progress=False,
                  figure_count=4)

# 3. Read the results back from the file, as you would after a long run on another machine.
data = json.loads((OUT / "compare.json").read_text())
runs, summary = data["runs"], data["summary"]
assert list(runs) == ["plain", "augment[monotone]", "dec[monotone]", "dec[affine]"]
assert data["eval_groups"] == list(GROUPS)  # the cross table's columns default to the compared groups
assert (OUT / "compare.md").read_text() == page(data)  # the page is made from the JSON alone
assert tables(data) in page(data)

# Every run has one entry per seed; the summary is (mean, sample standard deviation) over those entries.
for name, rows in runs.items():
    assert [r["seed"] for r in rows] == list(SEEDS)
    for key, (mean, spread) in summary[name].items():
        values = [r[key] for r in rows]
        assert abs(mean - statistics.fmean(values)) < 1e-12 and abs(spread - statistics.stdev(values)) < 1e-12
    for r in rows:
        assert 0 <= r["accuracy_clean"] <= 1 and 0 <= r["accuracy"] <= 1 and r["local_scale_error"] >= 0

# The main table's question: which run's predictions move least when each digit is rescaled on its own?
lse = {name: summary[name]["local_scale_error"] for name in runs}
best = min(lse, key=lambda name: lse[name][0])
print(f"\nlowest local-scale error: {best} ({lse[best][0]:.4f} ± {lse[best][1]:.4f})")

# The cross table's question: trained for one group, how invariant is each run under each group's sampler?
print("\ninvariance error, trained for (row) x evaluated under (column):")
print(f"{'':<20}" + "".join(f"{g:>18}" for g in GROUPS))
for name in runs:
    cells = [summary[name][f"invariance[{g}]"] for g in GROUPS]
    assert all(0 <= mean <= 2 ** 0.5 for mean, _ in cells)  # an L2 distance of two probability vectors
    print(f"{name:<20}" + "".join(f"{mean:>9.4f} ± {spread:.4f}" for mean, spread in cells))

# Per-run outputs: each run (and seed) has its own directory with a checkpoint and metrics.json.
for name in runs:
    for seed in SEEDS:
        assert (OUT / name / f"seed{seed}" / "metrics.json").is_file()
for figure in ("compare.png", "canonical_forms.png"):
    assert (OUT / figure).stat().st_size > 0
print(f"\nwrote {OUT}/: compare.md, compare.json, compare.csv, compare.png, canonical_forms.png and one "
      f"directory per run. With {base.eval.limit} test samples these numbers are noise: see the full run.")
