"""The training loop: files it writes, exact resume, errors before training, checkpoints and evaluation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import equican.train as train_module
from equican.canon import Canonicalized
from equican.config import TrainConfig, apply_overrides
from equican.errors import ConfigError, DataError, UnknownNameError
from equican.train import CHECKPOINT, METRICS, SplitData, build, evaluate_checkpoint, load_checkpoint, load_split, train

# A run of a second or so: 32 one-digit composites on a 24×24 canvas, 4 batches per epoch, 4 evaluation samples.
COMMON = ("data.train_limit=32", "data.test_limit=8", "model.options.channels=[4, 8]", "optim.epochs=2",
          "optim.batch_size=8", "eval.limit=4", "eval.batch_size=4", "eval.rescalings=2", "progress=false",
          "device=cpu", "eval.invariance_group=monotone")
LOCAL_SCALE = ("data.options.digits=1", "data.options.cell=24", "data.options.canvas=24",
               "data.options.scale_range=[0.5, 1.0]")
CANON = ("method.options.channels=[4, 8]",)

# A DEC trained for two epochs rarely meets its solver tolerance at evaluation; evaluate() counts those batches.
pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning")


def tiny_config(out: Path, *overrides: str, dataset: str = "local_scale") -> TrainConfig:
    data = LOCAL_SCALE if dataset == "local_scale" else (f"data.dataset={dataset}",)
    return apply_overrides(TrainConfig(), [*COMMON, *data, f"out={json.dumps(str(out))}", *overrides])


def dec_config(out: Path, *overrides: str) -> TrainConfig:
    return tiny_config(out, "method.name=dec", *CANON, *overrides)


def saved_parameters(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(out) / CHECKPOINT, map_location="cpu", weights_only=True)["objective"]


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _refuse(*args, **kwargs):
    raise AssertionError("training started")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a single training epoch starts."""
    monkeypatch.setattr(train_module, "_epoch", _refuse)


@pytest.fixture(scope="module")
def dec_run(tmp_path_factory):
    """One 2-epoch DEC run; the evaluated model is kept (spied on) to compare with the checkpoint."""
    out = tmp_path_factory.mktemp("dec_run") / "out"
    config = dec_config(out)
    seen = {}
    real = train_module.evaluate

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "evaluate", spy)
        result = train(config)
    return config, result, seen["model"]


# ---------------------------------------------------------------------------------------------- files
def test_run_writes_checkpoint_and_metrics(dec_run):
    config, result, _ = dec_run
    out = Path(config.out)
    assert (out / CHECKPOINT).is_file() and (out / METRICS).is_file()
    metrics = json.loads((out / METRICS).read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["config"] == config.to_dict()
    assert metrics["complete"] is True and metrics["epochs_done"] == 2
    assert metrics["world_size"] == 1 and metrics["device"] == "cpu"


def test_history_has_one_row_per_epoch(dec_run):
    _, result, _ = dec_run
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["images_per_s"] > 0 and row["seconds"] > 0
        assert 0 <= row["lr"] <= 1e-3
        assert 0 <= row["converged"] <= 1 and row["steps"] >= 1  # the DEC's solver statistics
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine schedule ends at 0


def test_eval_metrics_are_in_range(dec_run):
    _, result, _ = dec_run
    ev = result["eval"]
    assert ev["samples"] == 4
    assert 0 <= ev["accuracy"] <= 1 and 0 <= ev["accuracy_unscaled"] <= 1
    for key in ("invariance_error", "local_scale_error"):
        assert math.isfinite(ev[key]) and ev[key] >= 0
    assert "MonotoneScaling" in ev["invariance_group"]
    assert isinstance(ev["nonconverged_batches"], int) and ev["nonconverged_batches"] >= 0


def test_checkpoint_payload(dec_run):
    config, _, _ = dec_run
    payload = torch.load(Path(config.out) / CHECKPOINT, map_location="cpu", weights_only=True)
    assert payload["format"] == "equican-checkpoint-1"
    assert payload["epoch"] == 2 and len(payload["history"]) == 2
    assert payload["config"] == config.to_dict()
    assert payload["input_shape"] == [1, 24, 24] and payload["num_classes"] == 10
    assert {"objective", "optimizer", "scheduler"} <= payload.keys()


def test_no_leftover_temporary_files(dec_run):
    config, _, _ = dec_run
    assert sorted(p.name for p in Path(config.out).iterdir()) == [CHECKPOINT, METRICS]


# ---------------------------------------------------------------------------------------------- checkpoints
def test_load_checkpoint_rebuilds_the_trained_model(dec_run):
    config, _, trained = dec_run
    loaded_config, objective, payload = load_checkpoint(Path(config.out) / CHECKPOINT)
    assert loaded_config == config and payload["epoch"] == 2
    assert not objective.training
    assert isinstance(objective.model, Canonicalized)
    x = load_split(config.data, "test").x[:4]
    trained.eval()
    with torch.no_grad():
        expected = trained(x)
        assert torch.equal(objective.model(x), expected)
        # Negative control: the same architecture, untrained, gives other logits.
        fresh = build(config, SplitData(x[:1], torch.zeros(1, dtype=torch.int64), 10)).eval()
        assert not torch.allclose(fresh.model(x), expected)


def test_evaluate_checkpoint_agrees_with_metrics_json(dec_run):
    config, _, _ = dec_run
    saved = json.loads((Path(config.out) / METRICS).read_text())["eval"]
    result = evaluate_checkpoint(Path(config.out) / CHECKPOINT)
    assert result["epoch"] == 2 and result["checkpoint"] == str(Path(config.out) / CHECKPOINT)
    for key, value in saved.items():
        if isinstance(value, float):
            assert result[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert result[key] == value, key


def test_evaluate_checkpoint_with_overrides(dec_run):
    config, _, _ = dec_run
    changed = config.replace(eval=apply_overrides(config, ["eval.limit=2"]).eval)
    result = evaluate_checkpoint(Path(config.out) / CHECKPOINT, overrides=changed)
    assert result["samples"] == 2


# ---------------------------------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("method", ["augment", "dec"])
def test_resume_is_exact(tmp_path, method):
    extra = ("method.name=augment",) if method == "augment" else ("method.name=dec", *CANON)
    full = train(tiny_config(tmp_path / "full", *extra))

    split_config = tiny_config(tmp_path / "split", *extra)
    partial = train(split_config, until_epoch=1)
    assert partial["complete"] is False and partial["epochs_done"] == 1 and "eval" not in partial
    assert torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)["epoch"] == 1
    after_one = saved_parameters(tmp_path / "split")
    resumed = train(split_config, resume=True)

    assert resumed["complete"] is True and resumed["epochs_done"] == 2
    assert not differing(saved_parameters(tmp_path / "full"), saved_parameters(tmp_path / "split"))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
    assert resumed["eval"]["accuracy"] == full["eval"]["accuracy"]
    assert resumed["eval"]["invariance_error"] == full["eval"]["invariance_error"]
    # Negative controls: the second epoch changed the parameters, and another seed ends elsewhere.
    assert differing(after_one, saved_parameters(tmp_path / "full"))
    train(tiny_config(tmp_path / "other_seed", *extra, "seed=1"))
    assert differing(saved_parameters(tmp_path / "full"), saved_parameters(tmp_path / "other_seed"))


def test_resume_from_a_path_into_another_directory(tmp_path):
    """``out`` (like device, threads, eval) may change on resume; the result is still the uninterrupted run's."""
    train(tiny_config(tmp_path / "full", "method.name=augment"))
    train(tiny_config(tmp_path / "a", "method.name=augment"), until_epoch=1)
    moved = tiny_config(tmp_path / "b", "method.name=augment", "eval.limit=2")
    result = train(moved, resume=tmp_path / "a" / CHECKPOINT)
    assert result["eval"]["samples"] == 2
    assert not differing(saved_parameters(tmp_path / "full"), saved_parameters(tmp_path / "b"))


def test_resume_with_a_changed_setting_is_a_config_error(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run")
    train(config, until_epoch=1)
    before = (tmp_path / "run" / CHECKPOINT).read_bytes()
    monkeypatch.setattr(train_module, "_epoch", _refuse)
    with pytest.raises(ConfigError, match=r"differs from the checkpoint .* in \['optim'\]"):
        train(apply_overrides(config, ["optim.lr=3e-4"]), resume=True)
    with pytest.raises(ConfigError, match=r"\['seed'\]"):
        train(apply_overrides(config, ["seed=5"]), resume=True)
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == before


def test_resume_with_a_missing_checkpoint_is_a_data_error(tmp_path, no_training):
    config = tiny_config(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist") as info:
        train(config, resume=True)
    assert str(tmp_path / "empty" / CHECKPOINT) in str(info.value)
    with pytest.raises(DataError, match="nowhere.pt"):
        train(config, resume=tmp_path / "nowhere.pt")
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("content", [b"garbage bytes, not a checkpoint", b""])
def test_corrupt_checkpoint_is_a_data_error_naming_the_path(tmp_path, no_training, content):
    out = tmp_path / "run"
    out.mkdir()
    path = out / CHECKPOINT
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot be read") as info:
        train(tiny_config(out), resume=True)
    assert str(path) in str(info.value)
    for reader in (load_checkpoint, evaluate_checkpoint):
        with pytest.raises(DataError) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_truncated_and_foreign_checkpoints_are_data_errors(dec_run, tmp_path):
    config, _, _ = dec_run
    data = (Path(config.out) / CHECKPOINT).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(DataError, match="not an equican checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("until", [0, -1, True, 1.5, "1"])
def test_invalid_until_epoch(tmp_path, no_training, until):
    with pytest.raises(ConfigError, match="until_epoch"):
        train(tiny_config(tmp_path / "run"), until_epoch=until)


def test_train_wants_a_train_config(no_training):
    with pytest.raises(ConfigError, match="TrainConfig"):
        train({"optim": {"lr": 0.1}})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- atomic save
class _DiskFull(OSError):
    pass


def _failing_second_save(monkeypatch):
    real = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1:
            return real(obj, f, *args, **kwargs)
        Path(f).write_bytes(b"half a checkpoi")  # a torn write, then the disk is full
        raise _DiskFull(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _failing_second_save(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(_DiskFull):
        train(tiny_config(out, "eval.enabled=false"))
    _, _, payload = load_checkpoint(out / CHECKPOINT)
    assert payload["epoch"] == 1


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    _failing_second_save(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(_DiskFull):
        train(tiny_config(out, "eval.enabled=false"))
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT]


# ---------------------------------------------------------------------------------------------- bad names
@pytest.mark.parametrize("overrides, error, named", [
    (("method.name=dek",), UnknownNameError, "dek"),
    (("method.name=augment", "method.group=monotonic"), UnknownNameError, "monotonic"),
    (("model.name=not_a_model_xyz",), UnknownNameError, "not_a_model_xyz"),
    (("eval.invariance_group=nope",), UnknownNameError, "nope"),
    (("method.name=dec", "method.options.chanels=[4]"), ConfigError, "chanels"),
    (("data.options.digitz=1",), ConfigError, "digitz"),
    (("model.options.chanels=[4]",), ConfigError, "chanels"),
])
def test_bad_names_fail_before_training(tmp_path, no_training, overrides, error, named):
    out = tmp_path / "run"
    with pytest.raises(error, match=named):
        train(tiny_config(out, *overrides))
    assert not (out / CHECKPOINT).exists() and not (out / METRICS).exists()


def test_bad_dataset_fails_when_the_config_is_made(tmp_path):
    with pytest.raises(ConfigError, match="dataset"):
        tiny_config(tmp_path / "run", "data.dataset=cifar")
    assert not (tmp_path / "run").exists()


def test_plain_mnist_takes_no_options(tmp_path, no_training):
    with pytest.raises(ConfigError, match="no options"):
        train(tiny_config(tmp_path / "run", "data.options.canvas=32", dataset="mnist"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error(tmp_path, no_training):
    with pytest.raises(ConfigError, match="cuda"):
        train(tiny_config(tmp_path / "run", "device=cuda"))


def test_the_good_config_does_train(tmp_path, monkeypatch):
    """Negative control for the tests above: with the real loop, the same tiny config trains and saves."""
    epochs = []
    real = train_module._epoch

    def counting(*args, **kwargs):
        epochs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_epoch", counting)
    train(tiny_config(tmp_path / "run", "optim.epochs=1", "eval.enabled=false"))
    assert epochs == [1] and (tmp_path / "run" / CHECKPOINT).is_file()


# ---------------------------------------------------------------------------------------------- datasets, seeds
def test_transformed_dataset_trains(tmp_path):
    config = tiny_config(tmp_path / "run", "optim.epochs=1", 'data.options={"group": "rotation", "canvas": 32}',
                         dataset="transformed")
    result = train(config)
    ev = result["eval"]
    assert 0 <= ev["accuracy"] <= 1 and math.isfinite(ev["invariance_error"])
    assert "local_scale_error" not in ev and "accuracy_unscaled" not in ev
    _, _, payload = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert payload["input_shape"] == [1, 32, 32] and payload["num_classes"] == 10


def test_mnist_dataset_trains(tmp_path):
    result = train(tiny_config(tmp_path / "run", "optim.epochs=1", dataset="mnist"))
    assert 0 <= result["eval"]["accuracy"] <= 1
    _, _, payload = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert payload["input_shape"] == [1, 28, 28]


def test_same_seed_gives_the_same_parameters(tmp_path):
    first = train(dec_config(tmp_path / "a"))
    second = train(dec_config(tmp_path / "b"))
    assert not differing(saved_parameters(tmp_path / "a"), saved_parameters(tmp_path / "b"))
    assert [r["loss"] for r in first["history"]] == [r["loss"] for r in second["history"]]
    # Negative control: another seed gives other parameters.
    train(dec_config(tmp_path / "c", "seed=3"))
    assert differing(saved_parameters(tmp_path / "a"), saved_parameters(tmp_path / "c"))


def test_load_split_shapes():
    data = load_split(tiny_config(Path(os.devnull)).data, "train")
    assert data.x.shape == (32, 1, 24, 24) and data.y.shape == (32,) and data.num_classes == 10
    assert data.x.dtype == torch.float32 and 0 <= float(data.x.min()) and float(data.x.max()) <= 1


def test_plain_run_without_an_eval_group_has_no_invariance_error(tmp_path):
    """The core names no group: with eval.invariance_group unset, a group-less method measures no invariance."""
    config = tiny_config(tmp_path / "run", "optim.epochs=1", "eval.invariance_group=null")
    assert config.eval.invariance_group is None and config.method.name == "plain"
    ev = train(config)["eval"]
    assert "invariance_error" not in ev and "invariance_group" not in ev and 0 <= ev["accuracy"] <= 1


def test_limit_beyond_the_data_warns(tmp_path):
    from equican.errors import EquicanWarning
    from equican.train import load_split

    with pytest.warns(EquicanWarning, match="data.test_limit is 6000, but the bundled MNIST subset holds only 200"):
        split = load_split(apply_overrides(TrainConfig(), ["data.dataset=mnist", "data.test_limit=6000"]).data, "test")
    assert split.x.shape[0] == 200
    import warnings

    with warnings.catch_warnings():  # negative control: a limit within the data does not warn
        warnings.simplefilter("error", EquicanWarning)
        assert load_split(apply_overrides(TrainConfig(), ["data.dataset=mnist", "data.test_limit=20"]).data,
                          "test").x.shape[0] == 20
