"""The package's shape: imports flow one way (no cycles), ``import equican`` stays light, modules stay small, and the
built wheel installs only this project's import names, which a user's own ``groups.py`` cannot shadow."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The import name of each source folder (groups/ installs as equican_groups: see pyproject.toml).
PACKAGES = {"equican": ROOT / "equican", "equican_groups": ROOT / "groups"}
MAX_LINES = 500


# ---------------------------------------------------------------------------------------------- the import graph
def _modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Every module of ``packages`` by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for name, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements run at import time: module level, inside top-level try/if blocks, but not under
    ``if TYPE_CHECKING`` (imports inside functions are the lazy ones, and do not count)."""
    out: list[ast.stmt] = []
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])
    return out


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time (explicit imports; the implicit import of a
    parent package is not an edge)."""
    modules = _modules(packages)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import sub` imports the submodule pkg.sub when there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGES)
    assert len(graph) > 40 and graph["equican.canon.deq"], "the graph was not built"
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """Negative control: a package whose ``__init__`` imports a submodule that imports the package back (the shape
    ``equican.canon`` had before its base classes moved to ``canon/base.py``)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class Base: ...\nfrom .kind import Kind\n")
    (pkg / "kind.py").write_text("from . import Base\nclass Kind(Base): ...\n")
    (pkg / "leaf.py").write_text("import os\n")
    assert cycles(import_graph({"pkg": pkg})) == [["pkg", "pkg.kind"]]


def test_groups_import_only_the_core_modules_they_need():
    """Built-in groups import ``equican.group`` and the public ``equican.validation``, never the package face
    (which would pull in the canonicalizers) nor a private module."""
    graph = import_graph(PACKAGES)
    for module, targets in graph.items():
        if module.startswith("equican_groups"):
            core = {t for t in targets if t.startswith("equican.")}
            assert "equican" not in targets, f"{module} imports the package face"
            assert all(not t.rsplit(".", 1)[-1].startswith("_") for t in core), f"{module}: {sorted(core)}"


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return set(out.stdout.split())


HEAVY = ("torchdeq", "timm", "escnn")


def test_import_equican_is_light():
    loaded = _imported_after("import equican")
    assert not [m for m in HEAVY if m in loaded]
    # negative control: building a DEQ canonicalizer does load torchdeq, so the check can see it
    loaded = _imported_after("import equican.canon as c; c.DEQCanonicalizer")
    assert "torchdeq" in loaded


def test_no_module_is_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): n for folder in (*PACKAGES.values(), ROOT / "benchmarks")
            for p in folder.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


# ---------------------------------------------------------------------------------------------- packaging
def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {m for m, p in _modules(PACKAGES).items() if p.name == "__init__.py"}
    assert on_disk == listed


@pytest.mark.slow
def test_the_wheel_installs_only_our_names_and_a_users_groups_module_cannot_shadow_them(tmp_path):
    wheel_dir, target, user = tmp_path / "wheel", tmp_path / "site", tmp_path / "user"
    user.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("equican-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"equican", "equican_groups"}
    assert "equican_groups/monotone.py" in names and "equican/configs/demo.toml" in names
    assert any(n.startswith("equican/data/mnist_subset/") and n.endswith(".gz") for n in names)

    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    # The user's script folder has its own groups.py; before, it shadowed the built-in groups and
    # list_groups() silently returned [].
    (user / "groups.py").write_text("raise SystemExit('the user groups.py was imported')\n")
    code = ("import equican; assert equican.__file__.startswith(%r), equican.__file__; "
            "print(','.join(equican.list_groups()))" % str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=user,
                         env={**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{user}", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert {"monotone", "rotation", "affine", "scale"} <= set(out.stdout.strip().split(","))
