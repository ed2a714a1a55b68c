"""`equican compare`: the plan, the quick run's tables, data and figures, and bad input before training."""

from __future__ import annotations

import csv
import json

import pytest

from equican.cli import main
from equican.compare import QUICK, Run, compare, page, plan, tables
from equican.config import apply_overrides, load_config
from equican.errors import ConfigError, UnknownNameError


def _base(tmp_path):
    return apply_overrides(load_config("compare"), [*QUICK, "data.options.cell=24", "data.options.canvas=48",
                                                   "model.options.channels=[4, 8]", "method.options.channels=[4, 8]"])


def test_plan_names_and_overrides():
    runs = plan(("monotone", "rotation"), ("plain", "augment"), augment_group="scale")
    assert [r.name for r in runs] == ["plain", "augment[scale]", "dec[monotone]", "dec[rotation]"]
    assert "method.group=rotation" in runs[-1].overrides and "method.options={}" in runs[0].overrides
    assert isinstance(runs[0], Run)


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"groups": ("monotne",)}, UnknownNameError, "monotone"),
    ({"baselines": ("plane",)}, ConfigError, "unknown baseline 'plane'"),
    ({"groups": (), "baselines": ()}, ConfigError, "at least one"),
])
def test_bad_input_fails_before_training(tmp_path, kwargs, error, text):
    with pytest.raises(error, match=text):
        compare(_base(tmp_path), out=tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quick_comparison_writes_tables_data_and_figures(tmp_path):
    out = tmp_path / "out"
    payload = compare(_base(tmp_path), groups=("monotone", "scale"), baselines=("plain",),
                      eval_groups=("monotone", "rotation"), seeds=(0, 1), out=out, progress=False, figure_count=3)
    assert list(payload["runs"]) == ["plain", "dec[monotone]", "dec[scale]"]
    for rows in payload["runs"].values():
        assert [r["seed"] for r in rows] == [0, 1]
        for r in rows:
            assert 0 <= r["accuracy"] <= 1 and 0 <= r["accuracy_clean"] <= 1 and r["local_scale_error"] >= 0
            assert {"invariance[monotone]", "invariance[rotation]"} <= r.keys()
    # The summary is the mean over seeds of the per-run numbers.
    rows = payload["runs"]["dec[scale]"]
    mean = payload["summary"]["dec[scale]"]["invariance[rotation]"][0]
    assert mean == pytest.approx((rows[0]["invariance[rotation]"] + rows[1]["invariance[rotation]"]) / 2)
    # Each group's sampler really differs: a rotation moves predictions more than a mild monotone warp here.
    assert rows[0]["invariance[rotation]"] != rows[0]["invariance[monotone]"]
    text = (out / "compare.md").read_text()
    payload = json.loads((out / "compare.json").read_text())
    assert text == page(payload) and tables(payload) in text
    assert payload["machine"]["cpus"] >= 1 and payload["wall_seconds"] > 0 and payload["command"] is None
    assert "| dec[scale] |" in text and "trained for \\ evaluated under" in text
    with open(out / "compare.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6  # 3 runs x 2 seeds
    assert (out / "compare.png").stat().st_size > 0 and (out / "canonical_forms.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_quick(tmp_path, capsys):
    code = main(["compare", "--quick", "--no-progress", "--groups", "rotation", "--baselines", "augment",
                 "--set", "model.options.channels=[4, 8]", "--set", "method.options.channels=[4, 8]",
                 "--out", str(tmp_path)])
    assert code == 0
    assert "| augment[monotone] |" in capsys.readouterr().out
    assert (tmp_path / "compare.json").exists()


def test_cli_unknown_group_exits_2(tmp_path, capsys):
    assert main(["compare", "--quick", "--groups", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
