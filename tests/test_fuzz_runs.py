"""Fuzzing merges and run directories (issue 22): ``compare --merge`` over corrupted ``compare.json`` files, random
source lists and random option sets; the run-directory rules and the lock over random sequences; ``evaluate`` over
random paths.

The oracle (``tests/_oracle.py``): a typed ``EquicanError`` with an "expected ... got ..." message and nothing
written, or a success that is correct against a model of the rules; for the CLI, exit status 2 with one line on
stderr. Profiles as in ``tests/conftest.py`` (``HYPOTHESIS_PROFILE=thorough`` for a deliberate search).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from _oracle import check_cli_rejects, outcome, run_cli
from hypothesis import event, given
from hypothesis import strategies as st

from equican._rundir import CHECKPOINT, EVALUATION, LOCK, METRICS, RunLock, check_run_directory, clear_run
from equican.compare import QUICK, compare, merge
from equican.config import apply_overrides, load_config
from equican.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished comparison (plain and dec[scale], seeds 0 and 1)."""
    out = tmp_path_factory.mktemp("fuzz_source") / "a"
    base = apply_overrides(load_config("compare"), [*QUICK, "data.options.cell=24", "data.options.canvas=48",
                                                   "model.options.channels=[4, 8]",
                                                   "method.options.channels=[4, 8]", "threads=1"])
    compare(base, groups=("scale",), baselines=("plain",), eval_groups=("scale",), seeds=(0, 1), outside_scales=(),
            out=out, progress=False, figure_count=2)
    return out


def _clone(source: Path, target: Path, text: str | None = None) -> Path:
    """A source directory whose runs are the real ones (linked) and whose compare.json is ``text``."""
    target.mkdir(parents=True)
    for run in source.iterdir():
        if run.is_dir():
            (target / run.name).symlink_to(run, target_is_directory=True)
    (target / "compare.json").write_text((source / "compare.json").read_text() if text is None else text)
    return target


def _paths(value, prefix=()):
    """Every path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0])
    | st.floats(allow_nan=False) | st.text(max_size=12) | st.sampled_from(["../x", "plain", "dec[scale]", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@st.composite
def mutated(draw, text: str) -> str:
    """``text`` (a compare.json) with one to three random edits: a value replaced or deleted, the text cut short or
    a byte changed."""
    kind = draw(st.sampled_from(["tree", "tree", "tree", "cut", "byte"]))
    if kind == "cut":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "byte":
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + draw(st.sampled_from(["\x00", "{", "]", '"', "9", "N", "\\"])) + text[i + 1:]
    data = json.loads(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(data)


@given(data=st.data())
def test_merge_of_a_corrupted_compare_json(source, tmp_path_factory, data):
    """A typed error and nothing written, or a merge whose page and JSON are whole."""
    text = data.draw(mutated((source / "compare.json").read_text()))
    root = tmp_path_factory.mktemp("m")
    src, out = _clone(source, root / "src", text), root / "out"
    result = outcome(lambda: merge([src], out=out))
    event("refused" if result is None else "merged")
    if result is None:
        assert not out.exists()
    else:
        assert json.loads((out / "compare.json").read_text())["runs"] == result["runs"]
        assert (out / "compare.md").is_file() and not (out / LOCK).exists()


@given(picks=st.lists(st.sampled_from(["a", "b", "a", "a_copy", "missing", "out", "around"]), min_size=1,
                      max_size=4))
def test_merge_of_random_source_lists(source, tmp_path_factory, picks):
    """Accepted exactly when every source is a distinct existing comparison outside ``out``, no seed twice."""
    root = tmp_path_factory.mktemp("lists")
    full = json.loads((source / "compare.json").read_text())
    seeds = {"a": 0, "b": 1, "a_copy": 0}
    for name, seed in seeds.items():  # a: seed 0, b: seed 1, a_copy: seed 0 again, in another directory
        one = {**full, "runs": {run: [r for r in rows if r["seed"] == seed] for run, rows in full["runs"].items()}}
        _clone(source, root / "in" / name, json.dumps(one))
    out = root / "in" / "merged"
    paths = {"a": root / "in" / "a", "b": root / "in" / "b", "a_copy": root / "in" / "a_copy",
             "missing": root / "in" / "nowhere", "out": out, "around": root / "in"}
    sources = [paths[p] for p in picks]
    valid = (len(set(picks)) == len(picks) and not {"missing", "out", "around"} & set(picks)
             and not {"a", "a_copy"} <= set(picks))
    result = outcome(lambda: merge(sources, out=out))
    assert (result is not None) == valid, (picks, result)
    if valid:
        assert result["seeds"] == sorted({seeds[p] for p in picks})
        assert all(len(rows) == len(picks) for rows in result["runs"].values())
    else:
        assert not out.exists()


UNUSED = [["--quick"], ["--groups", "scale"], ["--seeds", "0"], ["--set", "optim.lr=1"], ["--kinds", "direct"],
          ["--baselines"], ["--eval-groups", "scale"], ["--augment-group", "scale"], ["--config", "compare"],
          ["--model", "cnn"], ["--data", "/x"], ["--epochs", "1"]]


@given(extra=st.lists(st.sampled_from(UNUSED), min_size=1, max_size=3), progress=st.booleans())
def test_merge_with_random_unused_options(source, tmp_path_factory, extra, progress):
    out = tmp_path_factory.mktemp("opts") / "m"
    argv = ["compare", "--merge", source, "--out", out, *(a for e in extra for a in e),
            *(["--no-progress"] if progress else [])]
    status, stdout, stderr = run_cli(*argv)
    check_cli_rejects(status, stdout, stderr, "compare")
    assert all(e[0] in stderr for e in extra) and not out.exists()


# ---------------------------------------------------------------------------------------------- run directories
FILES = st.sets(st.sampled_from([CHECKPOINT, METRICS, EVALUATION, "other.txt", "dir:" + CHECKPOINT]))


@given(files=FILES, resume=st.sampled_from([False, True, "own", "other"]), overwrite=st.booleans())
def test_run_directory_rules(tmp_path_factory, files, resume, overwrite):
    """The refusal happens exactly when the model says so; ``clear_run`` then leaves no run but a resumed one."""
    out = tmp_path_factory.mktemp("rd") / "run"
    out.mkdir()
    for name in sorted(files, key=lambda n: not n.startswith("dir:")):  # a directory first: it wins the name
        if name.startswith("dir:"):
            (out / name[4:]).mkdir(exist_ok=True)
        elif not (out / name).exists():
            (out / name).write_text("x")
    other = out.parent / "other.pt"
    resume_arg = {"own": out / CHECKPOINT, "other": other}.get(resume, resume)
    holds = any(os.path.lexists(out / n) for n in (CHECKPOINT, METRICS))
    refused = (overwrite and resume is True) or (holds and not overwrite and resume not in (True, "own"))
    result = outcome(lambda: check_run_directory(out, resume=resume_arg, overwrite=overwrite) or True)
    assert (result is None) == refused, (files, resume, overwrite)
    if overwrite and not refused:
        cleared = outcome(lambda: clear_run(out, resume=resume_arg) or True)
        if cleared is None:  # only a directory where checkpoint.pt should be cannot be removed
            assert (out / CHECKPOINT).is_dir()
        else:
            kept = {CHECKPOINT} if resume == "own" and (out / CHECKPOINT).exists() else set()
            assert {p.name for p in out.iterdir()} & {CHECKPOINT, METRICS, EVALUATION} == kept


@given(ops=st.lists(st.tuples(st.sampled_from(["acquire", "release"]), st.integers(0, 2)), max_size=12))
def test_lock_sequences(tmp_path_factory, ops):
    """At most one of three locks on one directory is held at a time; the lock file exists exactly while one is."""
    directory = tmp_path_factory.mktemp("lk") / "run"
    locks = [RunLock(directory, where="test") for _ in range(3)]
    holder = None
    try:
        for op, i in ops:
            if op == "acquire":
                result = outcome(locks[i].acquire)
                assert (result is not None) == (holder in (None, i)), (ops, op, i, holder)
                holder = i if result is not None else holder
            else:
                locks[i].release()
                holder = None if holder == i else holder
            assert [lock.held for lock in locks] == [j == holder for j in range(3)]
            assert (directory / LOCK).exists() == (holder is not None)
    finally:
        for lock in locks:
            lock.release()


@given(path=st.text(max_size=12) | st.sampled_from(["", "/", ".", "..", "/nonexistent.pt", "a/", "\x00"]))
def test_evaluate_on_random_paths(path):
    status, stdout, stderr = run_cli("evaluate", path)
    check_cli_rejects(status, stdout, stderr, None)


def test_fuzz_controls(source, tmp_path):
    """Negative controls of the fuzz oracles: the unmodified clone merges; a lock held by one is refused to another."""
    src = _clone(source, tmp_path / "src")
    assert outcome(lambda: merge([src], out=tmp_path / "out"))["seeds"] == [0, 1]
    with RunLock(tmp_path / "d", where="test"):
        with pytest.raises(ConfigError, match="in use"):
            RunLock(tmp_path / "d", where="test").acquire()
    shutil.rmtree(tmp_path / "out")
