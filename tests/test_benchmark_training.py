"""The training benchmark's quick mode runs every method and writes its table, JSON and plot (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _load():
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "benchmarks" / "training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_mode_writes_table_json_and_plot(tmp_path):
    bench = _load()
    assert bench.main(["--quick", "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["quick"] and saved["data"] == "bundled subset"
    assert list(saved["summary"]) == list(bench.METHODS)
    for method, runs in saved["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        assert all(r["config"]["method"]["name"] == method for r in runs)
    dec = saved["summary"]["dec"]
    accuracies = [r["eval"]["accuracy"] for r in saved["runs"]["dec"]]
    assert dec["accuracy"][0] == pytest.approx(sum(accuracies) / 2)
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {method} |" in table for method in bench.METHODS) and "target >= +1" in table
    assert (tmp_path / "training.png").stat().st_size > 0


def test_verdict_says_met_and_missed():
    """The target check can fail: a DEC worse than augmentation is reported as missed (negative control)."""
    bench = _load()
    good = {"dec": {"accuracy": (0.9, 0), "local_scale_error": (0.1, 0)},
            "augment": {"accuracy": (0.8, 0), "local_scale_error": (0.3, 0)}}
    assert all(line.endswith("met") for line in bench.verdict(good))
    bad = {"dec": {"accuracy": (0.8, 0), "local_scale_error": (0.3, 0)},
           "augment": {"accuracy": (0.8, 0), "local_scale_error": (0.3, 0)}}
    assert all(line.endswith("missed") for line in bench.verdict(bad))


def test_outputs_can_be_rewritten_from_json(tmp_path):
    """--from-json trains nothing and reproduces the page from the saved runs."""
    bench = _load()
    assert bench.main(["--quick", "--seeds", "0", "--methods", "plain", "augment", "--out", str(tmp_path / "a")]) == 0
    first = (tmp_path / "a" / "results.md").read_text()
    assert bench.main(["--from-json", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "results.md").read_text() == first
    assert "## Configuration" in first and "Machine:" in first
