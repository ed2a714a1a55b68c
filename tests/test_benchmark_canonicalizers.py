"""The canonicalizer benchmark's quick mode runs and writes its outputs (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json_and_plot(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_canonicalizers", ROOT / "benchmarks" / "canonicalizers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        result = module.main(["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # the benchmark pins threads for stable timings; restore for other tests
    saved = json.loads((tmp_path / "canonicalizers.json").read_text())
    assert saved["rows"].keys() == result["rows"].keys() >= {"identity", "direct", "deq", "optimization[1]"}
    for row in saved["rows"].values():
        assert row["ms_per_image"] > 0 and row["invariance_error"] >= 0
    assert (tmp_path / "canonicalizers.png").stat().st_size > 0
