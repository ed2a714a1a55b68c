"""Mixed-precision training (``TrainConfig.amp``, ``equican train --amp``): the forward pass runs under autocast in
the requested dtype, weights and optimizer state stay float32, a bfloat16 run learns like a float32 one, and settings
the device cannot honour are refused before anything runs.

Tolerance: a bfloat16 forward rounds activations to 8 significant bits (relative error 2⁻⁸ ≈ 0.4% per operation), so
two one-epoch runs of the same seed end with losses within a few percent of each other; 10% leaves room for the
rounding to change a few steps' gradients, and a run that did not learn at all (loss at ln 10 ≈ 2.30 for ten
classes) would still fail the separate check that the loss went down.
"""

from __future__ import annotations

import json

import pytest
import torch

from equican._runtime import amp_dtype, grad_scaler
from equican.cli import main as cli_main
from equican.config import TrainConfig, apply_overrides
from equican.errors import ConfigError
from equican.train import build, load_split, train, train_step

pytestmark = pytest.mark.filterwarnings("ignore::equican.errors.ConvergenceWarning")

TINY = ("data.train_limit=32", "data.test_limit=8", "data.options.digits=1", "data.options.cell=24",
        "data.options.canvas=24", "data.options.scale_range=[0.5, 1.0]", "model.options.channels=[4, 8]",
        "optim.batch_size=8", "eval.limit=4", "eval.batch_size=4", "eval.rescalings=2", "progress=false",
        "device=cpu", "method.name=dec", "method.options.channels=[4, 8]")


def _objective_and_batch(*overrides):
    config = apply_overrides(TrainConfig(), [*TINY, *overrides])
    data = load_split(config.data, "train")
    torch.manual_seed(0)
    objective = build(config, data).train()
    index = torch.arange(8)
    return config, objective, data.x[index], data.y[index], index


def _conv_output_dtypes(objective, amp, scaler=None):
    """The dtypes of the classifier's convolution outputs during one train_step, and the step's statistics."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
             for m in objective.modules() if isinstance(m, torch.nn.Conv2d)]
    _, _, x, y, index = _objective_and_batch()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    try:
        stats = train_step(objective, optimizer, x, y, index, 0, grad_clip=1.0, amp=amp, scaler=scaler)
    finally:
        for h in hooks:
            h.remove()
    return set(seen), stats


def test_train_step_runs_the_forward_in_bfloat16_and_keeps_float32_weights():
    _, objective, *_ = _objective_and_batch()
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    dtypes, stats = _conv_output_dtypes(objective, torch.bfloat16)
    assert torch.bfloat16 in dtypes
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert all(p.dtype == torch.float32 for p in objective.parameters())
    assert any(not torch.equal(before[k], v) for k, v in objective.state_dict().items())  # it stepped


def test_negative_control_without_amp_nothing_runs_in_bfloat16():
    _, objective, *_ = _objective_and_batch()
    dtypes, _ = _conv_output_dtypes(objective, None)
    assert dtypes == {torch.float32}


def test_the_scaler_branch_steps_and_clips_unscaled_gradients():
    # GradScaler is for float16 on CUDA; on the CPU it runs the same code path (scale, unscale, step, update).
    _, objective, *_ = _objective_and_batch()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    _, stats = _conv_output_dtypes(objective, torch.bfloat16, scaler)
    assert any(not torch.equal(before[k], v) for k, v in objective.state_dict().items())
    assert scaler.get_scale() in (2.0 ** 10, 2.0 ** 9)  # updated after the step (halved only on an overflow)


def test_amp_modes_resolve_per_device():
    cpu = torch.device("cpu")
    assert amp_dtype("off", cpu) is None
    assert amp_dtype("auto", cpu) == torch.bfloat16 and amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        amp_dtype("fp16", cpu)
    assert grad_scaler(torch.bfloat16, cpu) is None and grad_scaler(None, cpu) is None
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert amp_dtype("fp16", cuda) == torch.float16
        assert isinstance(grad_scaler(torch.float16, cuda), torch.amp.GradScaler)


def test_config_rejects_an_unknown_amp_mode_and_reads_yaml_booleans():
    with pytest.raises(ConfigError, match="amp.*'fp32'"):
        apply_overrides(TrainConfig(), ["amp=fp32"])
    assert apply_overrides(TrainConfig(), ["amp=off"]).amp == "off"  # YAML 1.1: a bare off is False
    assert apply_overrides(TrainConfig(), ["amp=true"]).amp == "auto"


def test_a_bfloat16_run_learns_like_a_float32_run(tmp_path):
    runs = {}
    for amp in ("off", "bf16"):
        config = apply_overrides(TrainConfig(), [*TINY, "optim.epochs=2", f"amp={amp}",
                                                 f"out={json.dumps(str(tmp_path / amp))}"])
        runs[amp] = train(config)
    full, low = ([r["loss"] for r in runs[a]["history"]] for a in ("off", "bf16"))
    assert low[-1] < low[0]  # it learns
    assert abs(low[-1] - full[-1]) <= 0.1 * full[-1]
    assert runs["bf16"]["config"]["amp"] == "bf16" and runs["bf16"]["autocast"] == "bfloat16"
    assert runs["off"]["autocast"] is None
    assert runs["bf16"]["history"] != runs["off"]["history"]  # the precision did change the computation


def test_cli_amp_flag(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli_main(["train", *[a for o in TINY for a in ("--set", o)], "--set", "optim.epochs=1",
                       "--amp", "--out", str(out)])
    assert status == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["amp"] == "auto"
    capsys.readouterr()
    assert cli_main(["train", "--amp", "fp8", "--out", str(tmp_path / "no")]) == 2  # a mode argparse does not know
    assert "fp8" in capsys.readouterr().err and not (tmp_path / "no").exists()
