"""The self-supervised canonicalization benchmark's quick mode runs and writes what it reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json_and_table(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_canonicalization", ROOT / "benchmarks" / "canonicalization.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    result = module.main(["--quick", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads
    saved = json.loads((tmp_path / "canonicalization.json").read_text())
    assert set(saved["results"]) == set(result["results"]) == {"dec[scale]", "direct[scale]"}
    for name, rows in saved["results"].items():
        assert [r["steps"] for r in rows] == [2, 3]
        for r in rows:
            assert r["ratio"] > 0 and r["spread"] > 0
            assert ("converged" in r) == name.startswith("dec")
    assert "| dec[scale] @ 3 steps |" in (tmp_path / "canonicalization.md").read_text()
