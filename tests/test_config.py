"""Training configuration: defaults, round trips, TOML/YAML files, validation and command-line overrides."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import pytest

from equican.config import (DATASETS, SCHEDULES, DataConfig, EvalConfig, MethodConfig, ModelConfig, OptimConfig,
                            TrainConfig, apply_overrides, from_options, load_config, packaged_configs)
from equican.errors import ConfigError, DataError

SECTIONS = ("data", "model", "method", "optim", "eval")

# The same run written in both file formats: every section, nested options, lists, a float in exponent notation.
TOML_TEXT = """\
seed = 3
out = "runs/x"
device = "cpu"
progress = false

[data]
dataset = "local_scale"
train_limit = 32

[data.options]
digits = 2
scale_range = [0.5, 1.5]

[model]
name = "cnn"

[model.options]
channels = [4, 8]

[method]
name = "dec"
group = "monotone"

[method.group_options]
cells = 4

[method.options]
prior_weight = 0.1

[optim]
lr = 3e-4
betas = [0.8, 0.99]
schedule = "linear"

[eval]
limit = 4
invariance_group = "monotone"
invariance_options = { cells = 4, strength = 0.5 }
"""

YAML_TEXT = """\
seed: 3
out: runs/x
device: cpu
progress: false
data:
  dataset: local_scale
  train_limit: 32
  options: {digits: 2, scale_range: [0.5, 1.5]}
model:
  name: cnn
  options:
    channels: [4, 8]
method:
  name: dec
  group: monotone
  group_options: {cells: 4}
  options: {prior_weight: 0.1}
optim:
  lr: 3.0e-4
  betas: [0.8, 0.99]
  schedule: linear
eval:
  limit: 4
  invariance_group: monotone
  invariance_options: {cells: 4, strength: 0.5}
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- defaults
def test_defaults_are_valid_and_documented():
    config = TrainConfig()
    assert config.data == DataConfig() and config.data.dataset in DATASETS
    assert config.optim == OptimConfig() and config.optim.schedule in SCHEDULES
    assert (config.method.name, config.model.name, config.device, config.seed) == ("plain", "cnn", "auto", 0)
    # The core names no group: by default the invariance error uses the method's group (none for plain).
    assert config.eval.invariance_group is None and dict(config.eval.invariance_options) == {}
    assert set(config.to_dict()) >= set(SECTIONS)


def test_configs_are_frozen_and_their_options_read_only():
    config = apply_overrides(TrainConfig(), ["data.options.digits=2"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.lr = 1.0
    assert isinstance(config.data.options, MappingProxyType)
    with pytest.raises(TypeError):
        config.data.options["digits"] = 3


def test_options_are_copied_not_aliased():
    options = {"digits": 2}
    data = DataConfig(options=options)
    options["digits"] = 5
    assert data.options["digits"] == 2


# ---------------------------------------------------------------------------------------------- round trips
def test_to_dict_from_dict_round_trip_through_json(tmp_path):
    config = load_config(write(tmp_path, "run.toml", TOML_TEXT))
    plain = config.to_dict()
    text = json.dumps(plain)  # plain dicts, lists and scalars only
    again = TrainConfig.from_dict(json.loads(text))
    assert again == config
    assert again.to_dict() == plain
    assert again.optim.betas == (0.8, 0.99)  # lists become the declared tuple again


def test_default_round_trip():
    config = TrainConfig()
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_round_trip_detects_a_change():
    """Negative control: the equality the round trip relies on does see a changed nested option."""
    config = load_config("demo")
    tree = config.to_dict()
    tree["eval"]["invariance_options"]["monotone"]["strength"] = 0.5
    assert TrainConfig.from_dict(tree) != config


def test_from_dict_keeps_defaults_for_missing_fields():
    config = TrainConfig.from_dict({"optim": {"lr": 0.01}})
    assert config.optim.lr == 0.01
    assert config.optim.epochs == OptimConfig().epochs
    assert config.data == DataConfig()


def test_toml_and_yaml_load_to_the_same_config(tmp_path):
    from_toml = load_config(write(tmp_path, "run.toml", TOML_TEXT))
    from_yaml = load_config(write(tmp_path, "run.yaml", YAML_TEXT))
    from_yml = load_config(write(tmp_path, "run.yml", YAML_TEXT))
    assert from_toml == from_yaml == from_yml
    assert from_toml.optim.lr == pytest.approx(3e-4)
    assert from_toml.method.group_options["cells"] == 4
    assert from_toml.data.options["scale_range"] == [0.5, 1.5]
    assert from_toml.progress is False and from_toml.seed == 3
    # Negative control: a one-value difference between the files is seen.
    other = load_config(write(tmp_path, "other.yaml", YAML_TEXT.replace("limit: 4", "limit: 5")))
    assert other != from_toml


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "empty.yaml", "")) == TrainConfig()


def test_packaged_demo_config_loads():
    assert "demo" in packaged_configs()
    config = load_config("demo")
    assert config.data.dataset == "local_scale"
    assert config.data.options["digits"] == 1
    assert config.model.name == "cnn"
    assert config.optim.lr == pytest.approx(2e-3)


def test_unknown_packaged_name_lists_the_packaged_ones():
    with pytest.raises(ConfigError, match=r"'demoo'.*packaged configurations: \[.*'demo'"):
        load_config("demoo")


# ---------------------------------------------------------------------------------------------- unknown keys
def test_unknown_section_in_a_file_is_named_with_the_accepted_ones(tmp_path):
    path = write(tmp_path, "run.toml", "[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="'optimizer'") as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for section in SECTIONS:
        assert f"'{section}'" in message


def test_unknown_field_in_a_file_is_named_with_the_accepted_ones(tmp_path):
    path = write(tmp_path, "run.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match="section 'optim': unknown field 'lrr'") as info:
        load_config(path)
    for name in ("'lr'", "'epochs'", "'batch_size'", "'schedule'"):
        assert name in str(info.value)


def test_a_section_that_is_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="section 'optim' to be a mapping"):
        load_config(write(tmp_path, "run.toml", "optim = 3\n"))


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(write(tmp_path, "run.yaml", "- 1\n- 2\n"))


# ---------------------------------------------------------------------------------------------- invalid values
@pytest.mark.parametrize("tree, field", [
    ({"optim": {"lr": -1e-3}}, "lr"),
    ({"optim": {"lr": 0}}, "lr"),
    ({"optim": {"lr": float("inf")}}, "lr"),
    ({"optim": {"epochs": 0}}, "epochs"),
    ({"optim": {"epochs": 1.5}}, "epochs"),
    ({"optim": {"batch_size": 0}}, "batch_size"),
    ({"optim": {"schedule": "step"}}, "schedule"),
    ({"optim": {"betas": [0.9]}}, "betas"),
    ({"optim": {"betas": [0.9, 1.0]}}, "betas"),
    ({"optim": {"warmup_steps": -1}}, "warmup_steps"),
    ({"optim": {"grad_clip": 0}}, "grad_clip"),
    ({"data": {"dataset": "cifar"}}, "dataset"),
    ({"data": {"train_limit": 0}}, "train_limit"),
    ({"data": {"options": [1, 2]}}, "options"),
    ({"model": {"name": ""}}, "name"),
    ({"method": {"group": 3}}, "group"),
    ({"eval": {"enabled": "yes"}}, "enabled"),
    ({"eval": {"rescalings": 0}}, "rescalings"),
    ({"device": "tpu"}, "device"),
    ({"progress": 1}, "progress"),
    ({"progress": "true"}, "progress"),
    ({"seed": -1}, "seed"),
    ({"workers": -1}, "workers"),
    ({"threads": 0}, "threads"),
])
def test_invalid_values_raise_config_error_naming_the_field(tree, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict(tree)


def test_valid_boundary_values_are_accepted():
    """Negative control for the table above: the nearest valid values pass."""
    config = TrainConfig.from_dict({"optim": {"lr": 1e-9, "epochs": 1, "batch_size": 1, "schedule": "constant",
                                              "betas": [0.0, 0.999], "warmup_steps": 0, "grad_clip": None,
                                              "weight_decay": 0},
                                    "data": {"dataset": "mnist", "train_limit": 1},
                                    "device": "cpu", "progress": False, "seed": 0, "workers": 0, "threads": 1})
    assert config.optim.grad_clip is None and config.optim.betas == (0.0, 0.999)


def test_invalid_value_in_a_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="lr"):
        load_config(write(tmp_path, "run.toml", "[optim]\nlr = -0.1\n"))


def test_sections_must_have_their_types():
    with pytest.raises(ConfigError, match="optim to be a OptimConfig"):
        TrainConfig(optim={"lr": 0.1})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- files
def test_missing_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(DataError, match="nope.toml") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_toml_is_a_data_error_naming_the_file(tmp_path):
    path = write(tmp_path, "broken.toml", "[optim\nlr = \n")
    with pytest.raises(DataError, match="not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_is_a_data_error_naming_the_file(tmp_path):
    path = write(tmp_path, "broken.yaml", "optim: [1, 2\n  lr: :\n")
    with pytest.raises(DataError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_undecodable_file_is_a_data_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="binary.yaml"):
        load_config(path)


@pytest.mark.parametrize("name", ["run.json", "run.cfg", "run"])
def test_unknown_extension_is_a_config_error(tmp_path, name):
    path = write(tmp_path, name, "{}")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        load_config(path)


def test_extension_is_case_insensitive(tmp_path):
    assert load_config(write(tmp_path, "RUN.TOML", "seed = 4\n")).seed == 4


# ---------------------------------------------------------------------------------------------- overrides
def test_override_sets_a_field_and_parses_exponents_as_floats():
    config = apply_overrides(TrainConfig(), ["optim.lr=3e-4", "optim.epochs=2", "seed=7"])
    assert isinstance(config.optim.lr, float) and config.optim.lr == pytest.approx(3e-4)
    assert config.optim.epochs == 2 and config.seed == 7


def test_override_options_keys_may_be_new_and_are_merged():
    base = load_config("demo")
    config = apply_overrides(base, ["data.options.digits=2", "data.options.cell=24", "method.options.foo=1"])
    assert config.data.options["digits"] == 2 and config.data.options["cell"] == 24
    assert config.data.options["canvas"] == base.data.options["canvas"]  # merged, not replaced
    assert config.method.options["foo"] == 1
    assert base.data.options["digits"] == 1  # the input config is untouched


def test_override_nested_option_mappings_may_be_new():
    config = apply_overrides(TrainConfig(), ["data.options.group_args.strength=0.5"])
    assert dict(config.data.options) == {"group_args": {"strength": 0.5}}


def test_override_list_and_string_values():
    config = apply_overrides(TrainConfig(), ["model.options.channels=[16, 32]", "optim.betas=[0.5, 0.6]",
                                             "method.name=dec", "data.root=/tmp/mnist", "out=runs/a"])
    assert config.model.options["channels"] == [16, 32]
    assert config.optim.betas == (0.5, 0.6)
    assert config.method.name == "dec" and config.data.root == "/tmp/mnist" and config.out == "runs/a"


@pytest.mark.parametrize("override, field, expected", [
    ('out="2024"', "out", "2024"),
    ("out='1e3'", "out", "1e3"),
    ('data.root="42"', "root", "42"),
])
def test_quoted_override_values_stay_strings(override, field, expected):
    """A quoted value is a string (the CLI relies on it: it passes --out DIR as a JSON string)."""
    config = apply_overrides(TrainConfig(), [override])
    section = config.data if field == "root" else config
    assert getattr(section, field) == expected


def test_unquoted_exponent_still_becomes_a_number():
    """Negative control for the test above: without quotes, YAML 1.1's string '3e-4' is read as a number."""
    config = apply_overrides(TrainConfig(), ["model.options.rate=3e-4"])
    assert config.model.options["rate"] == pytest.approx(3e-4)


def test_override_empty_value_is_none():
    config = apply_overrides(TrainConfig(), ["optim.grad_clip="])
    assert config.optim.grad_clip is None


def test_later_overrides_win():
    config = apply_overrides(TrainConfig(), ["optim.lr=0.1", "optim.lr=0.2"])
    assert config.optim.lr == pytest.approx(0.2)


@pytest.mark.parametrize("override, key", [
    ("optim.lrr=1", "optim.lrr"),
    ("optimizer.lr=1", "optimizer"),
    ("bogus=1", "bogus"),
    ("data.opts.digits=2", "data.opts"),
])
def test_override_of_unknown_section_or_field_lists_the_accepted(override, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'") as info:
        apply_overrides(TrainConfig(), [override])
    assert "expected one of" in str(info.value)


def test_unknown_field_override_lists_the_section_fields():
    with pytest.raises(ConfigError) as info:
        apply_overrides(TrainConfig(), ["optim.lrr=1"])
    assert "'lr'" in str(info.value) and "'epochs'" in str(info.value)


@pytest.mark.parametrize("override", ["optim.lr", "=3", "optim..lr=1", ".lr=1", "optim.lr.=1", "", "optim.lr:1"])
def test_malformed_override_strings(override):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(TrainConfig(), [override])


def test_unparsable_override_value():
    with pytest.raises(ConfigError, match="cannot parse"):
        apply_overrides(TrainConfig(), ["model.options.channels=[1, 2"])


@pytest.mark.parametrize("override", ["optim.lr.x=1", "seed.x=1"])
def test_override_cannot_descend_into_a_scalar(override):
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(TrainConfig(), [override])


@pytest.mark.parametrize("override, field", [("optim.lr=-1", "lr"), ("optim.lr=abc", "lr"),
                                             ("optim.epochs=0", "epochs"), ("data.dataset=cifar", "dataset"),
                                             ("device=tpu", "device"), ("progress=1", "progress")])
def test_override_values_are_validated(override, field):
    with pytest.raises(ConfigError, match=field):
        apply_overrides(TrainConfig(), [override])


# ---------------------------------------------------------------------------------------------- from_options
@dataclasses.dataclass(frozen=True)
class _Opts:
    size: tuple[int, ...] = (1,)
    rate: float = 0.5


def test_from_options_makes_tuples_and_rejects_unknown_options():
    opts = from_options(_Opts, {"size": [2, 3]}, where="thing")
    assert opts == _Opts(size=(2, 3))
    with pytest.raises(ConfigError, match=r"thing: unknown option 'sise'; expected one of \['size', 'rate'\]"):
        from_options(_Opts, {"sise": [2]}, where="thing")


def test_section_classes_construct_directly():
    assert MethodConfig(name="dec", options={"prior_weight": 0.1}).options["prior_weight"] == 0.1
    assert ModelConfig(name="vit").name == "vit"
    assert EvalConfig(limit=3).limit == 3



def test_documented_example_configs_load():
    """The config files the docs point users to stay valid as the code changes."""
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "equican" / "configs").glob("*.y*ml"))
    assert examples, "equican/configs has no YAML config"
    for path in examples:
        config = load_config(path)
        assert config.method.name == "dec" and config.data.options["digits"] == 2
        # ... and the packaged name reads the same file (it ships in the wheel, see pyproject's package-data)
        assert path.stem in packaged_configs() and load_config(path.stem) == config
