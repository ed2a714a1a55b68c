"""Issue 22, part B: run directories that protect themselves, merges that count each run once, and outputs written
atomically. Every check comes with a negative control: the refusal AND the neighbouring case that is accepted.

* A fresh ``train`` into a directory that holds a run is refused unless ``overwrite`` (or a resume of that run);
  ``--overwrite`` replaces it.
* A run directory in use is locked: a second writer (another process, or another lock in this one) is refused, a
  holder killed with ``kill -9`` leaves no stale lock, and two real ``equican train`` processes into one ``--out``
  give exactly one success.
* ``compare --merge``: a source given twice, two sources holding one run's seed, a source equal to or inside
  ``--out``, options a merge does not use, an empty ``--out``, a corrupt or partial ``compare.json`` (the six
  tracebacks of the issue) and a missing checkpoint are refused before anything is written.
* ``metrics.json``, the ``compare`` outputs and ``evaluate``'s JSON are replaced atomically; ``equican evaluate ''``
  is one line on stderr.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _oracle import check_cli_rejects, run_cli

import equican._atomic as atomic
from equican._rundir import LOCK, RunLock, check_run_directory
from equican.compare import QUICK, compare, merge
from equican.config import TrainConfig, apply_overrides, load_config
from equican.errors import ConfigError, DataError
from equican.train import CHECKPOINT, METRICS, load_checkpoint, train

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning", "ignore::UserWarning")

# A run of a second or so (plain CNN, 16 one-digit composites, 2 batches per epoch, no evaluation).
TINY = ("data.train_limit=16", "data.test_limit=8", "data.options.digits=1", "data.options.cell=24",
        "data.options.canvas=24", "model.options.channels=[4, 8]", "optim.epochs=1", "optim.batch_size=8",
        "eval.enabled=false", "progress=false", "device=cpu", "threads=1")
TINY_CLI = [a for o in TINY for a in ("--set", o)]


def tiny(out: Path, *overrides: str) -> TrainConfig:
    return apply_overrides(TrainConfig(), [*TINY, f"out={json.dumps(str(out))}", *overrides])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "equican", *args]


# ---------------------------------------------------------------------------------------------- fresh runs
def test_a_fresh_train_into_a_run_is_refused_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "run"
    train(tiny(out))
    before = {name: (out / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    with pytest.raises(ConfigError, match="hold no run") as info:
        train(tiny(out, "seed=1"))
    assert str(out) in str(info.value) and "--overwrite" in str(info.value) and "checkpoint.pt" in str(info.value)
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing was touched
    assert not (out / LOCK).exists()
    # Controls: a new directory is accepted, and so is the same directory with overwrite, which replaces the run.
    train(tiny(tmp_path / "other", "seed=1"))
    train(tiny(out, "seed=1"), overwrite=True)
    assert load_checkpoint(out / CHECKPOINT)[0].seed == 1
    assert json.loads((out / METRICS).read_text())["config"]["seed"] == 1


def test_resume_needs_no_overwrite_and_refuses_it(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, "optim.epochs=2"), until_epoch=1)
    with pytest.raises(ConfigError, match="got both"):
        train(tiny(out, "optim.epochs=2"), resume=True, overwrite=True)
    result = train(tiny(out, "optim.epochs=2"), resume=True)  # control: a resume of this run writes here
    assert result["epochs_done"] == 2
    # The path of this directory's own checkpoint counts as resuming it.
    check_run_directory(out, resume=out / ".." / out.name / CHECKPOINT, overwrite=False)


def test_resuming_another_run_into_a_run_needs_overwrite(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny(a, "optim.epochs=2"), until_epoch=1)
    train(tiny(b, "seed=3"))
    with pytest.raises(ConfigError, match="hold no run"):
        train(tiny(b, "optim.epochs=2"), resume=a / CHECKPOINT)
    assert load_checkpoint(b / CHECKPOINT)[0].seed == 3
    result = train(tiny(b, "optim.epochs=2"), resume=a / CHECKPOINT, overwrite=True)  # control
    assert result["epochs_done"] == 2 and (a / CHECKPOINT).is_file()


def test_overwrite_removes_the_previous_runs_files(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, "optim.epochs=2"))
    (out / "evaluation.json").write_text("{}")
    result = train(tiny(out, "optim.epochs=2"), until_epoch=1, overwrite=True)
    assert not (out / "evaluation.json").exists()
    assert json.loads((out / METRICS).read_text())["complete"] is False and result["epochs_done"] == 1
    assert torch.load(out / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT, METRICS]


def test_the_cli_refuses_a_run_directory_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", *TINY_CLI, "--out", out)[0] == 0
    status, stdout, stderr = run_cli("train", *TINY_CLI, "--out", out, "--seed", "1")
    check_cli_rejects(status, stdout, stderr, "train")
    assert "--overwrite" in stderr and str(out) in stderr
    status, _, stderr = run_cli("train", *TINY_CLI, "--out", out, "--seed", "1", "--overwrite")
    assert status == 0, stderr
    check_cli_rejects(*run_cli("train", *TINY_CLI, "--out", out, "--overwrite", "--resume"), "train")


# ---------------------------------------------------------------------------------------------- the lock
def test_a_locked_directory_refuses_a_second_writer(tmp_path):
    out = tmp_path / "run"
    with RunLock(out, where="test") as lock:
        assert lock.held and (out / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match="in use by another run") as info:
            train(tiny(out))
        assert str(out) in str(info.value) and f"process {os.getpid()}" in str(info.value)
        with pytest.raises(ConfigError, match="in use"):
            RunLock(out, where="test").acquire()  # a second lock in the same process is refused as well
        assert not (out / CHECKPOINT).exists()
    assert not (out / LOCK).exists()  # released and removed
    train(tiny(out))  # control: once released, the directory is free
    assert (out / CHECKPOINT).is_file() and not (out / LOCK).exists()


_HOLDER = """
import sys, time
from equican._rundir import RunLock
RunLock(sys.argv[1], where="holder").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"process {holder.pid}"):
            RunLock(out, where="test").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (out / LOCK).exists()  # the file stays, locked by nobody
    with RunLock(out, where="test") as lock:
        assert lock.held and (out / LOCK).read_text().strip() == str(os.getpid())
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_two_concurrent_train_processes_give_exactly_one_success(tmp_path):
    out = tmp_path / "run"
    args = _cli("train", *TINY_CLI, "--set", "optim.epochs=3", "--out", str(out))
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [(p.returncode, *streams) for p in procs for streams in [p.communicate(timeout=600)]]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    (_, _, loser), = [r for r in results if r[0] == 2]
    check_cli_rejects(2, "", loser, "train", quiet=False)
    # Overlapping runs meet the lock; a loser that started after the winner finished meets the finished run.
    assert "in use by another run" in loser or "hold no run" in loser, loser
    assert str(out) in loser
    assert load_checkpoint(out / CHECKPOINT)[2]["epoch"] == 3 and not (out / LOCK).exists()


@pytest.mark.slow
def test_a_second_train_during_a_run_is_refused_then_a_kill_frees_the_directory(tmp_path):
    out = tmp_path / "run"
    long = subprocess.Popen(_cli("train", *TINY_CLI, "--set", "optim.epochs=100000", "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not ((out / LOCK).exists() and (out / LOCK).read_text().strip() == str(long.pid)):
            assert long.poll() is None and time.monotonic() < deadline, long.stderr.read() if long.poll() else ""
            time.sleep(0.2)
        second = subprocess.run(_cli("train", *TINY_CLI, "--out", str(out), "--overwrite"), capture_output=True,
                                text=True, env=_env(), timeout=600)
        check_cli_rejects(second.returncode, "", second.stderr, "train", quiet=False)
        assert "in use by another run" in second.stderr and f"process {long.pid}" in second.stderr
        assert long.poll() is None  # the first run was not disturbed
    finally:
        long.send_signal(signal.SIGKILL)
        long.wait(timeout=60)
    # The killed run held the lock; the OS released it. A fresh run is refused only if the killed run left a
    # checkpoint (it holds a run); with --overwrite it is accepted either way.
    fresh = subprocess.run(_cli("train", *TINY_CLI, "--out", str(out)), capture_output=True, text=True, env=_env(),
                           timeout=600)
    assert fresh.returncode == (2 if (out / CHECKPOINT).exists() else 0), fresh.stderr
    replaced = subprocess.run(_cli("train", *TINY_CLI, "--out", str(out), "--overwrite"), capture_output=True,
                              text=True, env=_env(), timeout=600)
    assert replaced.returncode == 0, replaced.stderr
    assert load_checkpoint(out / CHECKPOINT)[2]["epoch"] == 1 and not (out / LOCK).exists()


# ---------------------------------------------------------------------------------------------- atomic outputs
def _fail_writes_of(monkeypatch, name: str) -> None:
    """A full disk for every atomic write of a file called ``name``: its temporary file is written, then the flush
    fails."""
    real = atomic._fsync_file

    def fsync(path):
        if path.name.startswith(f".{name}."):
            raise OSError(28, "No space left on device")
        real(path)

    monkeypatch.setattr(atomic, "_fsync_file", fsync)


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*.tmp"))


def test_metrics_json_is_replaced_atomically(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny(out, "optim.epochs=2"), until_epoch=1)
    before = (out / METRICS).read_text()
    _fail_writes_of(monkeypatch, METRICS)
    with pytest.raises(OSError, match="No space"):
        train(tiny(out, "optim.epochs=2"), resume=True)
    assert (out / METRICS).read_text() == before and _temporaries(out) == []
    monkeypatch.undo()
    train(tiny(out, "optim.epochs=2"), resume=True)  # control: the same write, without the failure, replaces it
    assert json.loads((out / METRICS).read_text())["complete"] is True


def test_evaluate_writes_its_json_atomically_and_refuses_empty_paths(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny(out))
    target = tmp_path / "eval.json"
    target.write_text("old")
    args = ("evaluate", out / CHECKPOINT, "--set", "eval.limit=2", "--json", target)
    _fail_writes_of(monkeypatch, "eval.json")
    with pytest.raises(OSError):
        run_cli(*args)
    assert target.read_text() == "old" and _temporaries(tmp_path) == []
    monkeypatch.undo()
    assert run_cli(*args)[0] == 0 and json.loads(target.read_text())["epoch"] == 1  # control
    for argv in (["evaluate", ""], ["evaluate", "/"], ["evaluate", out / CHECKPOINT, "--json", ""]):
        check_cli_rejects(*run_cli(*argv))


# ---------------------------------------------------------------------------------------------- merges
def _base() -> TrainConfig:
    return apply_overrides(load_config("compare"), [*QUICK, "data.options.cell=24", "data.options.canvas=48",
                                                   "model.options.channels=[4, 8]", "method.options.channels=[4, 8]",
                                                   "threads=1"])


def run_compare(out: Path, seeds: tuple[int, ...]) -> Path:
    compare(_base(), groups=("scale",), baselines=("plain",), eval_groups=("scale",), seeds=seeds,
            outside_scales=(), out=out, progress=False, figure_count=2)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two finished comparisons of the same runs: seed 0 in ``a``, seed 1 in ``b``."""
    root = tmp_path_factory.mktemp("sources")
    return run_compare(root / "a", (0,)), run_compare(root / "b", (1,))


def test_compare_rows_record_their_identity_and_a_rerun_replaces_the_comparison(sources, tmp_path):
    a, _ = sources
    rows = json.loads((a / "compare.json").read_text())["runs"]
    hashes = {name: r[0]["config_hash"] for name, r in rows.items()}
    assert len(set(hashes.values())) == 2 and all(len(h) == 16 for h in hashes.values())
    assert not (a / LOCK).exists() and _temporaries(a) == []
    # compare's documented behaviour: rerunning into the same --out replaces it (its runs train with overwrite).
    shutil.copytree(a, tmp_path / "a")
    run_compare(tmp_path / "a", (0,))
    again = json.loads((tmp_path / "a" / "compare.json").read_text())["runs"]
    assert {name: r[0]["config_hash"] for name, r in again.items()} == hashes  # the same runs, the same identity


def test_merge_counts_each_run_once(sources, tmp_path):
    a, b = sources
    payload = merge([a, b], out=tmp_path / "m")  # control: two distinct seeds pool
    assert payload["seeds"] == [0, 1] and all([r["seed"] for r in rows] == [0, 1] for rows in payload["runs"].values())
    for twice in ([a, a], [a, b, a], [a, Path(str(a) + "/."), b], [a, a.parent / ".." / a.parent.name / "a"]):
        with pytest.raises(ConfigError, match="twice"):
            merge(twice, out=tmp_path / "m2")
    c = tmp_path / "c"
    shutil.copytree(b, c)  # the same seed of the same runs in a second directory
    with pytest.raises(ConfigError, match="seed 1 in both") as info:
        merge([a, b, c], out=tmp_path / "m2")
    assert "the same run" in str(info.value)
    data = json.loads((c / "compare.json").read_text())
    data["runs"]["plain"][0]["config_hash"] = "0" * 16
    (c / "compare.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="different configs"):
        merge([b, c], out=tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


def test_merge_refuses_an_out_equal_to_or_around_a_source(sources, tmp_path):
    a, b = sources
    for source in (a, b):
        shutil.copytree(source, tmp_path / source.name)
    a, b = tmp_path / "a", tmp_path / "b"
    before = {p: p.read_bytes() for p in a.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="is the source"):
        merge([a, b], out=a)
    with pytest.raises(ConfigError, match="contains the source"):
        merge([a, b], out=tmp_path)
    assert {p: p.read_bytes() for p in a.iterdir() if p.is_file()} == before
    merge([a, b], out=a / "merged")  # control: a directory inside a source is not a source
    assert (a / "merged" / "compare.json").is_file()


def test_merge_refuses_a_missing_checkpoint_before_writing(sources, tmp_path):
    a, b = sources
    shutil.copytree(b, tmp_path / "b")
    (tmp_path / "b" / "dec[scale]" / "seed1" / CHECKPOINT).unlink()
    merge([a, tmp_path / "b"], out=tmp_path / "ok")  # control: the figures load seed 0's, from a
    with pytest.raises(DataError, match=r"dec\[scale\] seed 1") as info:
        merge([tmp_path / "b"], out=tmp_path / "m")
    assert str(tmp_path / "b" / "dec[scale]" / "seed1" / CHECKPOINT) in str(info.value)
    assert not (tmp_path / "m").exists()


def _mutations():
    """The six tracebacks of the issue (and their neighbours): (id, mutate(text) -> text, the field named)."""
    def edit(change):
        def apply(text):
            data = json.loads(text)
            change(data)
            return json.dumps(data)
        return apply

    def first_row(data):
        return data["runs"]["plain"][0]

    return [
        ("truncated", lambda t: t[: len(t) // 2], "syntax error"),  # JSONDecodeError
        ("not-json", lambda t: "\x00\x01garbage", "syntax error"),
        ("no-runs", edit(lambda d: d.pop("runs")), "'runs'"),  # KeyError
        ("no-base", edit(lambda d: d.pop("base")), "'base'"),
        ("runs-a-list", edit(lambda d: d.__setitem__("runs", [1, 2])), "'runs'"),  # AttributeError
        ("no-rows", edit(lambda d: d["runs"].__setitem__("plain", [])), "runs['plain']"),  # IndexError
        ("seed-a-string", edit(lambda d: first_row(d).__setitem__("seed", "0")), "['seed']"),  # TypeError
        ("nan-metric", edit(lambda d: first_row(d).__setitem__("accuracy", math.nan)), "['accuracy']"),
        ("metric-a-string", edit(lambda d: first_row(d).__setitem__("accuracy", "high")), "['accuracy']"),
        ("missing-metric", edit(lambda d: first_row(d).pop("invariance[scale]")), "invariance[scale]"),
        ("base-not-a-config", edit(lambda d: d["base"]["optim"].__setitem__("lr", "fast")), "'base'"),
        ("machine-a-string", edit(lambda d: d.__setitem__("machine", "x")), "'machine'"),
        ("top-a-list", lambda t: "[1, 2]", "JSON object"),
        ("escaping-name", edit(lambda d: d["runs"].__setitem__("../../x", d["runs"]["plain"])), "run name"),
        ("eval-groups-empty", edit(lambda d: d.__setitem__("eval_groups", [])), "'eval_groups'"),
    ]


@pytest.mark.parametrize("mutation", _mutations(), ids=[m[0] for m in _mutations()])
def test_a_corrupt_or_partial_compare_json_is_a_data_error_naming_file_and_field(sources, tmp_path, mutation):
    _, mutate, field = mutation
    a, _ = sources
    broken = tmp_path / "broken"
    shutil.copytree(a, broken)
    path = broken / "compare.json"
    path.write_text(mutate(path.read_text()))
    with pytest.raises(DataError) as info:
        merge([broken], out=tmp_path / "m")
    message = str(info.value)
    assert str(path) in message and field in message and "expected" in message and "got" in message, message
    assert not (tmp_path / "m").exists()
    status, stdout, stderr = run_cli("compare", "--merge", broken, "--out", tmp_path / "m")
    check_cli_rejects(status, stdout, stderr, "compare")


def test_merge_of_an_unmodified_copy_is_accepted(sources, tmp_path):
    """Control for the corruptions above: the same copy, unmodified, merges."""
    a, _ = sources
    shutil.copytree(a, tmp_path / "copy")
    assert merge([tmp_path / "copy"], out=tmp_path / "m")["seeds"] == [0]


UNUSED = [["--quick"], ["--groups", "scale"], ["--seeds", "0"], ["--seeds", "3"], ["--set", "optim.lr=1"],
          ["--kinds", "dec"], ["--baselines"], ["--baselines", "plain"], ["--eval-groups", "scale"],
          ["--augment-group", "scale"], ["--config", "compare"], ["--model", "cnn"], ["--data", "/x"],
          ["--epochs", "1"]]


@pytest.mark.parametrize("extra", UNUSED, ids=[" ".join(u) for u in UNUSED])
def test_merge_refuses_options_it_does_not_use(sources, tmp_path, extra):
    a, b = sources
    status, stdout, stderr = run_cli("compare", "--merge", a, b, "--out", tmp_path / "m", *extra)
    check_cli_rejects(status, stdout, stderr, "compare")
    assert extra[0] in stderr and not (tmp_path / "m").exists()


def test_merge_on_the_command_line(sources, tmp_path):
    a, b = sources
    status, _, stderr = run_cli("compare", "--merge", a, b, "--out", tmp_path / "m", "--no-progress")
    assert status == 0, stderr  # control: --out and --no-progress go with --merge
    assert json.loads((tmp_path / "m" / "compare.json").read_text())["seeds"] == [0, 1]
    check_cli_rejects(*run_cli("compare", "--merge", a, a, "--out", tmp_path / "m2"), "compare")
    check_cli_rejects(*run_cli("compare", "--merge", a, b, "--out", a), "compare")
    for command in (["compare", "--merge", a, "--out", ""], ["compare", "--out", ""], ["demo", "--out", ""]):
        check_cli_rejects(*run_cli(*command))
    with pytest.raises(ConfigError, match="empty"):
        merge([a], out="")
    with pytest.raises(ConfigError, match="empty"):
        compare(_base(), out="")


def test_compare_outputs_are_replaced_atomically(sources, tmp_path, monkeypatch):
    a, b = sources
    out = tmp_path / "m"
    merge([a, b], out=out, command="first")
    before = (out / "compare.json").read_text()
    _fail_writes_of(monkeypatch, "compare.json")
    with pytest.raises(OSError, match="No space"):
        merge([a, b], out=out, command="second")
    assert (out / "compare.json").read_text() == before and _temporaries(out) == []
    assert not (out / LOCK).exists()
    monkeypatch.undo()
    merge([a, b], out=out, command="second")  # control
    assert json.loads((out / "compare.json").read_text())["command"].endswith("second")


def test_a_merge_into_a_directory_in_use_is_refused(sources, tmp_path):
    a, b = sources
    with RunLock(tmp_path / "m", where="test"):
        with pytest.raises(ConfigError, match="in use by another run"):
            merge([a, b], out=tmp_path / "m")
        assert not (tmp_path / "m" / "compare.json").exists()
    merge([a, b], out=tmp_path / "m")  # control


@pytest.mark.slow
def test_a_demo_reruns_into_its_directory_and_a_concurrent_one_is_refused(tmp_path):
    """`make demo` reruns `equican demo` into outputs/demo: the rerun replaces the previous demo (its runs train with
    overwrite); a demo into a directory in use is refused."""
    out = tmp_path / "demo"
    for _ in range(2):
        status, _, stderr = run_cli("demo", "--quick", "--out", out, "--no-progress")
        assert status == 0, stderr
    assert json.loads((out / "results.json").read_text()).keys() == {"plain", "dec"}
    assert not (out / LOCK).exists() and _temporaries(out) == []
    with RunLock(out, where="test"):
        status, stdout, stderr = run_cli("demo", "--quick", "--out", out, "--no-progress")
    check_cli_rejects(status, stdout, stderr, "demo")
    assert "in use by another run" in stderr


# ---------------------------------------------------------------------------------------------- kill -9 mid-checkpoint
def _checkpoint_kill_loop(path: Path, payload: dict, write, kills: int) -> dict[str, int]:
    """Fork a writer that rewrites the checkpoint at ``path`` (epochs 1, 2, 1, ...) until it is killed with SIGKILL
    at a random instant, then read it back; ``kills`` times."""
    import random

    from equican._checkpoint import read_checkpoint

    rng = random.Random(0)
    stats = {"kills": 0, "unloadable": 0}
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(10**9):
                    write({**payload, "epoch": 1 + i % 2}, path)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.005, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        stats["kills"] += 1
        try:
            read_checkpoint(path)
        except DataError:
            stats["unloadable"] += 1
            break
    return stats


@pytest.mark.slow
def test_kill_9_during_checkpoint_writes_never_leaves_an_unloadable_checkpoint(tmp_path):
    from equican._checkpoint import read_checkpoint, save_atomic

    train(tiny(tmp_path / "run"))
    path = tmp_path / "run" / CHECKPOINT
    payload = read_checkpoint(path)
    stats = _checkpoint_kill_loop(path, payload, save_atomic, 60)
    assert stats == {"kills": 60, "unloadable": 0}
    # Negative control: torch.save straight onto the checkpoint tears it within a few kills.
    stats = _checkpoint_kill_loop(path, payload, lambda p, target: torch.save(p, target), 60)
    assert stats["unloadable"] == 1
