"""``equican train``, ``equican evaluate`` and ``equican demo``: exit statuses, files, tables and error lines."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from equican.cli import main
from equican.train import CHECKPOINT, METRICS

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning")

TINY = ("--set", "data.train_limit=32", "--set", "data.test_limit=8", "--set", "data.options.digits=1",
        "--set", "data.options.cell=24", "--set", "data.options.canvas=24",
        "--set", "model.options.channels=[4, 8]", "--set", "eval.limit=4", "--set", "eval.batch_size=4",
        "--set", "eval.rescalings=2", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-progress",
        "--set", "eval.invariance_group=monotone")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``equican *argv`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def saved_config(out: Path) -> dict:
    return torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)["config"]


def assert_one_line_error(status: int, stdout: str, stderr: str, command: str, *named: str) -> None:
    assert status == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"equican {command}: error: ")
    assert "Traceback" not in stderr
    for text in named:
        assert text in lines[0], (text, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    status, stdout, stderr = run_cli("train", *TINY, "--method", "plain", "--out", out)
    return out, status, stdout, stderr


# ---------------------------------------------------------------------------------------------- train
def test_train_returns_0_and_prints_the_table(trained):
    out, status, stdout, stderr = trained
    assert status == 0, stderr
    assert "| method | accuracy | accuracy (scale 1) | invariance error | local-scale error |" in stdout
    assert "| plain |" in stdout
    assert f"wrote {out / CHECKPOINT} and {out / METRICS}" in stdout
    assert (out / CHECKPOINT).is_file() and (out / METRICS).is_file()
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["complete"] is True and 0 <= metrics["eval"]["accuracy"] <= 1


def test_flags_and_set_reach_the_config(trained):
    out, *_ = trained
    config = saved_config(out)
    assert config["method"]["name"] == "plain" and config["optim"]["epochs"] == 1
    assert config["optim"]["batch_size"] == 8 and config["device"] == "cpu" and config["progress"] is False
    assert config["data"]["options"] == {"digits": 1, "cell": 24, "canvas": 24}
    assert config["model"]["options"]["channels"] == [4, 8]
    assert config["out"] == str(out)


def test_config_file_then_flags_then_set(tmp_path):
    """A config file's values are overridden by flags, and flags by --set."""
    config_file = tmp_path / "run.yaml"
    config_file.write_text("optim:\n  epochs: 3\n  lr: 0.01\nseed: 4\n", encoding="utf-8")
    out = tmp_path / "run"
    status, _, stderr = run_cli("train", "--config", config_file, *TINY, "--lr", "0.02", "--set", "optim.lr=0.005",
                                "--out", out)
    assert status == 0, stderr
    config = saved_config(out)
    assert config["optim"]["epochs"] == 1  # --epochs over the file
    assert config["optim"]["lr"] == pytest.approx(0.005)  # --set over --lr over the file
    assert config["seed"] == 4  # the file's, where nothing overrides it


def test_until_epoch_then_resume(tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = run_cli("train", *TINY, "--epochs", "2", "--until-epoch", "1", "--out", out)
    assert status == 0, stderr
    assert "stopped after epoch 1 of 2; continue with --resume" in stdout
    assert "| method |" not in stdout
    status, stdout, stderr = run_cli("train", *TINY, "--epochs", "2", "--out", out, "--resume")
    assert status == 0, stderr
    assert "| plain |" in stdout
    assert torch.load(out / CHECKPOINT, weights_only=True)["epoch"] == 2


def test_a_numeric_output_directory_name(tmp_path, monkeypatch):
    """``--out 2024`` is a directory name: the flag's string must stay a string through the overrides."""
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run_cli("train", *TINY, "--out", "2024")
    assert status == 0, stderr
    assert (tmp_path / "2024" / CHECKPOINT).is_file()


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_returns_0_and_writes_evaluation_json(trained):
    out, status, *_ = trained
    assert status == 0
    status, stdout, stderr = run_cli("evaluate", out / CHECKPOINT)
    assert status == 0, stderr
    assert "| plain (epoch 1) |" in stdout
    result = json.loads((out / "evaluation.json").read_text())
    saved = json.loads((out / METRICS).read_text())["eval"]
    assert result["epoch"] == 1 and result["samples"] == 4
    assert result["accuracy"] == pytest.approx(saved["accuracy"])
    assert result["invariance_error"] == pytest.approx(saved["invariance_error"])


def test_evaluate_with_set_and_json_path(trained, tmp_path):
    out, *_ = trained
    target = tmp_path / "eval.json"
    status, stdout, stderr = run_cli("evaluate", out / CHECKPOINT, "--set", "eval.limit=2", "--json", target)
    assert status == 0, stderr
    assert f"wrote {target}" in stdout
    assert json.loads(target.read_text())["samples"] == 2


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_method(tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = run_cli("train", *TINY, "--method", "dek", "--out", out)
    assert_one_line_error(status, stdout, stderr, "train", "'dek'", "did you mean 'dec'")
    assert not out.exists()


def test_negative_learning_rate(tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = run_cli("train", *TINY, "--set", "optim.lr=-1", "--out", out)
    assert_one_line_error(status, stdout, stderr, "train", "lr", "-1")
    assert not out.exists()


def test_unknown_set_key(tmp_path):
    status, stdout, stderr = run_cli("train", *TINY, "--set", "optim.lrr=1", "--out", tmp_path / "run")
    assert_one_line_error(status, stdout, stderr, "train", "optim.lrr")


def test_missing_config_file(tmp_path):
    missing = tmp_path / "missing.toml"
    status, stdout, stderr = run_cli("train", "--config", missing, *TINY, "--out", tmp_path / "run")
    assert_one_line_error(status, stdout, stderr, "train", str(missing), "does not exist")


def test_resume_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    status, stdout, stderr = run_cli("train", *TINY, "--out", out, "--resume")
    assert_one_line_error(status, stdout, stderr, "train", str(out / CHECKPOINT))


def test_evaluate_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope" / CHECKPOINT
    status, stdout, stderr = run_cli("evaluate", missing)
    assert_one_line_error(status, stdout, stderr, "evaluate", str(missing))
    assert not (tmp_path / "nope").exists()


def test_evaluate_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT
    path.write_bytes(b"not a checkpoint")
    status, stdout, stderr = run_cli("evaluate", path)
    assert_one_line_error(status, stdout, stderr, "evaluate", str(path))
    assert not (tmp_path / "evaluation.json").exists()


def test_one_line_error_checker_rejects_a_traceback():
    """Negative control: the checker fails on a multi-line message and on a success."""
    with pytest.raises(AssertionError):
        assert_one_line_error(2, "", "equican train: error: x\nTraceback (most recent call last):\n", "train")
    with pytest.raises(AssertionError):
        assert_one_line_error(0, "", "", "train")
    with pytest.raises(AssertionError):
        assert_one_line_error(2, "", "equican train: error: lr\n", "train", "optim.lrr")


def test_argparse_errors_return_2(tmp_path):
    status, _, stderr = run_cli("train", "--epochs", "two")
    assert status == 2 and "--epochs" in stderr


# ---------------------------------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    status, stdout, stderr = run_cli("demo", "--quick", "--out", out, "--no-progress")
    assert status == 0, stderr
    for name in ("results.md", "results.json", "canonical_forms.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"plain", "dec"}
    for metrics in results.values():
        assert 0 <= metrics["accuracy"] <= 1 and metrics["train_seconds"] > 0
    table = (out / "results.md").read_text()
    assert "| plain |" in table and "| dec |" in table and "| plain |" in stdout
    assert (out / "plain" / CHECKPOINT).is_file() and (out / "dec" / CHECKPOINT).is_file()
    assert (out / "canonical_forms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
