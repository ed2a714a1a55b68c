"""Regression tests of issue 13 (D3-D18 except the DEQ solver's D1, D2, D9, and stale checkpoint temporaries): one
test or parametrized group per defect, named after it, each running the filer's reproducer."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from _oracle import check_cli_rejects, check_typed, run_cli

import equican
from equican import make_group
from equican.canon import (DEQCanonicalizer, DirectCanonicalizer, IdentityCanonicalizer, OptimizationCanonicalizer,
                           OptimizationConfig, UpdateNet)
from equican.canon.nets import EnergyNet
from equican.config import TrainConfig, apply_overrides
from equican.data import load_mnist
from equican.data.idx import write_idx
from equican.errors import (ConfigError, ConvergenceError, DataError, DeviceError, DTypeError, InvalidElementError,
                            NonFiniteError, ShapeError)
from equican.train import CHECKPOINT, METRICS, evaluate_checkpoint, load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning")

TINY = ("--config", "demo", "--set", "data.train_limit=32", "--set", "data.test_limit=8", "--set",
        "data.options.digits=1", "--set", "data.options.cell=24", "--set", "data.options.canvas=24", "--set",
        "model.options.channels=[4, 8]", "--set", "eval.limit=4", "--set", "eval.batch_size=4", "--set",
        "eval.rescalings=2", "--set", "optim.epochs=2", "--batch-size", "16", "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-epoch run (checkpoint at epoch 2, metrics with the evaluation)."""
    out = tmp_path_factory.mktemp("issue13") / "r5"
    status, _, stderr = run_cli("train", *TINY, "--out", out)
    assert status == 0, stderr
    return out


# ---------------------------------------------------------------------------------------------- D3
def test_d3_resume_until_epoch_below_the_checkpoint_is_rejected_and_keeps_the_results(run_dir):
    before = (run_dir / METRICS).read_text()
    status, stdout, stderr = run_cli("train", *TINY, "--out", run_dir, "--resume", "--until-epoch", "1")
    check_cli_rejects(status, stdout, stderr, "train")
    assert "until_epoch" in stderr and "epoch 2" in stderr
    assert (run_dir / METRICS).read_text() == before
    assert "eval" in json.loads(before)


# ---------------------------------------------------------------------------------------------- D4
@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("where", ["proc", "file", "under_file"])
def test_d4_train_out_is_checked_before_training(where, a_file):
    out = {"proc": "/proc/equican_x", "file": a_file, "under_file": a_file / "sub"}[where]
    status, stdout, stderr = run_cli("train", *TINY, "--out", out)
    check_cli_rejects(status, stdout, stderr, "train")
    assert str(out) in stderr


@pytest.mark.parametrize("argv", [("compare", "--quick", "--no-progress", "--out"), ("demo", "--quick", "--no-progress",
                                                                                    "--out")])
@pytest.mark.parametrize("where", ["proc", "file", "under_file"])
def test_d4_compare_and_demo_out_are_checked_before_training(argv, where, a_file):
    out = {"proc": "/proc/equican_x", "file": a_file, "under_file": a_file / "sub"}[where]
    check_cli_rejects(*run_cli(*argv, out), argv[0])


@pytest.mark.parametrize("where", ["proc", "dir", "under_file"])
def test_d4_evaluate_json_is_checked_before_evaluating(run_dir, where, a_file, tmp_path):
    path = {"proc": "/proc/equican_x.json", "dir": tmp_path, "under_file": a_file / "e.json"}[where]
    check_cli_rejects(*run_cli("evaluate", run_dir / CHECKPOINT, "--json", path), "evaluate")


@pytest.mark.parametrize("where", ["txt_suffix", "proc", "under_file", "dir"])
def test_d4_show_groups_out_is_checked_before_the_law_checks(where, a_file):
    path = {"txt_suffix": a_file.parent / "x.txt", "proc": "/proc/equican_x.png", "under_file": a_file / "x.png",
            "dir": a_file.parent}[where]
    check_cli_rejects(*run_cli("show-groups", "--count", "1", "--out", path), "show-groups")


# ---------------------------------------------------------------------------------------------- D5
def degenerate_monotone():
    group = make_group("monotone", min_width=0.0)
    z = torch.zeros(1, 2, 5, 4)
    z[..., 0] = 40.0  # one segment takes the whole width: the others underflow to 0 in float32
    return group, group.from_unconstrained(z)


def test_d5_monotone_inverse_of_a_degenerate_field_raises_convergence_error():
    group, g = degenerate_monotone()
    with pytest.raises(ConvergenceError, match="expected every lattice node to have a preimage"):
        group.inverse(g)
    with pytest.raises(ConvergenceError):
        group.act_inverse(g, torch.rand(1, 1, 16, 16))


# ---------------------------------------------------------------------------------------------- D6
def test_d6_scale_beyond_the_representable_range_is_an_invalid_element():
    with pytest.raises(InvalidElementError, match="got 1 log-scale"):
        make_group("scale").act(torch.full((1, 1), -89.0), torch.rand(1, 1, 8, 8))
    out = make_group("scale").act(torch.full((1, 1), -80.0), torch.rand(1, 1, 8, 8))  # the documented edge
    assert torch.isfinite(out).all()


def test_d6_affine_overflow_is_a_non_finite_error():
    group = make_group("affine")
    with pytest.raises(NonFiniteError, match="expected finite values in the result"):
        group.from_unconstrained(torch.tensor([[0.0, 89, 0, 0, 0, 0]]))
    g = torch.tensor([[[1.0, 0, 3e38], [0, 1, 0]]])
    with pytest.raises(NonFiniteError):
        group.compose(g, g)


@pytest.mark.parametrize("value", [3e38, -3e38, "mixed"])
def test_d6_monotone_chart_is_finite_for_every_finite_logit(value):
    group = make_group("monotone")
    z = torch.full((1, *group.unconstrained_shape), 3e38)
    if value == "mixed":
        z[..., 0] = -3e38
    else:
        z.fill_(value)
    g = group.from_unconstrained(z)
    assert torch.isfinite(g).all()
    group.check(g)


def test_d6_direct_canonicalizer_with_huge_head_weights_gives_finite_results():
    # A log-scale far outside the valid range: the canonical input is finite (the element is applied unchecked
    # inside the canonicalizer, and an input whose canonical form would not be finite falls back to the identity,
    # reported in info["fallback"]); never NaN.
    group = make_group("scale")
    net = UpdateNet(1, group.unconstrained_shape, channels=(4,))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e3)
    x = torch.rand(2, 1, 8, 8)
    result = DirectCanonicalizer(group, net)(x)
    assert torch.isfinite(result.x).all() and torch.isfinite(result.h).all()
    assert result.x.shape == x.shape and result.info["fallback"].shape == (2,)


# ---------------------------------------------------------------------------------------------- D7
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_d7_idx_header_declaring_2_32_items_is_a_data_error(tmp_path, compress):
    suffix = ".gz" if compress else ""
    for name, tensor in (("train-images-idx3-ubyte", torch.zeros(2, 28, 28, dtype=torch.uint8)),
                         ("train-labels-idx1-ubyte", torch.zeros(2, dtype=torch.uint8))):
        path = tmp_path / f"{name}{suffix}"
        write_idx(path, tensor, compress=False)
        raw = bytearray(path.read_bytes())
        raw[4:8] = (2**32 - 1).to_bytes(4, "big")
        path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    with pytest.raises(DataError, match="train-"):
        load_mnist("train", root=tmp_path)
    check_cli_rejects(*run_cli("train", *TINY, "--data", tmp_path, "--out", tmp_path / "out"), "train")
    assert not (tmp_path / "out" / CHECKPOINT).exists()


# ---------------------------------------------------------------------------------------------- D8
def test_d8_monotone_handles_empty_batches():
    group = make_group("monotone")
    e = group.identity(0)
    assert group.inverse(e).shape == (0, *group.param_shape)
    assert group.act_inverse(e, torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)
    assert group.inverse_grid(e, 8, 8).shape == (0, 8, 8, 2)


def _kinds(group):
    shape = group.unconstrained_shape
    return {"identity": IdentityCanonicalizer(group),
            "direct": DirectCanonicalizer(group, UpdateNet(1, shape, channels=(4,))),
            "optimization": OptimizationCanonicalizer(group, EnergyNet(1, channels=(4,)), OptimizationConfig(steps=2))}


@pytest.mark.parametrize("kind", ["identity", "direct", "optimization"])
def test_d8_canonicalizers_over_monotone_handle_empty_batches(kind):
    canon = _kinds(make_group("monotone"))[kind].eval()
    result = canon(torch.rand(0, 1, 16, 16))
    assert result.x.shape == (0, 1, 16, 16) and result.g.shape == (0, *canon.group.param_shape)


def test_d8_deq_over_monotone_handles_empty_batches():
    group = make_group("monotone")
    canon = DEQCanonicalizer(group, UpdateNet(1, group.unconstrained_shape, channels=(4,))).eval()
    assert canon(torch.rand(0, 1, 16, 16)).x.shape == (0, 1, 16, 16)


@pytest.mark.parametrize("kind", ["identity", "direct"])
def test_d8_wrapped_timm_model_handles_empty_batches(kind):
    model = equican.create_model("vit_tiny_patch16_224", group="monotone", canonicalizer=kind, img_size=32,
                                 patch_size=8, depth=2, num_classes=3).eval()
    assert model(torch.rand(0, 3, 32, 32)).shape == (0, 3)


# ---------------------------------------------------------------------------------------------- D10
def test_d10_seed_beyond_63_bits_is_rejected_before_training(tmp_path):
    status, stdout, stderr = run_cli("train", *TINY, "--set", "seed=1180591620717411303424", "--out", tmp_path / "o")
    check_cli_rejects(status, stdout, stderr, "train")
    assert "seed" in stderr
    with pytest.raises(ConfigError):
        TrainConfig(seed=2**63)
    assert TrainConfig(seed=2**63 - 1).seed == 2**63 - 1


# ---------------------------------------------------------------------------------------------- D11
def test_d11_weights_of_another_architecture_are_a_data_error(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(DataError, match="got 0 matching") as info:
        equican.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10,
                             pretrained_file=str(path), canonicalizer="identity")
    check_typed(info.value)
    # Control: the architecture's own weights still load.
    own = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10).state_dict(), own)
    equican.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, pretrained_file=str(own),
                         canonicalizer="identity")


# ---------------------------------------------------------------------------------------------- D12
BREAKS = {
    "no_config": lambda c: c.pop("config"),
    "input_shape": lambda c: c.__setitem__("input_shape", [1, -5, 48]),
    "epoch": lambda c: c.__setitem__("epoch", "x"),
    "tensor_shape": lambda c: c["objective"].__setitem__(next(iter(c["objective"])), torch.zeros(3)),
    "optimizer": lambda c: c.__setitem__("optimizer", {"state": {}, "param_groups": []}),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_d12_checkpoint_with_missing_or_bad_fields_is_a_data_error(run_dir, tmp_path, broken):
    payload = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    payload["objective"] = dict(payload["objective"])
    BREAKS[broken](payload)
    path = tmp_path / CHECKPOINT
    torch.save(payload, path)
    if broken == "optimizer":  # only resuming reads the optimizer state
        status, stdout, stderr = run_cli("train", *TINY, "--out", tmp_path, "--resume", "--set", "optim.epochs=3")
        check_cli_rejects(status, stdout, stderr, "train")
        return
    check_cli_rejects(*run_cli("evaluate", path), "evaluate")
    with pytest.raises(DataError, match="expected") as info:
        load_checkpoint(path)
    check_typed(info.value)


# ---------------------------------------------------------------------------------------------- D13
@pytest.mark.parametrize("name", equican.list_groups())
def test_d13_bad_devices_are_device_errors(name):
    group = make_group(name)
    with pytest.raises(DeviceError, match="got 'bogus'"):
        group.identity(2, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            group.identity(2, device="cuda")
    meta = torch.zeros(1, *group.param_shape, device="meta")
    with pytest.raises(DeviceError, match="meta"):
        group.inverse(meta)
    with pytest.raises(DeviceError, match="meta"):
        group.act(group.identity(1), torch.zeros(1, 1, 8, 8, device="meta"))


# ---------------------------------------------------------------------------------------------- D14
def test_d14_canonicalizers_check_the_channels_their_network_reads():
    group = make_group("monotone")
    with pytest.raises(ShapeError, match=r"expected x of shape \(B, 1, H, W\)"):
        DEQCanonicalizer(group, UpdateNet(1, group.unconstrained_shape, channels=(4,)))(torch.rand(2, 3, 16, 16))
    with pytest.raises(ShapeError):
        OptimizationCanonicalizer(group, EnergyNet(1, channels=(4,)))(torch.rand(2, 3, 16, 16))


def test_d14_escnn_canonicalizer_checks_channels():
    pytest.importorskip("escnn")
    from equican.canon.equivariant import EquivariantCanonicalizer

    canon = EquivariantCanonicalizer(make_group("cyclic"), 1, channels=(2,))
    with pytest.raises(ShapeError, match=r"\(B, 1, H, W\)"):
        canon(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize("x, error", [(torch.rand(2, 3, 48, 48), ShapeError), (torch.rand(2, 1, 32, 32), ShapeError),
                                      (torch.rand(3, 32, 32), ShapeError),
                                      (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), DTypeError),
                                      (torch.rand(2, 3, 32, 32, dtype=torch.float64), DTypeError)],
                         ids=["48px", "1ch", "rank3", "uint8", "float64"])
def test_d14_wrapped_timm_model_checks_its_input(x, error):
    model = equican.create_model("vit_tiny_patch16_224", group="scale", canonicalizer="direct", img_size=32,
                                 patch_size=8, depth=2, num_classes=3).eval()
    with pytest.raises(error) as info:
        model(x)
    check_typed(info.value)
    with pytest.raises(error):
        model.forward_features(x)


# ---------------------------------------------------------------------------------------------- D15
@pytest.mark.parametrize("name, option", [("scale", "max_log_scale"), ("monotone", "strength"),
                                          ("rotation", "max_angle"), ("affine", "max_translation"),
                                          ("monotone", "temperature")])
def test_d15_bool_group_options_are_rejected(name, option):
    with pytest.raises(ConfigError, match="got True"):
        make_group(name, **{option: True})


@pytest.mark.parametrize("override", ["method.group=bogus", "method.group_options.cells=0"])
def test_d15_group_settings_of_a_group_less_method_are_validated(override, tmp_path):
    status, stdout, stderr = run_cli("train", *TINY, "--method", "plain", "--set", override, "--out", tmp_path / "o")
    check_cli_rejects(status, stdout, stderr, "train")


@pytest.mark.parametrize("override", ["optim.lr=5", "model.name=vit", "device=cuda"])
def test_d15_evaluate_rejects_overrides_outside_data_and_eval(run_dir, override):
    status, stdout, stderr = run_cli("evaluate", run_dir / CHECKPOINT, "--set", override)
    check_cli_rejects(status, stdout, stderr, "evaluate")
    assert override in stderr


def test_d15_demo_epochs_0_is_rejected(tmp_path):
    check_cli_rejects(*run_cli("demo", "--quick", "--epochs", "0", "--out", tmp_path / "d"), "demo")


def test_d15_duplicate_yaml_key_is_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    status, stdout, stderr = run_cli("train", "--config", path, "--out", tmp_path / "o")
    check_cli_rejects(status, stdout, stderr, "train")
    assert "'lr' twice" in stderr
    with pytest.raises(ConfigError, match="twice"):
        apply_overrides(TrainConfig(), ["model.options={a: 1, a: 2}"])


# ---------------------------------------------------------------------------------------------- D16
def test_d16_cyclic_element_check_does_not_depend_on_dtype():
    group = make_group("cyclic")
    g32 = torch.tensor([[-math.pi], [math.pi / 2]], dtype=torch.float32)
    out = group.act(g32.double(), torch.rand(2, 1, 8, 8, dtype=torch.float64))  # float32 elements cast to float64
    assert out.shape == (2, 1, 8, 8)
    with pytest.raises(InvalidElementError, match="not multiples"):
        group.act(torch.full((1, 1), 1e10), torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- D17
def test_d17_optimization_canonicalizer_misuse_is_typed():
    group = make_group("scale")
    canon = OptimizationCanonicalizer(group, EnergyNet(1, channels=(4,)))
    with torch.inference_mode(), pytest.raises(ConfigError, match="inference_mode"):
        canon(torch.rand(2, 1, 8, 8))
    ignores = OptimizationCanonicalizer(group, lambda y: torch.zeros(y.shape[0]))
    with pytest.raises(ConfigError, match="depends on the canonical input"):
        ignores(torch.rand(2, 1, 8, 8))


def test_d17_pretrained_true_offline_is_a_data_error():
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1, so that timm cannot download")
    with pytest.raises(DataError, match="downloadable"):
        equican.create_model("vit_tiny_patch16_224", pretrained=True, canonicalizer="identity")


def test_d17_checkpoint_api_misuse_is_typed(run_dir):
    with pytest.raises(DataError, match="got NoneType"):
        load_checkpoint(None)
    result = evaluate_checkpoint(run_dir / CHECKPOINT, overrides=["eval.limit=2"])
    assert result["samples"] == 2
    with pytest.raises(ConfigError, match="optim.lr=1"):
        evaluate_checkpoint(run_dir / CHECKPOINT, overrides=["optim.lr=1"])
    with pytest.raises(ConfigError, match="got int"):
        evaluate_checkpoint(run_dir / CHECKPOINT, overrides=5)


def test_d17_monotone_lattice_is_bounded():
    with pytest.raises(ConfigError, match="cells·refine <= 1024"):
        make_group("monotone", cells=10000)
    assert make_group("monotone", cells=128, refine=8).nodes == 1025  # the bound itself is allowed


# ---------------------------------------------------------------------------------------------- D18
@pytest.mark.parametrize("text", ["optim:\n  lr: [1, 2\n", "optim: {lr: 1\n", "a: b: c\n", "- x\n  y: 1\n"])
def test_d18_yaml_syntax_errors_are_one_line(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    status, stdout, stderr = run_cli("train", "--config", path)
    check_cli_rejects(status, stdout, stderr, "train")
    assert "line" in stderr


# ---------------------------------------------------------------------------------------------- temporaries
def test_stale_checkpoint_temporaries_of_dead_writers_are_removed_on_resume(run_dir):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = run_dir / f".{CHECKPOINT}.{int(dead.stdout)}.tmp"
    live = run_dir / f".{CHECKPOINT}.{os.getppid()}.tmp"  # control: a live process's file is left alone
    stale.write_bytes(b"torn")
    live.write_bytes(b"in progress")
    try:
        status, _, stderr = run_cli("train", *TINY, "--out", run_dir, "--resume")
        assert status == 0, stderr
        assert not stale.exists()
        assert live.exists()
    finally:
        live.unlink(missing_ok=True)
