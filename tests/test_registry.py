"""The registry: registration by subclassing, lookup by name, lazy import of the built-in groups."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

import equican.group as group_module
from equican import Group, group_class, list_groups, make_group

BUILTINS = {"affine", "cyclic", "dihedral", "monotone", "o2", "rotation", "scale"}


@pytest.fixture
def scratch_registry():
    """Registrations made inside the test are removed afterwards, so that later tests see the usual registry."""
    saved = dict(group_module._REGISTRY)
    yield
    group_module._REGISTRY.clear()
    group_module._REGISTRY.update(saved)


def test_builtins_are_registered_and_listed_sorted():
    names = list_groups()
    assert BUILTINS <= set(names)
    assert names == sorted(names)


def test_every_group_is_constructible_by_name_with_no_arguments(group):
    built = make_group(group.name)
    assert type(built) is group_class(group.name) is type(group)
    assert built == group and hash(built) == hash(group)
    assert repr(built).startswith(type(group).__name__ + "(")


def test_every_group_documents_its_convention(group):
    """The design asks for a ``Convention:`` block on every group (composition order, parameters, padding)."""
    doc = inspect.getdoc(type(group)) or ""
    assert "Convention:" in doc, f"{type(group).__name__} has no Convention: block in its docstring"


def test_every_group_declares_its_shapes_and_flags(group):
    for shape in (group.param_shape, group.unconstrained_shape):
        assert isinstance(shape, tuple) and all(isinstance(n, int) and n > 0 for n in shape)
    assert isinstance(group.exact, bool) and isinstance(group.discrete, bool)
    tol = group.tolerance(torch.float32)
    assert tol.element >= 0 and tol.action >= 0
    assert group.tolerance(torch.float64).element <= tol.element  # float64 is never held to a looser bound


def test_make_group_passes_keyword_arguments():
    assert make_group("monotone", cells=8).cells == 8
    c8 = make_group("cyclic", n=8)
    assert c8.n == 8 and not c8.exact and make_group("cyclic").exact
    assert make_group("rotation", max_angle=0.5) != make_group("rotation")


def test_subclassing_with_a_name_registers(scratch_registry):
    class Trivial(Group, name="trivial_for_registry_test"):
        """The one-element group (Convention: the element is an empty vector)."""

        param_shape = (1,)

        def identity(self, batch, *, device=None, dtype=None):
            return torch.zeros(batch, 1, device=device, dtype=dtype)

        def sample(self, batch, *, generator=None, device=None, dtype=None):
            return self.identity(batch, device=device, dtype=dtype)

        def compose(self, g, h):
            return g

        def inverse(self, g):
            return g

        def act(self, g, x):
            return x

    assert "trivial_for_registry_test" in list_groups()
    assert isinstance(make_group("trivial_for_registry_test"), Trivial)
    assert Trivial.name == "trivial_for_registry_test"


def test_subclassing_without_a_name_does_not_register(scratch_registry):
    before = list_groups()

    class Unnamed(type(make_group("rotation"))):
        pass

    assert list_groups() == before
    assert group_class("rotation") is not Unnamed


def test_an_incomplete_group_cannot_be_instantiated(scratch_registry):
    class Incomplete(Group, name="incomplete_for_registry_test"):
        def identity(self, batch, *, device=None, dtype=None):
            return torch.zeros(batch, 1)

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_the_core_imports_the_groups_only_on_first_lookup():
    code = ("import sys, equican; assert 'equican_groups' not in sys.modules, 'imported at load'; "
            "equican.list_groups(); assert 'equican_groups' in sys.modules, 'not imported on lookup'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------ plugins
# The plugin's group reuses a built-in implementation: what is tested here is the registration, not the group.
_PLUGIN = '''
from equican_groups.scale import Scale2d


class PluginScale(Scale2d, name="plugin_scale"):
    """Scale2d under another name, registered from an installed package's entry point."""
'''


def _install_plugin(root, entry_points: str) -> None:
    """A distribution as pip leaves it in site-packages: a module and a dist-info folder with entry_points.txt."""
    (root / "scale_plugin.py").write_text(_PLUGIN, encoding="utf-8")
    info = root / "scale_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scale-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{group_module.ENTRY_POINT_GROUP}]\n{entry_points}\n", encoding="utf-8")


def _fresh_interpreter(root, code: str) -> subprocess.CompletedProcess:
    # A fresh process: the registry loads plugins once, on its first lookup, and this one has looked already.
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_an_installed_plugin_registers_its_groups_and_passes_the_laws(tmp_path):
    _install_plugin(tmp_path, "scale = scale_plugin")
    proc = _fresh_interpreter(tmp_path, (
        "from equican import list_groups, make_group\n"
        "from equican.testing import check_group_laws\n"
        "assert 'plugin_scale' in list_groups() and 'monotone' in list_groups(), list_groups()\n"
        "assert check_group_laws(make_group('plugin_scale'), seed=0).passed\n"
        "print('ok')\n"))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_broken_plugin_is_skipped_with_a_warning(tmp_path):
    # Negative control: the same layout pointing at a missing module loads nothing, says why, and leaves the
    # built-in groups usable.
    _install_plugin(tmp_path, "scale = no_such_module")
    proc = _fresh_interpreter(tmp_path, (
        "import warnings\n"
        "from equican import list_groups\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    names = list_groups()\n"
        "assert 'plugin_scale' not in names and 'monotone' in names, names\n"
        "print([str(w.message) for w in caught])\n"))
    assert proc.returncode == 0, proc.stderr
    assert "skipped the group plugin 'scale' (no_such_module)" in proc.stdout and "ModuleNotFoundError" in proc.stdout
