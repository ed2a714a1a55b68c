"""The group-actions benchmark's quick mode runs, writes its outputs, and its accuracy section shows what it claims.

No timing is asserted (DESIGN.md: performance is measured in benchmarks/, never asserted in a unit test); the speed
numbers are only checked to be finite and positive.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("bench_group_actions", ROOT / "benchmarks" / "group_actions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("group_actions")
    threads = torch.get_num_threads()
    try:
        result = module.main(["--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the benchmark pins threads for stable timings; restore for other tests
    return module, result, out


def test_writes_json_and_plot(quick_run):
    _, result, out = quick_run
    saved = json.loads((out / "group_actions.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert (out / "group_actions.png").stat().st_size > 0
    assert set(saved) == {"config", "accuracy", "speed"}


def test_accuracy_section_structure(quick_run):
    _, result, _ = quick_run
    methods = result["accuracy"]["methods"]
    assert set(methods) == {"per_axis", "node_lattice", "act_inverse", "exact_per_pixel", "exact_warp_exact_inverse"}
    for per_kind in methods.values():
        assert set(per_kind) == {"nonseparable", "separable"}
        for stats in per_kind.values():
            assert set(stats) == {"mean", "max", "p99_9"}
            assert all(math.isfinite(v) and v > 0 for v in stats.values())
            assert stats["mean"] <= stats["p99_9"] <= stats["max"]
    folds = result["accuracy"]["folds"]
    assert folds["separable"]["warps_with_folds"] == 0  # separable monotone warps never fold
    assert folds["nonseparable"]["warps_with_folds"] > 0  # logits U(0, 1) fold most non-separable warps


def test_speed_section_covers_every_group(quick_run):
    from equican import list_groups

    _, result, _ = quick_run
    rows = result["speed"]["rows"]
    for name in list_groups():
        assert {"act", "inverse", "act_inverse", "compose"} <= {r["op"] for r in rows if r["group"] == name}
    assert any(r["op"] == "kornia_warp_affine" for r in rows)
    for row in rows:
        for key in ("seconds", "median_seconds", "reference_seconds", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    # The kornia reference row computes the same warp as the affine group (else its timing compares nothing).
    assert result["speed"]["kornia_max_abs_difference"] < 1e-4


def test_monotone_inverse_beats_per_axis_on_non_separable_warps(quick_run):
    methods = quick_run[1]["accuracy"]["methods"]
    ours, paper = methods["act_inverse"]["nonseparable"], methods["per_axis"]["nonseparable"]
    # Measured in quick mode: ours ~0.006 mean / ~0.09 max, the per-axis inversion ~0.15 / ~1.0.
    assert ours["mean"] < paper["mean"] / 5
    assert ours["max"] < paper["max"] / 3
    # And on separable warps, where the per-axis inversion is exact, ours is within 20% of it.
    assert methods["act_inverse"]["separable"]["mean"] < 1.2 * methods["per_axis"]["separable"]["mean"]


def test_per_axis_baseline_is_exact_for_separable_warps(quick_run):
    # A check of the baseline itself. For a separable warp, act(g, ·) maps the coordinate images to the sampling
    # map's values at the pixels (bilinear sampling reproduces linear images), and the per-axis inverse solves the
    # linear interpolation of exactly those values: the round trip of the coordinates is exact up to rounding.
    module = quick_run[0]
    generator = torch.Generator().manual_seed(3)
    group, g = module.protocol_warps(4, generator=generator, separable=True)
    coords = module.coordinate_images(4, 40, 40)
    back = torch.nn.functional.grid_sample(group.act(g, coords), module.per_axis_inverse_grid(g, 40, 40),
                                           align_corners=True)
    assert (back - coords).abs().max() < 1e-5
