"""The latent-overhead benchmark's quick mode runs and writes its JSON and plot (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json_and_plot(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_latent_overhead", ROOT / "benchmarks" / "latent_overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    payload = module.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "latent_overhead.json").read_text())
    assert saved["rows"].keys() == payload["rows"].keys() == {name for name, _ in module.QUICK_MODELS}
    for name, row in saved["rows"].items():
        assert row["bare_s"] > 0 and row["dec@1"] > 0 and row["dec@2"] > 0
        # Every variant was timed in every round (interleaved), so the ratios compare like with like.
        assert {len(t) for t in saved["times_s"][name].values()} == {saved["repeats"]}
    assert (tmp_path / "latent_overhead.png").stat().st_size > 0
