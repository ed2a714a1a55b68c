"""The self-supervised canonicalization benchmark's quick mode runs and writes what it reports."""

from __future__ import annotations

import json

import torch

from _benchmarks import load_benchmark


def test_quick_mode_writes_json_and_table(tmp_path, monkeypatch):
    module = load_benchmark("canonicalization", monkeypatch)
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
