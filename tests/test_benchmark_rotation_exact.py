"""The rotated-MNIST benchmark's quick mode runs every method and writes its page, JSON and plot (no timing
asserted)."""

from __future__ import annotations

import json

import pytest
from test_results_pages import _load as load_benchmark

pytestmark = pytest.mark.slow


def _load():
    return load_benchmark("rotation_exact")


def test_quick_mode_writes_page_json_and_plot(tmp_path):
    pytest.importorskip("escnn")
    bench = _load()
    assert bench.main(["--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["quick"] and saved["data"] == "bundled subset"
    assert list(saved["summary"]) == list(bench.METHODS)
    exact = saved["runs"]["exact[rotation]"][0]
    assert exact["config"]["method"]["name"] == "escnn" and exact["config"]["method"]["group"] == "rotation"
    assert exact["ms_per_image"] > 0 and exact["eval"]["invariance_group"].startswith("Rotation2d")
    page = (tmp_path / "results.md").read_text()
    assert all(f"| {method} |" in page for method in bench.METHODS) and "target <= 0.1" in page
    assert (tmp_path / "rotation_exact.png").stat().st_size > 0
    # --from-json trains nothing and reproduces the page.
    assert bench.main(["--from-json", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.md").read_text() == page


def test_verdict_says_met_and_missed():
    """The targets can fail: an exact canonicalizer no better than augmentation is reported as missed."""
    bench = _load()
    good = {"plain": {"accuracy": (0.6, 0), "invariance_error": (0.2, 0)},
            "augment": {"accuracy": (0.7, 0), "invariance_error": (0.1, 0)},
            "exact[rotation]": {"accuracy": (0.8, 0), "invariance_error": (0.01, 0)}}
    assert all(line.endswith("met") for line in bench.verdict(good))
    bad = {**good, "exact[rotation]": {"accuracy": (0.7, 0), "invariance_error": (0.1, 0)}}
    assert all(line.endswith("missed") for line in bench.verdict(bad))
