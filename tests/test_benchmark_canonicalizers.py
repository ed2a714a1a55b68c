"""The canonicalizer benchmark's quick mode runs and writes its outputs (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json_and_plot(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_canonicalizers", ROOT / "benchmarks" / "canonicalizers.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve the module's annotations through sys.modules.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    result = module.main(["--quick", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # the benchmark restores the thread count it changes
    saved = json.loads((tmp_path / "canonicalizers.json").read_text())
    assert saved["rows"].keys() == result["rows"].keys() >= {"identity", "direct", "deq", "deq_bf16"}
    assert any(name.startswith("optimization[") for name in saved["rows"])
    for row in saved["rows"].values():
        assert all(ms > 0 for ms in row["ms_per_image"].values()) and row["invariance_error"] >= 0
    assert {r["setting"] for r in saved["optimization_sweep"]} == {"sgd lr=1", "adam lr=0.03"}
    assert saved["config"]["load_average_before"] and saved["targets"]
    assert (tmp_path / "canonicalizers.png").stat().st_size > 0
