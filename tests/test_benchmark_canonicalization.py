"""The self-supervised canonicalization benchmark's quick mode runs and writes what it reports."""

from __future__ import annotations

import json

import pytest
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
            assert r["ratio"] > 0 and r["spread"] > 0 and r["pair_ratio"] > 0 and r["seed"] == 0
            assert 0.5 < r["ink"] < 2 and 0.5 < r["radius"] < 2  # a few steps from the identity: no collapse
            assert ("converged" in r) == name.startswith("dec")
    oracle = saved["oracle"]["1"]
    # Every digit at scale 1: the scale range [0.4, 1.7] makes the inputs' mean ink larger than the oracle's.
    assert 0 < oracle["spread"] < 1 and oracle["ink"] < 1 and oracle["radius"] < 1
    assert "| dec[scale] @ 3 steps | 1 |" in (tmp_path / "canonicalization.md").read_text()


def test_pairs_on_two_digits_and_merge(tmp_path, monkeypatch):
    module = load_benchmark("canonicalization", monkeypatch)
    first = module.main(["--quick", "--digits", "2", "--train-on", "pairs", "--groups", "monotone", "--kinds",
                         "direct", "--out", str(tmp_path / "a")])
    assert set(first["results"]) == {"direct[monotone]@2digits/pairs"}
    module.main(["--quick", "--digits", "2", "--train-on", "pairs", "--groups", "monotone", "--kinds", "direct",
                 "--seeds", "1", "--out", str(tmp_path / "b")])
    merged = module.main(["--merge", str(tmp_path / "a" / "canonicalization.json"),
                          str(tmp_path / "b" / "canonicalization.json"), "--out", str(tmp_path / "m")])
    rows = merged["results"]["direct[monotone]@2digits/pairs"]
    assert sorted({r["seed"] for r in rows}) == [0, 1] and len(merged["commands"]) == 2
    assert "| direct[monotone]@2digits/pairs @ 3 steps | 2 |" in (tmp_path / "m" / "canonicalization.md").read_text()
    assert (tmp_path / "m" / "canonicalization.png").stat().st_size > 0
    # Negative control: merging a file with itself would count its seeds twice, and is refused.
    with pytest.raises(SystemExit, match="two files"):
        module.main(["--merge", str(tmp_path / "a" / "canonicalization.json"),
                     str(tmp_path / "a" / "canonicalization.json"), "--out", str(tmp_path / "n")])


def test_bound_reaches_the_dec_and_names_the_run(tmp_path, monkeypatch):
    module = load_benchmark("canonicalization", monkeypatch)
    group, canon = module.build("dec", "affine", 0, 12, bound=3.0)
    assert canon.config.bound == 3.0
    assert module.build("dec", "affine", 0, 12)[1].config.bound is None  # control: unbounded by default
    result = module.main(["--quick", "--groups", "affine", "--kinds", "dec", "--bound", "3", "--out", str(tmp_path)])
    assert set(result["results"]) == {"dec[affine]/bound3"}
