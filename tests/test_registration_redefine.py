"""Notebook-friendly registration: re-running a cell that defines a group replaces it (with a warning); two
different classes under one name still raise."""

from __future__ import annotations

import pytest

from equican.errors import EquicanWarning, RegistrationError
from equican.group import _REGISTRY, make_group

CELL = '''
import torch
from equican import Group

class Mirror(Group, name="mirror_redefine_test"):
    """Z2 by left-right reflection (version {version})."""
    exact = True
    discrete = True
    version = {version}

    @property
    def param_shape(self):
        return (1,)

    def identity(self, batch, *, device=None, dtype=None):
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return torch.randint(2, (batch, 1), generator=generator).to(device=device, dtype=dtype)

    def compose(self, g, h):
        return torch.remainder(g + h, 2)

    def inverse(self, g):
        return g.clone()

    def act(self, g, x):
        return torch.where(g[:, 0].round().bool()[:, None, None, None], x.flip(-1), x)
'''
NAME = "mirror_redefine_test"


def run_cell(version: int, module: str = "__main__", qualname_prefix: str = "") -> type:
    namespace = {"__name__": module}
    code = CELL.format(version=version)
    if qualname_prefix:  # the same class body nested in a function: another qualified name
        code = code.replace("class Mirror(", f"class {qualname_prefix}(")
    exec(compile(code, f"<cell {version}>", "exec"), namespace)  # noqa: S102 - a notebook cell, in a test
    return next(v for v in namespace.values() if isinstance(v, type) and getattr(v, "name", None) == NAME)


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    _REGISTRY.pop(NAME, None)


def test_rerunning_a_cell_replaces_the_group_with_a_warning():
    first = run_cell(1)
    assert make_group(NAME).version == 1
    with pytest.warns(EquicanWarning, match="defined again; the new definition replaces"):
        second = run_cell(2)
    assert second is not first and _REGISTRY[NAME] is second and make_group(NAME).version == 2


def test_a_different_module_still_raises():
    run_cell(1, module="__main__")
    with pytest.raises(RegistrationError, match="the name is taken by __main__.Mirror"):
        run_cell(2, module="my_notebook_helpers")
    assert make_group(NAME).version == 1  # the registered class stays


def test_a_different_class_name_still_raises():
    run_cell(1)
    with pytest.raises(RegistrationError, match="cannot register __main__.Mirror2 as"):
        run_cell(2, qualname_prefix="Mirror2")


def test_a_builtin_name_still_raises():
    # Negative control: the relaxation is only for the same module and qualified name.
    with pytest.raises(RegistrationError, match="taken by equican_groups.rotation.Rotation2d"):
        exec(compile(CELL.format(version=1).replace(NAME, "rotation"), "<cell>", "exec"),  # noqa: S102
             {"__name__": "__main__"})
