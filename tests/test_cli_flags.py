"""The ``equican`` command's front: fast --help/--version, ``equican list``, flags a method would ignore, per-method
options under --method, and logs that read line by line when piped (issue 15)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from equican.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--set", "data.train_limit=16", "--set", "data.test_limit=4", "--set", "data.options.cell=24",
        "--set", "data.options.canvas=24", "--set", "model.options.channels=[4, 8]", "--set", "eval.limit=4",
        "--set", "eval.rescalings=2", "--epochs", "1", "--batch-size", "8", "--device", "cpu")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def run_piped(tmp_path: Path, *argv: str) -> tuple[int, str]:
    """``python -m equican *argv`` with stdout and stderr into one file, as `equican ... > log 2>&1` does."""
    log = tmp_path / "log.txt"
    with open(log, "w", encoding="utf-8") as f:
        status = subprocess.run([sys.executable, "-m", "equican", *argv], cwd=tmp_path, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
    return status, log.read_text(encoding="utf-8")


IMPORTS = """
import sys
from equican.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "numpy", "matplotlib", "yaml", "tqdm") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
sys.exit(status)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["train", "--bogus"],
                                  ["compare", "--seeds", "x"]])
def test_help_version_and_argument_errors_do_not_import_torch(argv):
    proc = subprocess.run([sys.executable, "-c", IMPORTS, *argv], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    # argparse exits through SystemExit for --help/--version; main() turns it into a status
    assert "HEAVY:\n" in proc.stdout, proc.stdout[-500:] + proc.stderr[-500:]


def test_the_import_check_sees_torch():
    # Negative control: a command that does load torch is reported as heavy by the same wrapper.
    proc = subprocess.run([sys.executable, "-c", IMPORTS, "list", "groups"], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "HEAVY:" in proc.stdout and "torch" in proc.stdout.split("HEAVY:")[1]


def test_version():
    import equican

    proc = subprocess.run([sys.executable, "-m", "equican", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"equican {equican.__version__}"


def test_list_names_everything():
    from equican import list_groups
    from equican.config import packaged_configs
    from equican.methods import list_methods

    status, out, err = run_cli("list")
    assert status == 0, err
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines["groups"].split(", ") == list_groups()
    assert lines["methods"].split(", ") == list_methods()
    assert lines["configs"].split(", ") == packaged_configs() and "local_scale_dec" in lines["configs"]
    from equican.canon import list_canonicalizers

    assert lines["canonicalizers"].split(", ") == list_canonicalizers() and "dec" in lines["canonicalizers"]
    status, out, _ = run_cli("list", "methods")
    assert status == 0 and out.startswith("methods: ") and "groups" not in out
    status, _, err = run_cli("list", "group")
    assert status == 2 and "expected WHAT to be some of groups" in err


def test_group_typo_for_a_group_less_method_is_an_error_with_a_hint(tmp_path):
    status, _, err = run_cli("train", "--config", "demo", "--group", "rotatoin", "--out", str(tmp_path))
    assert status == 2 and "--group rotatoin: unknown group 'rotatoin'" in err and "did you mean 'rotation'" in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_group_for_a_group_less_method_is_refused(tmp_path):
    status, _, err = run_cli("train", "--config", "demo", "--group", "rotation", "--out", str(tmp_path))
    assert status == 2 and "--group rotation: method 'plain' uses no group, so it would be ignored" in err
    status, _, err = run_cli("train", "--set", "method.group_options.cells=4", "--out", str(tmp_path))
    assert status == 2 and "method.group_options: method 'plain' uses no group" in err


def test_group_for_a_method_with_a_group_is_accepted():
    # Negative control: the same flag with a method that uses a group passes the check.
    from equican.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--config", "demo", "--method", "augment", "--group", "rotation"])
    assert _train_config(args).method.group == "rotation"


def test_augment_group_without_the_augment_baseline_is_refused(tmp_path):
    status, _, err = run_cli("compare", "--baselines", "plain", "--augment-group", "rotation", "--out",
                             str(tmp_path / "c"))
    assert status == 2 and "--augment-group rotation: no augment baseline runs" in err


def test_method_switch_drops_the_configs_other_method_options():
    """`--config compare --method plain` once failed: method 'plain': unknown option 'channels' (the DEC's)."""
    from equican.cli import _train_config, build_parser
    from equican.methods import build_objective
    from torch import nn

    args = build_parser().parse_args(["train", "--config", "compare", "--method", "plain"])
    config = _train_config(args)
    assert dict(config.method.options) == {}
    build_objective(config.method, nn.Flatten(), in_channels=1)  # the old failure: unknown option 'channels'
    args = build_parser().parse_args(["train", "--config", "compare", "--method", "direct"])
    assert _train_config(args).method.options == {}  # the DEC's table is not the direct method's


def test_packaged_example_config_warns_about_its_limit(tmp_path):
    # A separate process: the warning as the command prints it (pytest would capture it in-process).
    status, log = run_piped(tmp_path, "train", "--config", "local_scale_dec", *TINY, "--set", "data.train_limit=6000",
                            "--set", "data.options.digits=1", "--no-progress", "--set", "method.options.channels=[4]",
                            "--set", "eval.enabled=false", "--out", str(tmp_path / "run"))
    assert status == 0, log
    assert ("equican: warning: data.train_limit is 6000, but the bundled MNIST subset holds only 500 train digits: "
            "using all 500\n") in log


# ---------------------------------------------------------------------------------------------- piped logs
def _assert_line_by_line(log: str) -> None:
    assert "\r" not in log and "\x1b[" not in log, repr(log[:400])


@pytest.mark.parametrize("progress", [[], ["--no-progress"]])
def test_train_log_piped_to_a_file_reads_line_by_line(tmp_path, progress):
    status, log = run_piped(tmp_path, "train", "--config", "demo", *TINY, "--epochs", "2", *progress,
                            "--out", str(tmp_path / "run"))
    assert status == 0, log
    _assert_line_by_line(log)
    # The per-epoch summary is there with or without --no-progress.
    assert "epoch 1/2: loss " in log and "epoch 2/2: loss " in log


def test_demo_quick_log_piped_to_a_file_reads_line_by_line(tmp_path):
    status, log = run_piped(tmp_path, "demo", "--quick", "--out", str(tmp_path / "demo"))
    assert status == 0, log
    _assert_line_by_line(log)
    assert log.count("epoch 1/1: loss ") == 2


@pytest.mark.slow
def test_compare_quick_log_piped_to_a_file_reads_line_by_line(tmp_path):
    status, log = run_piped(tmp_path, "compare", "--quick", "--groups", "rotation", "--baselines", "plain",
                            "--set", "model.options.channels=[4, 8]", "--set", "method.options.channels=[4, 8]",
                            "--out", str(tmp_path / "cmp"))
    assert status == 0, log
    _assert_line_by_line(log)
    assert "== plain, seed 0" in log and "== dec[rotation], seed 0" in log


def test_the_log_check_sees_a_carriage_return():
    # Negative control: a tqdm bar forced on (as on a terminal) writes carriage returns, which the check catches.
    from tqdm import tqdm

    stream = io.StringIO()
    for _ in tqdm(range(3), file=stream, disable=False):
        pass
    with pytest.raises(AssertionError):
        _assert_line_by_line(stream.getvalue())


# ------------------------------------------------------------------------------------------------ issue 25, item 6
def test_set_with_a_space_answers_that_key_value_is_expected():
    status, _, err = run_cli("train", "--config", "demo", "--set", "optim.lr", "3e-4")
    assert status == 2
    assert "argument --set: expected KEY=VALUE in one argument (e.g. --set optim.lr=VALUE), got 'optim.lr'" in err
    status, _, err = run_cli("evaluate", "x.pt", "--set", "eval.limit")
    assert status == 2 and "--set eval.limit=VALUE" in err
    # Negative control: the one-argument form parses.
    from equican.cli import build_parser

    assert build_parser().parse_args(["train", "--set", "optim.lr=3e-4"]).overrides == ["optim.lr=3e-4"]


def test_method_typo_names_the_flag_and_suggests_the_method(tmp_path):
    status, _, err = run_cli("train", "--config", "demo", "--method", "dce", "--out", str(tmp_path / "r"))
    assert status == 2
    assert "--method dce: expected a registered training method" in err and "did you mean 'dec'?" in err
    assert "method.options" not in err  # not a config path
    # Negative control: the right name passes the check (the config is built).
    from equican.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--config", "demo", "--method", "dec"])
    assert _train_config(args).method.name == "dec"


def test_model_switch_drops_the_configs_other_model_options():
    """`--config demo --method augment --model vit` once failed: unknown option 'channels' for model 'vit'."""
    from equican.cli import _train_config, build_parser
    from equican.models import build_model

    args = build_parser().parse_args(["train", "--config", "demo", "--method", "augment", "--model", "vit"])
    config = _train_config(args)
    assert config.model.name == "vit" and dict(config.model.options) == {}
    build_model("vit", in_channels=1, num_classes=10, image_size=48, options=config.model.options)
    # Options given after the switch are the new model's.
    args = build_parser().parse_args(["train", "--config", "demo", "--model", "vit", "--set", "model.options.depth=2"])
    assert dict(_train_config(args).model.options) == {"depth": 2}
    # Negative control: naming the configured model keeps its options.
    args = build_parser().parse_args(["train", "--config", "demo", "--model", "cnn"])
    assert dict(_train_config(args).model.options) == {"channels": [16, 32, 64]}
