"""Test-suite plumbing: registry-driven parametrization and the hypothesis profiles.

Any test that takes an argument named

* ``group`` runs once per registered group (``make_group(name)`` for every name in ``list_groups()``, ids = names),
* ``device`` runs on cpu, and on cuda when it is available,
* ``dtype`` runs in float32 and float64,

unless the test parametrizes that argument itself. The registry is read when each test module is collected, so a
group registered by a module collected earlier (pytest collects test files alphabetically, see
``test_custom_group.py``) is tested by every later module with no new test code.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=...``): ``ci`` (the default: derandomized, so every run
draws the same examples, no example database, 10 examples per test) and ``thorough`` (1000 random examples, for a
deliberate search before a release).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from equican import list_groups, make_group

settings.register_profile(
    "ci",
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,  # group actions on a shared CPU vary by 10x in wall time; timing is benchmarks/' business
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


DTYPES = [torch.float32, torch.float64]


def _explicitly_parametrized(metafunc: pytest.Metafunc) -> set[str]:
    names: set[str] = set()
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [a.strip() for a in argnames.split(",")]
        names.update(argnames)
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    explicit = _explicitly_parametrized(metafunc)
    if "group" in metafunc.fixturenames and "group" not in explicit:
        names = list_groups()
        metafunc.parametrize("group", [make_group(name) for name in names], ids=names)
    if "device" in metafunc.fixturenames and "device" not in explicit:
        metafunc.parametrize("device", _devices())
    if "dtype" in metafunc.fixturenames and "dtype" not in explicit:
        metafunc.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory):
    """The documentation site built once per session with ``mkdocs build --strict``; the site directory.

    mkdocs is a required part of the test set-up (the ``docs`` extra, which ``make setup`` installs): a strict build
    failing, or mkdocs missing, fails the tests that use this fixture rather than skipping them.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if proc.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
                    f"{proc.stderr[-4000:]}", pytrace=False)
    return site
