"""Fuzzing the public entry points with hypothesis: malformed shapes, dtypes, devices, NaN/inf, empty batches,
extreme values and unknown names.

The oracle (``tests/_oracle.py``): a typed ``EquicanError`` with an "expected ... got ..." message, or a finite
result of the right shape; for the CLI, exit status 2 with one line on stderr. Never an untyped exception, never a
silent NaN. Covered: every member of every registered group, every canonicalizer kind (the DEQ included, never
alone), a tiny timm model behind ``create_model``, the IDX/MNIST loaders on corrupt bytes, checkpoint loading on
corrupt and malformed checkpoints, and argument parsing and validation of every command. Profiles: ``ci`` (the
default) and ``thorough`` (``HYPOTHESIS_PROFILE=thorough``), registered in ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import gzip

import pytest
import torch
from _oracle import check_cli_rejects, outcome, run_cli
from hypothesis import given
from hypothesis import strategies as st

import equican
from equican import make_group
from equican.canon import (DEQCanonicalizer, DirectCanonicalizer, IdentityCanonicalizer, OptimizationCanonicalizer,
                           OptimizationConfig, SolverSettings, DEQConfig, UpdateNet)
from equican.canon.nets import EnergyNet
from equican.config import TrainConfig
from equican.data import load_mnist
from equican.data.idx import read_idx, write_idx
from equican.errors import ShapeError
from equican.train import CHECKPOINT, SplitData, build, load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning", "ignore::UserWarning")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]
SPECIAL = [0.0, 1.0, -1.0, 1e-30, 1e30, -1e30, 3e38, -3e38, 1e300, float("nan"), float("inf"), float("-inf")]


@st.composite
def tensors(draw, shape, *, batch=None):
    """A tensor of ``(B, *shape)`` (or a mangled shape), of some dtype, with normal, extreme or non-finite entries."""
    b = draw(st.integers(0, 3)) if batch is None else batch
    full = [b, *shape]
    mangle = draw(st.sampled_from(["none", "none", "none", "drop", "add", "resize"]))
    if mangle == "drop" and len(full) > 1:
        full.pop(draw(st.integers(0, len(full) - 1)))
    elif mangle == "add":
        full.append(draw(st.integers(0, 3)))
    elif mangle == "resize":
        full[draw(st.integers(0, len(full) - 1))] = draw(st.integers(0, 5))
    dtype = draw(st.sampled_from(DTYPES)) if draw(st.integers(0, 4)) == 0 else torch.float32
    scale = draw(st.sampled_from([1.0, 1.0, 10.0, 1e4, 1e30]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    t = torch.randn(full, generator=generator, dtype=torch.float64) * scale
    if t.numel() and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from(SPECIAL))
    # float64 first, so that 1e300 becomes inf in float32 as a user's conversion would make it
    return t > 0 if dtype == torch.bool else t.to(dtype) if dtype.is_floating_point else t.clamp(-1e9, 1e9).to(dtype)


def images(draw, channels=1, batch=None):
    return draw(tensors((channels, draw(st.integers(1, 12)), draw(st.integers(1, 12))), batch=batch))


# ---------------------------------------------------------------------------------------------- the oracle itself
def test_oracle_flags_untyped_exceptions_and_silent_nan():
    """Negative controls: the oracle must fail on an untyped error, a typed one without the message pattern, and a
    NaN result; and accept a typed error and a finite result."""
    with pytest.raises(AssertionError, match="untyped"):
        outcome(lambda: torch.zeros(2) @ torch.zeros(3))
    with pytest.raises(AssertionError, match="without 'expected"):
        outcome(lambda: (_ for _ in ()).throw(ShapeError("bad shape")))
    with pytest.raises(AssertionError, match="non-finite"):
        outcome(lambda: torch.tensor([float("nan")]))
    with pytest.raises(AssertionError, match="shape"):
        outcome(lambda: torch.zeros(2), shape=(3,))
    assert outcome(lambda: (_ for _ in ()).throw(ShapeError("f: expected x of shape (B,), got (1, 2)"))) is None
    assert outcome(lambda: torch.zeros(2), shape=(2,)) is not None
    with pytest.raises(AssertionError):
        check_cli_rejects(1, "", "Traceback (most recent call last):\n  boom")
    with pytest.raises(AssertionError):
        check_cli_rejects(2, "", "usage: equican train\nequican train: error: x", "train")


# ---------------------------------------------------------------------------------------------- groups
MEMBERS = ["compose", "inverse", "act", "act_inverse", "distance", "to_unconstrained", "from_unconstrained",
           "identity", "sample", "chart_then_act"]


@given(data=st.data())
def test_group_members(group, data):
    member = data.draw(st.sampled_from(MEMBERS))
    b = data.draw(st.integers(0, 3))
    if member in ("identity", "sample"):
        device = data.draw(st.sampled_from(["cpu", None, "bogus", "meta", "cuda:7", 3.5]))
        dtype = data.draw(st.sampled_from([None, torch.float32, torch.float64, torch.float16, torch.int32]))
        batch = data.draw(st.sampled_from([b, -1, 2.0, True]))
        kwargs = {"generator": torch.Generator().manual_seed(0)} if member == "sample" else {}
        outcome(lambda: getattr(group, member)(batch, device=device, dtype=dtype, **kwargs))
        return
    # Valid elements from the chart at extreme logits, or raw (often invalid) parameter tensors.
    z = data.draw(tensors(group.unconstrained_shape, batch=b))
    if member == "from_unconstrained":
        outcome(lambda: group.from_unconstrained(z))
        return
    g = data.draw(tensors(group.param_shape, batch=b)) if data.draw(st.booleans()) else \
        outcome(lambda: group.from_unconstrained(z))
    if g is None:
        return
    x = images(data.draw, channels=data.draw(st.integers(1, 2)), batch=b if data.draw(st.booleans()) else None)
    calls = {"compose": lambda: group.compose(g, g), "inverse": lambda: group.inverse(g),
             "act": lambda: group.act(g, x), "act_inverse": lambda: group.act_inverse(g, x),
             "distance": lambda: group.distance(g, g), "to_unconstrained": lambda: group.to_unconstrained(g),
             "chart_then_act": lambda: group.act(group.from_unconstrained(z), x)}
    outcome(calls[member])


def test_group_fuzz_covers_the_registry():
    # A new group joins the fuzz through conftest's `group` parametrization; make sure that really is the registry.
    assert set(equican.list_groups()) >= {"affine", "cyclic", "monotone", "rotation", "scale"}


# ---------------------------------------------------------------------------------------------- canonicalizers
@functools.lru_cache(maxsize=None)
def canonicalizer(kind: str, name: str):
    torch.manual_seed(0)
    group = make_group(name)
    shape = group.unconstrained_shape
    if kind == "identity":
        return IdentityCanonicalizer(group).eval()
    if kind == "direct":
        return DirectCanonicalizer(group, UpdateNet(1, shape, channels=(4,))).eval()
    if kind == "optimization":
        return OptimizationCanonicalizer(group, EnergyNet(1, channels=(4,)), OptimizationConfig(steps=2)).eval()
    if kind == "escnn":
        from equican.canon.equivariant import EquivariantCanonicalizer

        return EquivariantCanonicalizer(group, 1, channels=(2,), kernel_size=3).eval()
    quick = SolverSettings(max_iter=3)
    return DEQCanonicalizer(group, UpdateNet(1, shape, channels=(4,)), DEQConfig(train=quick, eval=quick)).eval()


KIND_GROUPS = [("identity", "monotone"), ("direct", "monotone"), ("direct", "affine"), ("direct", "cyclic"),
               ("optimization", "scale"), ("optimization", "monotone"), ("escnn", "cyclic"), ("deq", "rotation"), ("deq", "monotone")]


@pytest.mark.parametrize("kind, name", KIND_GROUPS, ids=[f"{k}-{n}" for k, n in KIND_GROUPS])
@given(data=st.data())
def test_canonicalizers(kind, name, data):
    if kind == "escnn":
        pytest.importorskip("escnn")
    canon = canonicalizer(kind, name)
    x = images(data.draw, channels=data.draw(st.sampled_from([1, 1, 3])))
    result = outcome(lambda: canon(x))
    if result is not None:
        assert result.x.shape == x.shape and result.g.shape == (x.shape[0], *canon.group.param_shape)


# ---------------------------------------------------------------------------------------------- create_model
@functools.lru_cache(maxsize=None)
def tiny_vit():
    torch.manual_seed(0)
    return equican.create_model("vit_tiny_patch16_224", group="scale", canonicalizer="direct", img_size=16,
                                patch_size=8, depth=1, embed_dim=32, num_heads=2, num_classes=3).eval()


@given(data=st.data())
def test_create_model_inputs(data):
    model = tiny_vit()
    x = data.draw(tensors((data.draw(st.sampled_from([3, 3, 1])), data.draw(st.sampled_from([16, 16, 8, 24])),
                           data.draw(st.sampled_from([16, 16, 8])))))
    with torch.no_grad():
        result = outcome(lambda: model(x))
    if result is not None:
        assert result.shape == (x.shape[0], 3)


@given(name=st.sampled_from(["vit_tiny_patch16_224", "vit_tiny_patch16_2244", "resnet18.nosuchtag", ""]),
       at=st.sampled_from([0, 5, -1, "a", ()]), kind=st.sampled_from(["identity", "bogus", 3]),
       group=st.sampled_from(["scale", "nosuch", None]))
def test_create_model_arguments(name, at, kind, group):
    outcome(lambda: equican.create_model(name, group=group, at=at, canonicalizer=kind, img_size=16, patch_size=8,
                                         depth=1, embed_dim=32, num_heads=2, num_classes=3))


# ---------------------------------------------------------------------------------------------- data loaders
def _idx_bytes(tensor: torch.Tensor) -> bytes:
    """A uint8 tensor as raw IDX bytes (magic 00 00 08 ndim, big-endian sizes, data)."""
    sizes = b"".join(n.to_bytes(4, "big") for n in tensor.shape)
    return bytes([0, 0, 0x08, tensor.ndim]) + sizes + tensor.numpy().tobytes()


@given(data=st.data())
def test_idx_loaders_on_corrupt_bytes(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("idx")
    images_ = _idx_bytes(torch.zeros(3, 28, 28, dtype=torch.uint8))
    labels = _idx_bytes(torch.zeros(3, dtype=torch.uint8))
    which = data.draw(st.sampled_from(["images", "labels"]))
    raw = bytearray(images_ if which == "images" else labels)
    for _ in range(data.draw(st.integers(1, 3))):
        edit = data.draw(st.sampled_from(["byte", "truncate", "append", "header_count", "random"]))
        if edit == "byte" and raw:
            raw[data.draw(st.integers(0, min(len(raw), 16) - 1))] = data.draw(st.integers(0, 255))
        elif edit == "truncate":
            del raw[data.draw(st.integers(0, len(raw))):]
        elif edit == "append":
            raw += data.draw(st.binary(min_size=1, max_size=8))
        elif edit == "header_count" and len(raw) >= 8:
            raw[4:8] = data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1])).to_bytes(4, "big")
        elif edit == "random":
            raw = bytearray(data.draw(st.binary(max_size=24)))
    blob = bytes(raw)
    if data.draw(st.booleans()):
        blob = gzip.compress(blob)
        if data.draw(st.booleans()):
            blob = blob[: max(len(blob) - data.draw(st.integers(1, 8)), 0)]  # a cut-off gzip stream
    (root / "train-images-idx3-ubyte").write_bytes(blob if which == "images" else images_)
    (root / "train-labels-idx1-ubyte").write_bytes(blob if which == "labels" else labels)
    outcome(lambda: read_idx(root / f"train-{which}-idx{3 if which == 'images' else 1}-ubyte"))
    outcome(lambda: load_mnist("train", root=root))


def test_idx_round_trip_control(tmp_path):
    # Control for the corruption fuzz: unmodified bytes load.
    write_idx(tmp_path / "a.gz", torch.arange(6, dtype=torch.uint8).view(2, 3))
    assert read_idx(tmp_path / "a.gz").tolist() == [[0, 1, 2], [3, 4, 5]]


# ---------------------------------------------------------------------------------------------- checkpoints
@functools.lru_cache(maxsize=None)
def checkpoint_payload() -> dict:
    """A valid checkpoint built without training: the objective of a tiny config, fresh AdamW and scheduler."""
    config = TrainConfig.from_dict({"data": {"options": {"digits": 1, "cell": 24, "canvas": 24}},
                                    "model": {"options": {"channels": [4, 8]}}})
    with torch.random.fork_rng(devices=[]):
        objective = build(config, SplitData(torch.zeros(1, 1, 24, 24), torch.zeros(1, dtype=torch.int64), 10))
    optimizer = torch.optim.AdamW(objective.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return {"format": "equican-checkpoint-1", "config": config.to_dict(), "epoch": 1,
            "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": [], "input_shape": [1, 24, 24], "num_classes": 10}


ODD_VALUES = st.sampled_from([None, 0, -1, 2**70, "x", 1.5, [], [1, 2], {}, {"a": 1}, [1, -5, 48], True,
                              torch.zeros(2)])


@given(data=st.data())
def test_checkpoint_loading_on_malformed_checkpoints(tmp_path_factory, data):
    payload = dict(checkpoint_payload())
    payload["objective"] = dict(payload["objective"])
    path = tmp_path_factory.mktemp("ckpt") / CHECKPOINT
    edit = data.draw(st.sampled_from(["drop", "replace", "tensor", "config", "bytes", "truncate"]))
    key = data.draw(st.sampled_from(sorted(payload)))
    if edit == "drop":
        payload.pop(key)
    elif edit == "replace":
        payload[key] = data.draw(ODD_VALUES)
    elif edit == "tensor":
        name = data.draw(st.sampled_from(sorted(payload["objective"])))
        payload["objective"][name] = data.draw(st.sampled_from([torch.zeros(3), torch.zeros(()), "w", None]))
    elif edit == "config":
        section = data.draw(st.sampled_from(["data", "model", "method", "optim", "bogus"]))
        payload["config"] = {**payload["config"], section: data.draw(ODD_VALUES)}
    torch.save(payload, path)
    if edit == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=64)))
    elif edit == "truncate":
        path.write_bytes(path.read_bytes()[: data.draw(st.integers(0, 2000))])
    outcome(lambda: load_checkpoint(path))


def test_checkpoint_control(tmp_path):
    # Control: the unmodified payload loads.
    torch.save(checkpoint_payload(), tmp_path / CHECKPOINT)
    config, objective, _ = load_checkpoint(tmp_path / CHECKPOINT)
    assert config.model.name == "cnn" and not objective.training


# ---------------------------------------------------------------------------------------------- the CLI
BAD = {
    "train": [["--epochs", "0"], ["--epochs", "x"], ["--lr", "-1"], ["--lr", "nan"], ["--group", "bogus"],
              ["--method", "nosuch"], ["--model", "nosuchmodel"], ["--device", "tpu"], ["--seed", "-1"],
              ["--seed", str(2**64)], ["--set", "optim.nosuch=1"], ["--set", "optim.lr=[1"], ["--set", "noequals"],
              ["--config", "/nonexistent.yaml"], ["--config", "nosuchname"], ["--data", "/nonexistent"],
              ["--out", "/proc/equican_x"], ["--batch-size", "0"], ["--threads", "0"], ["--until-epoch", "0"],
              ["--set", "method.group_options.cells=0"], ["--set", "seed=true"], ["--bogus-flag"],
              ["--set", "data.dataset=nosuch"], ["--resume", "/nonexistent.pt"]],
    "evaluate": [["--set", "optim.lr=5"], ["--set", "model.name=vit"], ["--set", "eval.limit=0"],
                 ["--json", "/proc/equican_x.json"], ["--set", "eval.nosuch=1"], ["--set", "device=cuda"]],
    "compare": [["--groups", "bogus"], ["--baselines", "nosuch"], ["--seeds", "x"], ["--out", "/proc/equican_x"],
                ["--epochs", "0"], ["--config", "/nonexistent.toml"], ["--eval-groups", "bogus"]],
    "demo": [["--epochs", "0"], ["--epochs", "-3"], ["--out", "/proc/equican_x"], ["--seed", "-1"],
             ["--seed", "abc"]],
    "show-groups": [["--groups", "bogus"], ["--count", "0"], ["--count", "99"], ["--seed", "-1"], ["--out", "x.txt"],
                    ["--out", "/proc/equican_x.png"], ["--split", "val"], ["--data", "/nonexistent"]],
}
GOOD = {"train": [["--config", "demo"], ["--method", "dec"], ["--group", "scale"], ["--set", "eval.limit=4"],
                  ["--epochs", "1"]],
        "evaluate": [["--set", "eval.limit=4"]],
        "compare": [["--quick"], ["--groups", "scale"], ["--baselines", "plain"]],
        "demo": [["--quick"], ["--seed", "1"]],
        "show-groups": [["--count", "1"], ["--groups", "scale"]]}


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_ckpt") / CHECKPOINT
    torch.save(checkpoint_payload(), path)
    return path


@pytest.mark.parametrize("command", sorted(BAD))
@given(data=st.data())
def test_cli_rejects_bad_arguments_before_any_work(command, checkpoint_file, tmp_path_factory, data):
    """At least one bad fragment among good ones: exit 2 and one line, before any training or evaluation."""
    bad = data.draw(st.lists(st.sampled_from(BAD[command]), min_size=1, max_size=2))
    good = data.draw(st.lists(st.sampled_from(GOOD[command]), max_size=2))
    fragments = [*good, *bad]  # bad last: argparse and --set let a later value override an earlier one
    argv = [part for fragment in fragments for part in fragment]
    if command == "evaluate":  # the positional checkpoint: the real one, or a missing one (bad on its own)
        argv.insert(0, data.draw(st.sampled_from([str(checkpoint_file), "/nonexistent.pt"])))
    if command in ("train", "compare", "demo") and "--out" not in argv:
        argv += ["--out", str(tmp_path_factory.mktemp("o") / "run")]
    if command == "show-groups" and "--out" not in argv:
        argv += ["--out", str(tmp_path_factory.mktemp("o") / "g.png")]
    status, stdout, stderr = run_cli(command, *argv)
    check_cli_rejects(status, stdout, stderr, None)
