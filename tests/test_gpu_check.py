"""``make gpu-check`` (scripts/gpu_check.py): its no-CUDA path, and its reading of pytest's results."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path; on a GPU machine run make gpu-check")
def test_without_cuda_it_skips_with_exit_zero_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "gpu-check: skipped: torch sees no CUDA device" in proc.stdout
    assert not out.exists()


def test_makefile_target_runs_the_script():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "gpu-check:" in makefile and "scripts/gpu_check.py" in makefile


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="7" failures="1" errors="1" skipped="2">'
                   '</testsuite></testsuites>', encoding="utf-8")
    assert _module().junit_counts(xml) == {"tests": 7, "passed": 3, "failed": 1, "errors": 1, "skipped": 2}


def test_cuda_selection_collects_the_device_tests():
    """`-k cuda` picks the device-parametrized tests when CUDA is there; here it must at least collect the laws with
    the cpu id, so the id the selection relies on exists (negative control: `-k cuda` finds none on a CPU box)."""
    ids = subprocess.run([sys.executable, "-m", "pytest", "tests/test_laws.py", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    assert "-cpu-" in ids or "[cpu-" in ids
    assert ("cuda" in ids) == torch.cuda.is_available()


@pytest.mark.slow
def test_smoke_step_runs_on_the_cpu():
    """The smoke step's code, on the device at hand: every group's canonicalizer step and two tiny trainings."""
    import json

    # The groups a fresh process registers (this one also holds the groups that test modules define).
    listed = subprocess.run([sys.executable, "-c", "import equican; print(*equican.list_groups())"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=True)
    groups = listed.stdout.split()
    assert "monotone" in groups
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("SMOKE "))
    results = json.loads(line[len("SMOKE "):])
    assert set(results) == {*(f"canonicalizer[{g}]" for g in groups), "train[dec]", "train[latent]"}
    assert all(v == "ok" for v in results.values()), results
    assert proc.returncode == 0


def test_smoke_reports_a_failure(tmp_path):
    # Negative control: a device that does not exist fails every check, each with its error, and exits 1.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "nosuchdevice"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert '"canonicalizer[rotation]": "RuntimeError' in proc.stdout or "Error" in proc.stdout
