"""The results pages in ``docs/results/`` are what their generators write from the committed JSON.

A page edited by hand, or JSON replaced without regenerating its page, fails here: every number on these pages comes
from a benchmark's JSON through the same code that wrote it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_{script}", ROOT / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_training_page_is_generated_from_its_json(tmp_path):
    bench = _load("training")
    bench.write_outputs(json.loads((RESULTS / "training.json").read_text(encoding="utf-8")), tmp_path)
    written = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert written == (RESULTS / "training.md").read_text(encoding="utf-8")


def test_rotation_exact_page_is_generated_from_its_json(tmp_path):
    bench = _load("rotation_exact")
    payload = json.loads((RESULTS / "rotation_exact.json").read_text(encoding="utf-8"))
    assert not payload["quick"] and len(payload["seeds"]) >= 2
    bench.write_outputs(payload, tmp_path)
    written = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert written == (RESULTS / "rotation_exact.md").read_text(encoding="utf-8")
    assert (RESULTS / "rotation_exact.png").is_file()


def test_performance_page_is_generated_from_its_json():
    suite = _load("suite")
    payload = json.loads((RESULTS / suite.JSON_NAME).read_text(encoding="utf-8"))
    assert not payload["quick"], "the published performance page must come from a full run"
    assert suite.page(payload) == (RESULTS / suite.PAGE_NAME).read_text(encoding="utf-8")
    for device, run in payload["runs"].items():
        for section in payload["sections"]:
            if section in run:
                assert (RESULTS / suite.figure_name(section, device)).is_file()


def test_compare_page_is_generated_from_its_json():
    from equican.compare import page

    payload = json.loads((RESULTS / "compare" / "compare.json").read_text(encoding="utf-8"))
    assert page(payload) == (RESULTS / "compare" / "index.md").read_text(encoding="utf-8")
    assert len(payload["seeds"]) >= 2, "the published comparison must have a spread over seeds"
    assert payload["command"].startswith("equican compare") and "--quick" not in payload["command"]
    for figure in ("compare.png", "canonical_forms.png"):
        assert (RESULTS / "compare" / figure).is_file()


def test_page_checks_see_a_changed_number(tmp_path):
    # Negative control: the same generator on JSON with one number changed no longer matches the committed page.
    suite = _load("suite")
    payload = json.loads((RESULTS / suite.JSON_NAME).read_text(encoding="utf-8"))
    device, run = next(iter(payload["runs"].items()))
    section = next(s for s in payload["sections"] if s in run)
    assert section in run
    text = json.dumps(payload)
    changed = json.loads(text.replace('"device_name": "', '"device_name": "changed ', 1))
    assert suite.page(changed) != (RESULTS / suite.PAGE_NAME).read_text(encoding="utf-8")


def test_canonicalization_page_is_generated_from_its_json():
    bench = _load("canonicalization")
    payload = json.loads((RESULTS / "canonicalization.json").read_text(encoding="utf-8"))
    assert not any("--quick" in command for command in payload["commands"])
    assert max(e["steps"] for entries in payload["results"].values() for e in entries) >= 1000
    assert bench.page(payload) == (RESULTS / "canonicalization.md").read_text(encoding="utf-8")


def test_paper_reference_page_is_generated_from_its_json():
    bench = _load("paper_reference")
    payload = json.loads((RESULTS / "paper_reference.json").read_text(encoding="utf-8"))
    assert not payload["quick"]
    assert bench.page(payload) == (RESULTS / "paper_reference.md").read_text(encoding="utf-8")
