"""Every tutorial script in ``docs/tutorials/`` runs to completion, as a reader would run it.

Each script asserts its own claims (a broken canonicalizer is caught, a trained model is invariant, ...), so exit
status 0 means the tutorial's text is still true. Scripts run in a fresh interpreter, in an empty working
directory, on one thread and offline, like a reader's first run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("*.py"))


def test_every_tutorial_page_has_its_script():
    pages = {p.stem for p in TUTORIALS.glob("*.md")}
    assert pages, "no tutorial pages"
    assert pages == {p.stem for p in SCRIPTS}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_tutorial_runs(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (f"{script.name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
