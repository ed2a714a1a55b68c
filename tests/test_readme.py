"""The README's promises: its Python examples run, its two commands exist, and CI runs its test command."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(markdown: str) -> list[str]:
    """The contents of the ```python fenced blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_readme_python_examples_run(tmp_path):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    assert any("class " in b and "(Group, name=" in b and "check_group_laws" in b for b in blocks), \
        "the README should show how to define a group and check its laws"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    # A fresh interpreter, as a reader would run it: the example registers a group, which must not leak into
    # the registry of this test process (other tests iterate over every registered group).
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[5, 0, 4, 1, 9, 2, 1, 3]" in proc.stdout


def test_python_blocks_extraction():
    text = "x\n```python\na = 1\n```\n```bash\nnot python\n```\n```python\nb = 2\n\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = 2\n\n"]


def test_readme_commands_are_make_targets():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("setup", "demo", "test", "bench"):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"Makefile has no {target!r} target"
    assert re.search(r"^demo: setup\n\t.*equican demo", makefile, flags=re.MULTILINE)
    assert re.search(r"^test: setup\n\t.*pytest", makefile, flags=re.MULTILINE)


def test_readme_evaluates_the_checkpoint_its_training_commands_write():
    # The README's `equican evaluate PATH` follows `equican train --config demo ...`: PATH is the file that training
    # writes (the config's out / CHECKPOINT), not the demo's per-method file (outputs/demo/dec/checkpoint.pt).
    from equican.config import load_config
    from equican.train import CHECKPOINT

    text = README.read_text(encoding="utf-8")
    paths = re.findall(r"^equican evaluate (\S+)", text, flags=re.MULTILINE)
    trained = re.findall(r"^equican train --config (\w+)", text, flags=re.MULTILINE)
    assert paths and "demo" in trained
    written = Path(load_config("demo").out) / CHECKPOINT
    assert all(Path(p) == written for p in paths), (paths, written)
    # Negative control: the path the README used to name is not what training writes.
    assert Path("outputs/demo/dec/checkpoint.pt") != written


# ------------------------------------------------------------------------------------------------ .ci/run
def _fake_checkout(tmp_path: Path, pytest_output: str, exit_code: int) -> Path:
    """A copy of .ci/run beside a Makefile whose `test` target prints ``pytest_output`` and exits ``exit_code``."""
    (tmp_path / ".ci").mkdir()
    run = tmp_path / ".ci" / "run"
    run.write_text((ROOT / ".ci" / "run").read_text(encoding="utf-8"), encoding="utf-8")
    run.chmod(run.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "output.txt").write_text(textwrap.dedent(pytest_output), encoding="utf-8")
    (tmp_path / "Makefile").write_text(f"test:\n\t@cat output.txt; exit {exit_code}\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("output", "code", "ok"), [
    ("..\n==================== 2 passed, 1 skipped in 3.10s ====================\n", 0, True),
    ("==================== 1 failed, 5 passed in 0:01:02s ====================\n", 1, False),
    ("==================== 5 passed in 61.02s (0:01:01) ====================\n", 0, True),
    ("==================== no tests ran in 0.01s ====================\n", 5, False),
    ("==================== 3 skipped in 0.20s ====================\n", 0, False),
    ("all good, trust me\n", 0, False),
])
def test_ci_run_fails_unless_tests_ran_and_passed(tmp_path, output, code, ok):
    checkout = _fake_checkout(tmp_path, output, code)
    proc = subprocess.run(["bash", ".ci/run"], cwd=checkout, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, "CI": "true"})
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    if not ok:
        assert "ci: FAILED" in proc.stderr


def test_ci_run_calls_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test\b", script, flags=re.MULTILINE)
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
