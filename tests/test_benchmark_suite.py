"""The performance suite's quick mode runs every section, writes its JSON, figures and page, and the page can be
regenerated from the JSON alone. No timing is asserted (DESIGN.md: performance is measured in benchmarks/, never
asserted in a unit test); the measured numbers are only checked to be finite and positive."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TITLES = ("## Group operations", "## Canonicalizers", "## Latent canonicalization", "## Training throughput")


def _load():
    spec = importlib.util.spec_from_file_location("bench_suite", ROOT / "benchmarks" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    suite = _load()
    out = tmp_path_factory.mktemp("suite")
    threads = torch.get_num_threads()
    payload = suite.main(["--quick", "--device", "cpu", "--out", str(out)])
    assert torch.get_num_threads() == threads  # the suite restores the thread count it sets
    return suite, payload, out


def test_writes_json_with_every_section_and_figures(quick_run):
    suite, payload, out = quick_run
    saved = json.loads((out / "performance.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["quick"] and saved["sections"] == list(suite.SECTIONS) and saved["devices"] == ["cpu"]
    run = saved["runs"]["cpu"]
    assert run["device"] == "cpu" and run["device_name"]
    for section in suite.SECTIONS:
        assert section in run and run[section]["wall_seconds"] > 0
        assert (out / f"performance_{section}_cpu.png").stat().st_size > 0
    machine = saved["machine"]
    assert machine["cpu"] and machine["torch"] == torch.__version__ and len(machine["load_average_start"]) == 3


def test_group_section_covers_every_group_op_and_size(quick_run):
    from equican import list_groups

    suite, payload, _ = quick_run
    result = payload["runs"]["cpu"]["groups"]
    configs = {tuple(c) for c in result["configs"]}
    assert len({size for size, _ in configs}) >= 2 and len({batch for _, batch in configs}) >= 2
    for name in list_groups():
        for op in (*suite.GROUP_OPS, *suite.REFERENCE_OPS):
            rows = [r for r in result["rows"] if r["group"] == name and r["op"] == op]
            assert {(r["size"], r["batch"]) for r in rows} == configs, (name, op)
            for r in rows:
                assert math.isfinite(r["seconds"]) and r["seconds"] > 0
                assert len(r["seconds_all"]) == result["settings"]["repeats"]
                if op in suite.GROUP_OPS:
                    assert r["reference"] in suite.REFERENCE_OPS and math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert set(result["slopes"][name]) == {*suite.GROUP_OPS, *suite.REFERENCE_OPS}


def test_other_sections_measure_what_they_claim(quick_run):
    suite, payload, _ = quick_run
    run = payload["runs"]["cpu"]
    canon = run["canonicalizers"]["rows"]
    families = {r["family"] for r in canon.values()}
    assert families == {"identity", "direct", "dec_anderson", "dec_fixed_point", "optimization"}
    for row in canon.values():
        assert row["ms_per_image"] > 0 and row["invariance_error"] >= 0 and row["ratio_to_direct"] > 0
        if row["family"].startswith("dec_"):  # forced: no solve reaches tolerance 1e-12, so none stops early
            assert row["converged_fraction"] == 0
    latent = run["latent"]["rows"]
    assert set(latent) == {name for name, _ in suite.QUICK_LATENT.models}
    assert all(r["params"] > 0 and r["bare_s"] > 0 and r["dec@1"] > 0 and r["dec@2"] > 0 for r in latent.values())
    training = run["training"]["rows"]
    assert set(training) == set(suite.QUICK_TRAINING.methods) == {"plain", "dec", "dec@64", "dec@36", "dec,ce", "dec@64,ce"}
    for row in training.values():
        assert row["images_per_s"] > 0 and len(row["segment_seconds"]) == suite.QUICK_TRAINING.segments
    assert training["plain"]["slowdown_vs_plain"] == 1.0


def test_page_lists_every_section_and_states_the_machine(quick_run):
    _, payload, out = quick_run
    text = (out / "performance.md").read_text()
    for title in TITLES:
        assert title in text
    assert "Not measured in this run" not in text
    assert "## Machine" in text and payload["machine"]["cpu"] in text and f"torch {torch.__version__}" in text
    assert "Quick mode" in text
    for section in ("groups", "canonicalizers", "latent", "training"):
        assert f"(performance_{section}_cpu.png)" in text


def test_from_json_regenerates_the_same_page(quick_run, tmp_path):
    suite, payload, out = quick_run
    again, docs = tmp_path / "again", tmp_path / "docs"
    regenerated = suite.main(["--from-json", str(out / "performance.json"), "--out", str(again), "--page", str(docs)])
    assert regenerated == json.loads((out / "performance.json").read_text())
    for directory in (again, docs):
        assert (directory / "performance.md").read_text() == (out / "performance.md").read_text()
        assert json.loads((directory / "performance.json").read_text()) == regenerated
        assert sorted(p.name for p in directory.glob("*.png")) == sorted(p.name for p in out.glob("*.png"))


def test_selected_sections_only(tmp_path):
    suite = _load()
    payload = suite.main(["--quick", "--device", "cpu", "--sections", "groups", "--out", str(tmp_path)])
    assert set(payload["runs"]["cpu"]) == {"device", "device_name", "groups"}
    text = (tmp_path / "performance.md").read_text()
    assert all(title in text for title in TITLES)  # every section is listed, the unmeasured ones say so
    assert text.count("Not measured in this run") == 3
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["performance_groups_cpu.png"]


def test_loglog_slope_of_linear_and_constant_costs():
    suite = _load()
    rows = [{"group": "g", "op": op, "pixels": p, "seconds": cost(p)}
            for p in (2 ** 10, 2 ** 14, 2 ** 18) for op, cost in (("act", lambda p: 3e-9 * p),
                                                                  ("compose", lambda p: 1e-4))]
    slopes = suite.loglog_slopes(rows, min_pixels=0)["g"]
    assert slopes["act"] == pytest.approx(1.0) and slopes["compose"] == pytest.approx(0.0, abs=1e-12)
    assert slopes["act_inverse"] is None  # no points
    assert suite.loglog_slopes(rows, min_pixels=2 ** 18)["g"]["act"] is None  # one pixel count: no slope
