"""Loading a benchmark script as a module, for the tests of its quick mode (not collected: no test_ prefix)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, monkeypatch) -> ModuleType:
    """``benchmarks/<name>.py`` as a module, registered in ``sys.modules`` for the test's duration (dataclasses resolve
    annotations through it)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
