"""Tutorial 6: test your canonicalizer in your own pytest suite with equican's pytest plugin.

Writes a user's project into a temporary folder (a canonicalizer module and a three-line test), runs pytest on it
with ``--equican-group cyclic:n=4 --equican-canonicalizer my_canon:HeaviestQuadrant``, and checks that the correct
canonicalizer passes the library's contracts while a broken one (it ignores how the input was turned) fails them.
Every claim of docs/tutorials/pytest_plugin.md is asserted here.

Run:  python docs/tutorials/pytest_plugin.py        (about a minute on one CPU thread, offline)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# ---------------------------------------------------------------------------------------------- the user's project
MY_CANON = '''
"""my_canon.py: the user's canonicalizers for C4, the rotations by multiples of 90 degrees."""
import torch
from equican import Canonicalizer


class HeaviestQuadrant(Canonicalizer):
    """Turns each image so that its heaviest quadrant ends up top-left (invariant by construction)."""

    def solve(self, x):
        hs = self.group.from_unconstrained(torch.eye(4, dtype=x.dtype))  # the 4 rotations, in chart order
        scores = [self.group.act(h.expand(len(x), 1), x)[..., :16, :16].sum(dim=(1, 2, 3)) for h in hs]
        return torch.stack(scores, dim=1), {}


class IgnoresTheInput(HeaviestQuadrant):
    """The bug: always picks the same rotation, whatever the input's own rotation."""

    def solve(self, x):
        return torch.eye(4, dtype=x.dtype)[[0] * len(x)], {}
'''

TEST_MY_CANON = '''
"""test_my_canon.py: a test of the user's own, with the plugin's fixtures."""
from equican.testing import assert_canonicalizer_invariant
from my_canon import HeaviestQuadrant


def test_heaviest_quadrant(equican_group, equican_images, equican_seed):
    assert_canonicalizer_invariant(HeaviestQuadrant(equican_group), equican_images, atol=0, seed=equican_seed)
'''

PYPROJECT = '''
[tool.pytest.ini_options]
pythonpath = ["."]   # so that --equican-canonicalizer my_canon:... can import my_canon
'''


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for name, text in (("my_canon.py", MY_CANON), ("test_my_canon.py", TEST_MY_CANON),
                           ("pyproject.toml", PYPROJECT)):
            (project / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")

        # 1. The user's own test, plus the contracts on the correct canonicalizer: everything passes.
        good = run_pytest(project, "--equican-group", "cyclic:n=4",
                          "--equican-canonicalizer", "my_canon:HeaviestQuadrant")
        summary = good.stdout.strip().splitlines()[-1]
        print(f"HeaviestQuadrant: {summary}")
        assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
        assert "14 passed" in summary, summary  # 1 own test + 10 group laws + 3 canonicalizer checks

        # 2. The negative control: the broken canonicalizer fails invariance and equivariance of the element; the
        # round trip still holds (g = inverse(h) whatever h is picked), so it cannot tell.
        bad = run_pytest(project, "--equican-group", "cyclic:n=4", "--equican-canonicalizer",
                         "my_canon:IgnoresTheInput", "-k", "canonicalizer", "-rf")
        print(f"IgnoresTheInput: {bad.stdout.strip().splitlines()[-1]}")
        failed = sorted(line.split()[1] for line in bad.stdout.splitlines() if line.startswith("FAILED"))
        print(*failed, sep="\n")
        assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-3000:]
        assert failed == ["equican::canonicalizer[my_canon:IgnoresTheInput][cyclic:n=4]::g_equivariance",
                          "equican::canonicalizer[my_canon:IgnoresTheInput][cyclic:n=4]::invariance"], failed
        assert "1 passed" in bad.stdout  # the round trip
