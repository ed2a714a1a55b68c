"""A user's own module from the command line: ``--import MODULE`` on every subcommand and ``EQUICAN_PLUGINS``
(issue 25, item 4). A group or canonicalizer kind defined in one file is usable by name without packaging."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from equican.cli import build_parser, main
from equican.errors import ConfigError
from equican._plugins import ENV_VAR, load_plugins, plugin_names

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    import torch

    from equican import Group
    from equican.canon import IdentityCanonicalizer, register_canonicalizer


    class Still(Group, name="{group}"):
        """The trivial group: every element leaves the image where it is."""

        param_shape = (1,)

        def identity(self, batch, *, device=None, dtype=None):
            return torch.zeros(batch, 1, device=device, dtype=dtype)

        def sample(self, batch, *, generator=None, device=None, dtype=None):
            return torch.zeros(batch, 1, device=device, dtype=dtype)

        def compose(self, g, h):
            return g + h

        def inverse(self, g):
            return -g

        def act(self, g, x):
            return x


    @dataclass(frozen=True)
    class NoisyOptions:
        scale: float = 0.1


    @register_canonicalizer("{kind}", options=NoisyOptions)
    def build(group, in_channels, opts):
        return IdentityCanonicalizer(group)
''')


def write_plugin(directory: Path, stem: str, group: str, kind: str) -> Path:
    path = directory / f"{stem}.py"
    path.write_text(PLUGIN.format(group=group, kind=kind), encoding="utf-8")
    return path


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    return subprocess.run([sys.executable, "-m", "equican", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL,
                          env={**environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_list_imports_a_plugin_file_and_shows_its_group_and_kind(tmp_path):
    path = write_plugin(tmp_path, "my_plugin", "plugin_still", "plugin_noisy")
    proc = run("list", "--import", str(path), cwd=tmp_path.parent)
    assert proc.returncode == 0, proc.stderr
    groups = next(line for line in proc.stdout.splitlines() if line.startswith("groups:"))
    kinds = next(line for line in proc.stdout.splitlines() if line.startswith("canonicalizers:"))
    methods = next(line for line in proc.stdout.splitlines() if line.startswith("methods:"))
    assert "plugin_still" in groups and "plugin_noisy" in kinds and "plugin_noisy" in methods
    # Negative control: the same command without --import does not see them.
    proc = run("list", cwd=tmp_path)
    assert proc.returncode == 0 and "plugin_still" not in proc.stdout and "plugin_noisy" not in proc.stdout


def test_a_module_name_from_the_current_directory_and_the_environment_variable(tmp_path):
    write_plugin(tmp_path, "my_env_plugin", "plugin_env_still", "plugin_env_noisy")
    proc = run("list", "groups", "--import", "my_env_plugin", cwd=tmp_path)  # by name, found in the cwd
    assert proc.returncode == 0 and "plugin_env_still" in proc.stdout, proc.stderr
    proc = run("list", "canonicalizers", cwd=tmp_path, env={ENV_VAR: " my_env_plugin, "})
    assert proc.returncode == 0 and "plugin_env_noisy" in proc.stdout, proc.stderr


def test_train_uses_a_kind_from_a_plugin(tmp_path):
    """The README's promise: `equican train --import my_plugin --method noisy_identity` trains with it."""
    write_plugin(tmp_path, "train_plugin", "plugin_train_still", "plugin_train_noisy")
    tiny = ["--config", "demo", "--epochs", "1", "--batch-size", "8", "--set", "data.train_limit=16",
            "--set", "data.test_limit=8", "--set", "eval.enabled=false", "--set", "data.options.cell=24",
            "--set", "data.options.canvas=24", "--set", "model.options.channels=[4, 8]", "--no-progress",
            "--device", "cpu"]
    proc = run("train", "--import", "train_plugin", "--method", "plugin_train_noisy", "--group",
               "plugin_train_still", "--set", "method.options.plugin_train_noisy.scale=0.3", "--out",
               str(tmp_path / "run"), *tiny, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # Negative control: without --import the method is unknown, and the error says how to bring it in.
    proc = run("train", "--method", "plugin_train_noisy", "--out", str(tmp_path / "run2"), *tiny, cwd=tmp_path)
    assert proc.returncode == 2 and "--method plugin_train_noisy: expected a registered training method" in proc.stderr
    assert "--import" in proc.stderr


@pytest.mark.parametrize("command", ["list", "show-groups", "train", "evaluate", "compare", "demo"])
def test_every_subcommand_takes_import(command):
    extra = ["x.pt"] if command == "evaluate" else []
    args = build_parser().parse_args([command, *extra, "--import", "a", "--import", "b.py"])
    assert args.imports == ["a", "b.py"]


def test_a_module_that_fails_to_import_is_a_typed_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    status, _, err = run_cli("list", "--import", "equican_no_such_plugin_xyz")
    assert status == 2
    assert "--import equican_no_such_plugin_xyz: expected an importable module" in err
    assert "ModuleNotFoundError" in err
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--import .*broken_plugin.py: expected the file to import, got "
                                          r"RuntimeError: boom at import"):
        load_plugins([str(broken)])
    assert "broken_plugin" not in sys.modules  # a failed file leaves nothing half-imported
    with pytest.raises(ConfigError, match="expected an existing .py file, got a missing path"):
        load_plugins([str(tmp_path / "missing.py")])
    monkeypatch.setenv(ENV_VAR, "equican_no_such_plugin_xyz")
    status, _, err = run_cli("list")
    assert status == 2 and f"{ENV_VAR} entry 'equican_no_such_plugin_xyz'" in err


def test_plugin_names_read_the_environment_first_each_once():
    assert plugin_names(["b", "a", "b"], {ENV_VAR: "a, c,,"}) == ["a", "c", "b"]
    assert plugin_names([], {}) == []


def test_a_file_is_imported_once_under_its_own_name(tmp_path):
    # A module that registers nothing: this test process's registries stay as they were for the other tests.
    path = tmp_path / "twice_plugin.py"
    path.write_text("import itertools\nCOUNT = next(itertools.count())\n", encoding="utf-8")
    first = load_plugins([str(path)])
    again = load_plugins([str(path)])  # EQUICAN_PLUGINS and --import naming one file: one import
    assert first[0] is again[0] and sys.modules["twice_plugin"] is first[0]
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "twice_plugin.py").write_text("COUNT = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="module 'twice_plugin' is already imported"):
        load_plugins([str(other / "twice_plugin.py")])
    del sys.modules["twice_plugin"]
