"""The API reference documents every public name, and every public docstring is complete and states shapes.

Four rules, each a checker function that the tests below apply to the real package and, as negative controls, to a
made-up module and a made-up inventory that break them:

1. **In the reference.** Every name in the ``__all__`` of an audited module (:data:`AUDITED`) is an entry of the
   built site's ``objects.inv`` under the path of the module that *defines* it, as a primary entry (priority 1: the
   object is rendered there, not merely an alias of something rendered elsewhere). Re-exports are resolved through
   the object's ``__module__`` and ``__qualname__``: ``equican.Group`` must appear as ``equican.group.Group``.
   Data (constants, which carry no ``__module__``) belong to the deepest module, among the listing module and its
   submodules, whose ``__all__`` lists the name bound to the very same object: ``equican.data.LAYOUTS`` belongs to
   ``equican.data.local_scale``.
2. **Documented.** Every such name has a non-empty docstring of its own: ``__doc__`` for classes and functions (a
   dataclass's generated ``Name(field: type, ...)`` text does not count), the docstring written below the
   assignment for data (read with griffe, which is what mkdocstrings renders; a ``#:`` comment is not read). So
   has every public member (method, static/class method, property) that a public class defines itself, except the
   ``torch.nn.Module`` methods it overrides (``extra_repr``, ``train``, ...): ``forward`` is checked.
3. **Shapes stated.** Every such function or member whose signature mentions ``Tensor`` (a parameter or the return
   annotation; for an unannotated override, the signature of the method it overrides in a base class), and every
   class whose ``__init__`` does, has a docstring that :func:`states_shape`: it contains a parenthesised shape
   tuple (at least one comma, every entry a dimension expression, at least one entry a dimension: an integer, a
   capital letter such as ``B``/``C'``/``H``, a dimension word such as ``batch``, ``n``, ``size``, ``channels``,
   ``num_classes`` (:data:`_DIMENSION_WORDS`), or a starred ``*...`` such as ``*group.param_shape``; so
   ``(B, C, H, W)``, ``(B,)``, ``(B, *param_shape)``, ``(size, size)`` count and ``(loss, stats)`` does not), or
   the word ``shape``/``shapes`` (``"of the same shape as x"``), or ``scalar`` / ``0-d`` for a 0-dimensional
   result.
4. **Anchors are unique.** No name is a primary inventory entry twice (a name documented on two pages).
5. **Cross-references are mkdocstrings', not Sphinx's.** The rendered API pages contain no Sphinx role
   (``:class:`X```, ``:func:`f```, ...), which mkdocstrings would print as it stands; docstrings link with
   ``[`X`][package.module.X]``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

#: The modules whose ``__all__`` is the public API documented under docs/api/.
AUDITED: tuple[str, ...] = (
    "equican", "equican.group", "equican.errors", "equican.modes", "equican_groups",
    "equican.canon", "equican.canon.base", "equican.canon.registry", "equican.canon.kinds", "equican.canon.deq", "equican.canon.direct", "equican.canon.equivariant", "equican.canon.nets",
    "equican.canon.objective", "equican.canon.optimize", "equican.canon.paper", "equican.canon.prior",
    "equican.canon.vector",
    "equican.canon.wrapper",
    "equican.latent", "equican.latent.blocks",
    "equican.latent.wrapper", "equican.latent.create",
    "equican.testing", "equican.testing.canon", "equican.testing.checkers", "equican.testing.contract",
    "equican.testing.images", "equican.testing.laws", "equican.testing.pytest_plugin", "equican.testing.strategies",
    "equican.data", "equican.data.idx", "equican.data.local_scale", "equican.data.mnist", "equican.data.seeding",
    "equican.data.transformed",
    "equican.config", "equican.methods", "equican.objectives", "equican.models", "equican.train", "equican.metrics",
    "equican.compare", "equican.report", "equican.demo", "equican.cli", "equican.show", "equican.sampling",
    "equican.interop", "equican.augmentation", "equican.pretrained", "equican.validation",
)
#: Public modules of the package with no API of their own: the packaged config files.
NOT_AUDITED = frozenset({"equican.configs"})
#: Audited modules that import an optional dependency (an extra): their checks are skipped without it.
OPTIONAL = {"equican.canon.equivariant": "escnn"}


def _require_optional(module_name: str) -> None:
    if module_name in OPTIONAL:
        pytest.importorskip(OPTIONAL[module_name])

_MEMBER_KINDS = (staticmethod, classmethod, property, functools.cached_property)


# ------------------------------------------------------------------------------------------------ the inventory
@dataclasses.dataclass(frozen=True)
class InventoryEntry:
    role: str  # e.g. "py:class"
    priority: int  # 1: the object is rendered at uri; 2: an alias of an object rendered elsewhere
    uri: str


_INVENTORY_LINE = re.compile(r"^(?P<name>.+?)\s+(?P<role>\S+:\S+)\s+(?P<priority>-?\d+)\s+(?P<uri>\S*)\s+(?P<disp>.*)$")


def read_inventory(data: bytes) -> dict[str, list[InventoryEntry]]:
    """Parse a Sphinx version-2 inventory: 4 header lines, then a zlib body of ``name role priority uri dispname``."""
    lines = data.split(b"\n", 4)
    if len(lines) < 5 or not lines[0].startswith(b"# Sphinx inventory version 2"):
        raise ValueError(f"not a Sphinx version-2 inventory: {lines[0][:60]!r}")
    entries: dict[str, list[InventoryEntry]] = {}
    for line in zlib.decompress(lines[4]).decode("utf-8").splitlines():
        match = _INVENTORY_LINE.match(line)
        if match is None:
            raise ValueError(f"unreadable inventory line: {line!r}")
        entries.setdefault(match["name"], []).append(
            InventoryEntry(match["role"], int(match["priority"]), match["uri"]))
    return entries


def inventory_problems(expected: Iterable[str], inventory: dict[str, list[InventoryEntry]]) -> list[str]:
    """The expected paths that are not a primary (priority 1) entry of the inventory, and primary duplicates."""
    problems = []
    for path in expected:
        entries = inventory.get(path, [])
        if not entries:
            problems.append(f"{path}: not in the inventory (not rendered on any API page)")
        elif not any(e.priority == 1 for e in entries):
            problems.append(f"{path}: only an alias in the inventory ({entries[0].uri}); document it at its module")
    for path, entries in inventory.items():
        primary = [e.uri for e in entries if e.priority == 1]
        if len(primary) > 1:
            problems.append(f"{path}: documented {len(primary)} times ({', '.join(primary)})")
    return problems


# ------------------------------------------------------------------------------------------------ public names
def _is_code(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def defining_path(module_name: str, name: str) -> str:
    """The dotted path where ``module_name.name`` is defined (and so where the reference documents it)."""
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if _is_code(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    # Data: the deepest module at or under module_name that exports the same object.
    owner = module_name
    for candidate in sorted(sys.modules):
        if candidate.startswith(module_name + ".") and candidate.count(".") > owner.count("."):
            sub = sys.modules[candidate]
            if name in getattr(sub, "__all__", ()) and getattr(sub, name, None) is obj:
                owner = candidate
    return f"{owner}.{name}"


def public_names(module_name: str) -> list[tuple[str, Any]]:
    """``(defining path, object)`` for every name in the module's ``__all__``."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        raise AssertionError(f"{module_name} has no __all__")
    return [(defining_path(module_name, name), getattr(module, name)) for name in exported]


def _own_doc(obj: Any) -> str:
    """The docstring written for ``obj`` itself (not inherited, not generated)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""  # the text dataclasses generate for a class without a docstring
        return doc.strip()
    return (getattr(_unwrap_member(obj), "__doc__", None) or "").strip()


def public_members(cls: type) -> list[tuple[str, Any]]:
    """The public methods and properties ``cls`` defines itself, less the ``nn.Module`` methods it overrides."""
    members = []
    for name, value in cls.__dict__.items():
        if name.startswith("_") or not (inspect.isfunction(value) or isinstance(value, _MEMBER_KINDS)):
            continue
        if issubclass(cls, nn.Module) and name != "forward" and hasattr(nn.Module, name):
            continue
        members.append((name, value))
    return members


def _unwrap_member(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    if isinstance(value, property):
        return value.fget
    if isinstance(value, functools.cached_property):
        return value.func
    return value


def _attribute_docstring(path: str, griffe_root: Path) -> str:
    """The docstring of a module-level attribute, as griffe (and so mkdocstrings) reads it."""
    package = path.split(".")[0]
    loaded = _griffe_package(package, str(griffe_root))
    obj = loaded[path.removeprefix(package + ".")] if path != package else loaded
    return (obj.docstring.value if obj.docstring else "").strip()


@functools.lru_cache(maxsize=None)
def _griffe_package(package: str, search_path: str) -> Any:
    import griffe

    return griffe.load(package, search_paths=[search_path], try_relative_path=False)


def docstring_problems(module_name: str, *, griffe_root: Path = ROOT) -> list[str]:
    """The public names of ``module_name`` (and public members of its public classes) without a docstring."""
    problems = []
    for path, obj in public_names(module_name):
        if not _is_code(obj):
            if not _attribute_docstring(path, griffe_root):
                problems.append(f"{path}: no docstring (write one as a string literal below the assignment)")
            continue
        if not _own_doc(obj):
            problems.append(f"{path}: no docstring")
        if inspect.isclass(obj):
            problems += [f"{path}.{name}: no docstring" for name, value in public_members(obj) if not _own_doc(value)]
    return problems


# ------------------------------------------------------------------------------------------------ shapes
# One entry of a shape tuple: a dimension expression such as B, C', 2, *group.param_shape, H // pool, cells + 1,
# *sizes[1:], ...
_ENTRY = re.compile(r"^(?:\*?[\w.'′\[\]:]+(?:\s*(?:[-+*/·×]|//)\s*[\w.'′\[\]:]+)*|\.\.\.)$")
# Words that name a dimension, alone or as the last part of a snake_case name (num_classes, out_channels).
_DIMENSION_WORDS = frozenset({"batch", "n", "k", "size", "height", "width", "channels", "digits", "steps", "cells",
                              "nodes", "classes", "tokens", "length"})
_TUPLE = re.compile(r"\(([^()]*,[^()]*)\)")
_WORDS = re.compile(r"\b(?:shapes?|scalar|0-d)\b", re.IGNORECASE)


def _is_dimension(entry: str) -> bool:
    """An integer, a starred entry, or an expression naming a capital letter (B, C', H2) or a dimension word."""
    if entry.isdigit() or entry.startswith("*"):
        return True
    return any(re.fullmatch(r"[A-Z]\d?['′]?", token) or token.split("_")[-1] in _DIMENSION_WORDS
               for token in re.findall(r"[A-Za-z_][\w'′]*", entry))


def _is_shape_tuple(inside: str) -> bool:
    entries = [e.strip() for e in inside.split(",")]
    if entries[-1] == "":  # (B,)
        entries = entries[:-1]
    return bool(entries) and all(_ENTRY.match(e) for e in entries) and any(_is_dimension(e) for e in entries)


def states_shape(doc: str) -> bool:
    """Whether a docstring states a tensor shape (the rule in the module docstring)."""
    doc = doc.replace("``", "").replace("`", "")
    return bool(_WORDS.search(doc)) or any(_is_shape_tuple(m) for m in _TUPLE.findall(doc))


def _mentions_tensor(fn: Any) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    annotations = [p.annotation for p in signature.parameters.values()] + [signature.return_annotation]
    return any(re.search(r"\bTensor\b", str(a)) for a in annotations if a is not inspect.Parameter.empty)


def _member_mentions_tensor(cls: type, name: str) -> bool:
    # An override without annotations takes its signature's meaning from the method it overrides.
    for klass in cls.__mro__:
        if name in klass.__dict__ and _mentions_tensor(_unwrap_member(klass.__dict__[name])):
            return True
    return False


def shape_problems(module_name: str) -> list[str]:
    """The public functions, members and constructors of ``module_name`` that take or return tensors and whose
    docstring states no shape."""
    problems = []
    for path, obj in public_names(module_name):
        if inspect.isclass(obj):
            if "__init__" in obj.__dict__ and _mentions_tensor(obj.__init__) and not states_shape(_own_doc(obj)):
                problems.append(f"{path}: the constructor takes tensors; the class docstring states no shape")
            for name, value in public_members(obj):
                if _member_mentions_tensor(obj, name) and not states_shape(_own_doc(value)):
                    problems.append(f"{path}.{name}: takes or returns tensors; the docstring states no shape")
        elif inspect.isroutine(obj) and _mentions_tensor(obj) and not states_shape(_own_doc(obj)):
            problems.append(f"{path}: takes or returns tensors; the docstring states no shape")
    return problems


# ------------------------------------------------------------------------------------------------ Sphinx roles
_SPHINX_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):(?:`|<code>)[^`<]*")


def sphinx_roles(html: str) -> list[str]:
    """The Sphinx roles left in a rendered page (as text or as ``:role:<code>...`` after Markdown)."""
    return _SPHINX_ROLE.findall(html)


# ------------------------------------------------------------------------------------------------ the tests
def _public_modules(package: str) -> set[str]:
    root = importlib.import_module(package)
    names = {package}
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.add(info.name)
    return names


def test_every_public_module_is_audited():
    modules = _public_modules("equican") | _public_modules("equican_groups")
    # groups' modules hold one class each and no __all__: the package's __all__ is their API.
    modules -= {m for m in modules if m.startswith("equican_groups.")}
    assert modules - set(AUDITED) - NOT_AUDITED == set(), "add the module to AUDITED and to a page of docs/api/"


def test_every_public_name_is_in_the_inventory_at_its_defining_module(docs_site):
    inventory = read_inventory((docs_site / "objects.inv").read_bytes())
    available = [m for m in AUDITED if m not in OPTIONAL or importlib.util.find_spec(OPTIONAL[m]) is not None]
    expected = sorted({path for module in available for path, _ in public_names(module)} | set(AUDITED))
    assert len(expected) > 150  # a guard against an AUDITED list or __all__ lists that went missing
    assert inventory_problems(expected, inventory) == []


def test_api_pages_have_no_sphinx_roles(docs_site):
    pages = sorted((docs_site / "api").rglob("*.html"))
    assert len(pages) >= 10
    found = {str(page.relative_to(docs_site)): sphinx_roles(page.read_text(encoding="utf-8")) for page in pages}
    assert {page: roles for page, roles in found.items() if roles} == {}


def test_sphinx_role_checker_sees_roles():
    assert sphinx_roles("see :class:`Group` and :meth:<code>~equican.Group.act</code>") == [
        ":class:`Group", ":meth:<code>~equican.Group.act"]
    assert sphinx_roles('see <a href="#equican.group.Group"><code>Group</code></a>: a class') == []


@pytest.mark.parametrize("module_name", AUDITED)
def test_every_public_name_has_a_docstring(module_name):
    _require_optional(module_name)
    assert docstring_problems(module_name) == []


@pytest.mark.parametrize("module_name", AUDITED)
def test_tensor_docstrings_state_shapes(module_name):
    _require_optional(module_name)
    assert shape_problems(module_name) == []


@pytest.mark.parametrize("doc", [
    "Images ``(B, C, H, W)``.", "One distance per element, ``(B,)``.", "``g: (B, *group.param_shape)``",
    "``(B, C', H // pool, W // pool)``", "Logits ``(B, 2, cells+1, cells)``.", "Of the same shape as ``x``.",
    "The mean error, a scalar tensor.", "a 0-d tensor", "``(n,)`` scores", "Shapes:\n    x -> y",
    "``(size, size)``", "``(k, digits)``", "``(N, *sizes[1:])``", "logits ``(batch, num_classes)``",
])
def test_states_shape_accepts_shapes(doc):
    assert states_shape(doc)


@pytest.mark.parametrize("doc", [
    "", "Canonicalize a batch.", "Returns ``(loss, stats)``.", "A pair ``(mean, per-sample tensor)``.",
    "Keyed by ``(seed, index)``.", "The element ``g`` (see :meth:`Group.act`).", "Reshaped in place.",
    "``(name, value)`` pairs", "(see above)", "``f(x, y)``",
])
def test_states_shape_rejects_prose_without_shapes(doc):
    assert not states_shape(doc)


_FAKE_MODULE = '''
"""A made-up module for the negative controls of tests/test_api_docs.py."""
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["documented", "undocumented", "no_shape", "Net", "Config", "LIMIT", "NAMES"]

LIMIT = 3
"""A documented constant."""

#: A Sphinx-style comment, which mkdocstrings does not render.
NAMES = ("a", "b")


def documented(x: torch.Tensor) -> torch.Tensor:
    """Doubles ``x: (B, C, H, W)``."""
    return 2 * x


def undocumented(x: int) -> int:
    return x


def no_shape(x: torch.Tensor) -> torch.Tensor:
    """Doubles the input."""
    return 2 * x


class Net(nn.Module):
    """A network, ``(B, C, H, W) -> (B,)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))

    def extra_repr(self) -> str:
        return ""

    def helper(self, x):
        """Not a shape in sight."""


@dataclass(frozen=True)
class Config:
    size: int = 1
'''


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    package = tmp_path / "equican_fake_api"
    package.mkdir()
    (package / "__init__.py").write_text(_FAKE_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "equican_fake_api", tmp_path
    sys.modules.pop("equican_fake_api", None)


def test_docstring_checker_flags_a_made_up_module(fake_module):
    name, root = fake_module
    problems = docstring_problems(name, griffe_root=root)
    flagged = {p.split(":")[0] for p in problems}
    assert flagged == {f"{name}.undocumented", f"{name}.Net.forward", f"{name}.Config", f"{name}.NAMES"}, problems


def test_shape_checker_flags_a_made_up_module(fake_module):
    name, _ = fake_module
    flagged = {p.split(":")[0] for p in shape_problems(name)}
    # Net.forward is judged by its own annotations; helper has none, and no base class defines a helper to take
    # them from, so it is not required to state a shape; extra_repr is an nn.Module method and is not checked.
    assert flagged == {f"{name}.no_shape", f"{name}.Net.forward"}


def test_inventory_checker_reports_missing_and_alias_only_names():
    body = "\n".join([
        "pkg.mod.Thing py:class 1 api/#pkg.mod.Thing -",
        "pkg.Thing py:class 2 api/#pkg.mod.Thing -",
        "pkg.mod.Other py:function 1 api/a/#$ -",
        "pkg.mod.Other py:function 1 api/b/#$ -",
    ])
    data = b"# Sphinx inventory version 2\n# Project: x\n# Version: 0\n# zlib\n" + zlib.compress(body.encode())
    inventory = read_inventory(data)
    assert inventory_problems(["pkg.mod.Thing"], {k: v for k, v in inventory.items() if "Other" not in k}) == []
    problems = inventory_problems(["pkg.mod.Thing", "pkg.mod.Missing", "pkg.Thing"], inventory)
    assert any(p.startswith("pkg.mod.Missing: not in the inventory") for p in problems)
    assert any(p.startswith("pkg.Thing: only an alias") for p in problems)
    assert any(p.startswith("pkg.mod.Other: documented 2 times") for p in problems)
    assert len(problems) == 3


def test_defining_path_resolves_reexports_and_data():
    assert defining_path("equican", "Group") == "equican.group.Group"
    assert defining_path("equican.canon", "ConvergenceWarning") == "equican.errors.ConvergenceWarning"
    assert defining_path("equican.data", "LAYOUTS") == "equican.data.local_scale.LAYOUTS"
    assert defining_path("equican.testing", "LAWS") == "equican.testing.laws.LAWS"
    assert defining_path("equican.latent", "LAYOUTS") == "equican.latent.blocks.LAYOUTS"
    assert defining_path("equican", "__version__") == "equican.__version__"
