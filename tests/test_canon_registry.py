"""The canonicalizer-kind registry: built-in kinds by name, options checked, hints on a miss, user kinds that work
everywhere a kind is named (the latent wrapper, the training methods, ``equican train``) and installed plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest
import torch

from equican import make_group
from equican.canon import (Canonicalizer, DEQCanonicalizer, DirectCanonicalizer, IdentityCanonicalizer,
                           OptimizationCanonicalizer, canonicalizer_kind, list_canonicalizers, make_canonicalizer,
                           register_canonicalizer)
from equican.canon import registry
from equican.config import MethodConfig, TrainConfig, apply_overrides
from equican.errors import ConfigError, EquicanWarning, RegistrationError, UnknownNameError
from equican.methods import build_objective, list_methods
from equican.models import build_model

BUILT = {"identity": IdentityCanonicalizer, "direct": DirectCanonicalizer, "dec": DEQCanonicalizer,
         "optimization": OptimizationCanonicalizer}


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test: user kinds registered here do not leak into other tests."""
    list_canonicalizers()  # the built-in kinds are in
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def test_the_built_in_kinds_are_registered_with_their_alias():
    assert set(BUILT) | {"escnn"} <= set(list_canonicalizers())
    assert canonicalizer_kind("deq") is canonicalizer_kind("dec")
    assert canonicalizer_kind("escnn").exact and not canonicalizer_kind("dec").exact
    assert "deq" not in list_canonicalizers()  # aliases find a kind but are not listed as kinds


@pytest.mark.parametrize("kind", sorted(BUILT))
def test_each_built_in_kind_builds_its_class_and_canonicalizes(kind):
    group = make_group("rotation")
    canon = make_canonicalizer(kind, group, 2, None if kind == "identity" else {"channels": (4,)})
    assert type(canon) is BUILT[kind] and canon.group is group
    x = torch.rand(3, 2, 12, 12)
    result = canon.eval()(x)
    assert result.x.shape == x.shape and result.g.shape == (3, 1)


def test_options_reach_the_built_canonicalizer():
    canon = make_canonicalizer("dec", make_group("rotation"), 48,
                               {"channels": (4,), "train_iter": 3, "eval_iter": 7, "resolution": 16})
    assert canon.config.train.max_iter == 3 and canon.config.eval.max_iter == 7 and canon.resolution == 16
    assert canon.reduce is not None and canon.reduce.out_channels == registry.importlib.import_module(
        "equican.canon.kinds").REDUCE_CHANNELS  # 48 channels > 32: reduced by default
    assert make_canonicalizer("dec", make_group("rotation"), 48, {"channels": (4,), "reduce": None}).reduce is None


def test_unknown_kinds_and_options_are_named_with_the_closest_match():
    group = make_group("rotation")
    with pytest.raises(UnknownNameError, match=r"unknown canonicalizer kind 'drect': .*; did you mean 'direct'\?"):
        make_canonicalizer("drect", group, 1)
    with pytest.raises(UnknownNameError) as info:  # negative control: nothing close, no hint
        make_canonicalizer("zzzzzz", group, 1)
    assert "did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match=r"canonicalizer 'direct': unknown option 'chanels'; expected one of "
                                          r"\['channels'"):
        make_canonicalizer("direct", group, 1, {"chanels": (4,)})
    with pytest.raises(ConfigError, match=r"canonicalizer 'dec': expected in_channels"):
        make_canonicalizer("dec", group, None)
    with pytest.raises(ConfigError, match=r"canonicalizer 'dec': expected group to be an equican.Group"):
        make_canonicalizer("dec", "rotation", 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"canonicalizer 'optimization': expected option resolution to be unset"):
        make_canonicalizer("optimization", group, 1, {"resolution": 8})
    assert isinstance(make_canonicalizer("identity", group), IdentityCanonicalizer)  # reads nothing: no channels


@dataclass(frozen=True)
class ShiftOptions:
    angle: float = 0.5


class FixedAngle(Canonicalizer):
    """Always the same rotation: a user kind as small as it gets, with one parameter so that training has work."""

    def __init__(self, group, angle: float) -> None:
        super().__init__(group)
        self.angle = torch.nn.Parameter(torch.tensor([angle]))

    def solve(self, x):
        return self.angle.expand(x.shape[0], 1).to(x.dtype), {}


def _build_fixed(group, in_channels, opts):
    return FixedAngle(group, opts.angle)


def test_a_user_kind_works_by_name_everywhere(scratch_registry, tmp_path):
    register_canonicalizer("fixed_angle", options=ShiftOptions)(_build_fixed)
    assert "fixed_angle" in list_canonicalizers() and "fixed_angle" in list_methods()
    group = make_group("rotation")
    canon = make_canonicalizer("fixed_angle", group, 1, {"angle": 0.25})
    assert isinstance(canon, FixedAngle) and float(canon.angle.detach()) == 0.25

    # as a training method, its options beside the canonicalization options
    backbone = build_model("cnn", in_channels=1, num_classes=10, image_size=16, options={"channels": [4]})
    objective = build_objective(MethodConfig(name="fixed_angle", group="rotation",
                                             options={"angle": 0.1, "canon_weight": 0.0}), backbone, in_channels=1)
    assert isinstance(objective.model.canonicalizer, FixedAngle)

    # and in a whole training run, as `equican train --method fixed_angle` builds it
    from equican.train import train

    config = apply_overrides(TrainConfig(), [
        "data.options.digits=1", "data.options.cell=24", "data.options.canvas=24", "data.train_limit=16",
        "data.test_limit=8", "model.options.channels=[4]", "optim.epochs=1", "optim.batch_size=8", "eval.limit=4",
        "eval.batch_size=4", "eval.rescalings=2", "progress=false", "device=cpu", "method.name=fixed_angle",
        "method.group=rotation", 'method.options={"angle": 0.3}', f"out={json.dumps(str(tmp_path))}"])
    result = train(config)
    assert 0.0 <= result["eval"]["accuracy"] <= 1.0


def test_registering_twice(scratch_registry):
    register_canonicalizer("fixed_angle", options=ShiftOptions)(_build_fixed)
    with pytest.warns(EquicanWarning, match="re-registered"):  # the same builder again, as a re-run notebook cell
        register_canonicalizer("fixed_angle", options=ShiftOptions)(_build_fixed)
    with pytest.raises(RegistrationError, match="the name 'fixed_angle' is taken"):
        register_canonicalizer("fixed_angle")(lambda group, channels, opts: IdentityCanonicalizer(group))
    with pytest.raises(RegistrationError, match="the name 'deq' is taken"):  # aliases are names too
        register_canonicalizer("deq")(lambda group, channels, opts: IdentityCanonicalizer(group))
    with pytest.raises(RegistrationError, match="expected options to be a dataclass"):
        register_canonicalizer("other", options=dict)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_canonicalizer("other_fixed", options=ShiftOptions)(_build_fixed)  # a new name: no warning


_PLUGIN = '''
from dataclasses import dataclass
from equican.canon import IdentityCanonicalizer, register_canonicalizer

@register_canonicalizer("plugin_identity")
def build(group, in_channels, opts):
    return IdentityCanonicalizer(group)
'''


def test_an_installed_plugin_registers_its_kind(tmp_path):
    (tmp_path / "canon_plugin.py").write_text(_PLUGIN, encoding="utf-8")
    info = tmp_path / "canon_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: canon-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nmine = canon_plugin\n",
                                           encoding="utf-8")
    code = ("from equican.canon import list_canonicalizers\nfrom equican.methods import list_methods\n"
            "print(' '.join(list_canonicalizers()), '|', ' '.join(list_methods()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    kinds, methods = proc.stdout.split("|")
    assert "plugin_identity" in kinds.split() and "plugin_identity" in methods.split() and "dec" in kinds.split()
    # negative control: without the dist-info the kind is unknown
    (info / "entry_points.txt").unlink()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "plugin_identity" not in proc.stdout, proc.stderr
