"""Per-method and per-group option tables: switching ``method.name`` or ``eval.invariance_group`` never hands one
method's or group's options to another (issue 14 item 3, issue 15); errors name the user's input."""

from __future__ import annotations

import pytest
import torch

from equican import list_groups
from equican.config import EvalConfig, MethodConfig, TrainConfig, apply_overrides, load_config
from equican.errors import ConfigError, DataError, UnknownNameError


def test_flat_method_options_belong_to_the_configured_method():
    config = MethodConfig(name="dec", options={"channels": [4]})
    assert dict(config.options) == {"channels": [4]}
    assert dict(config.tables) == {"dec": {"channels": [4]}}


def test_switching_method_drops_the_other_methods_options():
    # The packaged compare config holds the DEC's options; `--method plain` must not hand them to plain.
    base = load_config("compare")
    assert "channels" in base.method.options
    plain = apply_overrides(base, ["method.name=plain"])
    assert dict(plain.method.options) == {}
    # ... and they are kept for the DEC: switching back restores them.
    again = apply_overrides(plain, ["method.name=dec"])
    assert again.method.options == base.method.options


def test_per_method_tables_select_the_chosen_method():
    tables = {"dec": {"tol": 0.1}, "direct": {"channels": [8]}}
    assert dict(MethodConfig(name="direct", options=tables).options) == {"channels": [8]}
    assert dict(MethodConfig(name="dec", options=tables).options) == {"tol": 0.1}
    assert dict(MethodConfig(name="plain", options=tables).options) == {}


def test_flat_override_goes_to_the_method_configured_last():
    config = apply_overrides(load_config("compare"), ["method.options.tol=0.5", "method.name=direct"])
    assert dict(config.method.options) == {"tol": 0.5}  # the flat key binds to the final method
    assert config.method.tables["dec"]["tol"] == 0.01  # the DEC's table is untouched
    config = apply_overrides(load_config("compare"), ["method.options.dec.tol=0.5", "method.name=direct"])
    assert dict(config.method.options) == {} and config.method.tables["dec"]["tol"] == 0.5


def test_method_tables_round_trip_through_to_dict():
    config = apply_overrides(load_config("demo"), ["method.options.direct.channels=[4]"])
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and again.method.tables["direct"]["channels"] == [4]
    # Negative control: a changed option in another method's table is seen.
    tree = config.to_dict()
    tree["method"]["options"]["direct"]["channels"] = [8]
    assert TrainConfig.from_dict(tree) != config


def test_a_misspelt_method_table_is_refused_before_training(tmp_path):
    from equican.methods import check_method_tables

    config = apply_overrides(load_config("demo"), ["method.options.dex.tol=0.1"])
    with pytest.raises(UnknownNameError, match="did you mean 'dec'"):
        check_method_tables(config.method)
    check_method_tables(load_config("demo").method)  # the packaged tables all name methods


def test_eval_options_are_per_group():
    ev = EvalConfig(invariance_group="monotone", invariance_options={"cells": 8})
    assert dict(ev.invariance_options) == {"monotone": {"cells": 8}}
    assert ev.group_options("monotone") == {"cells": 8} and ev.group_options("rotation") == {}


def test_flat_eval_options_need_a_group():
    with pytest.raises(ConfigError, match="invariance_group"):
        EvalConfig(invariance_options={"cells": 8})


@pytest.mark.parametrize("name", list_groups())
def test_every_registered_group_can_be_the_invariance_group(name):
    """`eval.invariance_group=<any registered group>` builds and measures (the monotone options do not leak)."""
    from equican.metrics import invariance_error
    from equican.methods import invariance_group

    config = apply_overrides(load_config("demo"), [f"eval.invariance_group={name}"])
    group = invariance_group(config)
    assert group.name == name
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    constant = lambda batch: torch.zeros(batch.shape[0], 3)  # noqa: E731 - invariant to anything
    assert invariance_error(constant, (x,), group) == 0.0
    centre = lambda batch: batch[:, :, 7:9, 7:9].flatten(1)[:, :3] * 10  # noqa: E731 - not invariant
    assert invariance_error(centre, (x,), group) >= 0.0


def test_monotone_options_do_not_leak_into_rotation():
    # Negative control of the leak the tables prevent: the monotone options given to rotation fail.
    from equican import make_group
    from equican.methods import invariance_group

    config = load_config("demo")
    with pytest.raises(ConfigError, match="cells"):
        make_group("rotation", **config.eval.group_options("monotone"))
    assert invariance_group(apply_overrides(config, ["eval.invariance_group=rotation"])).name == "rotation"


def test_default_eval_group_is_the_methods():
    from equican.methods import invariance_group

    assert invariance_group(TrainConfig()) is None  # plain uses no group: no invariance error
    dec = apply_overrides(TrainConfig(), ["method.name=augment", "method.group=rotation"])
    assert invariance_group(dec).name == "rotation"


def test_errors_name_the_users_input(tmp_path):
    with pytest.raises(ConfigError) as info:
        apply_overrides(TrainConfig(), ["optim.lr=0.1", "eval.limit=0"])
    assert str(info.value).startswith("override 'eval.limit=0': eval: expected limit")
    with pytest.raises(ConfigError, match="^override 'optim.lrr=1': unknown key 'optim.lrr'"):
        apply_overrides(TrainConfig(), ["optim.lrr=1"])
    bad = tmp_path / "run.toml"
    bad.write_text("[optim]\nepochs = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^config file '.*run.toml': optim: expected epochs to be an int >= 1, got 0"):
        load_config(bad)
    with pytest.raises(DataError, match="^config file 'missing.yaml': does not exist"):
        load_config("missing.yaml")
    for message in (str(info.value),):
        assert "apply_overrides" not in message and "load_config" not in message
