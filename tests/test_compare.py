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
    assert "| augment[rotation] |" in capsys.readouterr().out  # the augment group defaults to the first of --groups
    assert (tmp_path / "compare.json").exists()


def test_cli_unknown_group_exits_2(tmp_path, capsys):
    assert main(["compare", "--quick", "--groups", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_kinds_and_merge_of_separate_processes(tmp_path):
    from equican.compare import merge

    base = _base(tmp_path)
    common = dict(groups=("scale",), eval_groups=("scale",), seeds=(0,), progress=False, figure_count=2)
    compare(base, baselines=("plain",), kinds=("dec",), out=tmp_path / "a", **common)
    compare(base, baselines=(), kinds=("direct",), out=tmp_path / "b", **common)
    payload = merge([tmp_path / "a", tmp_path / "b"], out=tmp_path / "m", command="equican compare --merge a b")
    assert set(payload["runs"]) == {"plain", "dec[scale]", "direct[scale]"}
    assert payload["kinds"] == ["dec", "direct"] and payload["command"].endswith("--merge a b")
    text = (tmp_path / "m" / "compare.md").read_text()
    # The canonicalizer table lists both kinds; only the DEQ reports convergence.
    assert "| dec[scale] |" in text and "| direct[scale] |" in text and "DEQ converged" in text
    dec, direct = payload["summary"]["dec[scale]"], payload["summary"]["direct[scale]"]
    assert "solver_converged" in dec and "solver_converged" not in direct
    assert 0 < dec["canon_ratio"][0] and 0 < direct["spread_ratio"][0]
    assert "accuracy[0.25-0.4]" in dec  # accuracy outside the training scales
    assert (tmp_path / "m" / "scales_dec_scale.png").stat().st_size > 0
    # Negative control: sources evaluated under different groups cannot be pooled.
    compare(base, baselines=("plain",), kinds=(), groups=(), eval_groups=("rotation",), seeds=(0,), progress=False,
            out=tmp_path / "c")
    with pytest.raises(ConfigError, match="eval_groups"):
        merge([tmp_path / "a", tmp_path / "c"], out=tmp_path / "m2")
