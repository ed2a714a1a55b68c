"""The hot-path benchmark's quick mode runs and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
import math

from equican import list_groups

from _benchmarks import load_benchmark


def test_quick_mode_writes_every_section(tmp_path, monkeypatch):
    module = load_benchmark("hot_path", monkeypatch)
    payload = module.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "hot_path.json").read_text())
    assert saved["quick"] and {row["group"] for row in saved["calls"]} == set(list_groups())
    for row in saved["calls"]:
        for key in ("act", "act_inverse", "act_unchecked", "act_inverse_unchecked"):
            assert math.isfinite(row[f"ratio_{key}"]) and row[f"ratio_{key}"] > 0
    assert saved["deq_step"]["ratio"] > 0 and saved["deq_step"]["seconds"]["net"] > 0
    resolutions = [row["resolution"] for row in saved["resolution"]]
    assert resolutions[0] == 48 and resolutions[1] == 24
    # The full-resolution row is the reference of the others: no deviation from itself, speedup 1.
    assert saved["resolution"][0]["relative_deviation"] == 0 and saved["resolution"][0]["speedup"] == 1
    assert payload["deq_step"]["shape"] == saved["deq_step"]["shape"]
    assert (tmp_path / "hot_path.md").read_text() == module.page(saved)


def test_published_page_is_generated_from_its_json(tmp_path, monkeypatch):
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    module = load_benchmark("hot_path", monkeypatch)
    payload = json.loads((results / "hot_path.json").read_text(encoding="utf-8"))
    assert not payload["quick"], "the published hot-path page must come from a full run"
    assert module.page(payload) == (results / "hot_path.md").read_text(encoding="utf-8")
