"""Saved models under failure and from hostile files (issue 22, items 1 and 4-7).

* ``save_pretrained`` replaces a model directory as a whole: a failed weights write, kill -9 at a random instant (a
  real loop of forked writers), a crash between the two renames of the fallback, or a save racing a reader leaves
  the old model or the new one, never the new config with the old weights, and no temporaries once the next save ran.
  Each has a negative control: the writer this replaced (config first, then weights, each file atomic on its own)
  tears under the same failure, and so does a reader that opens the two files by path.
* ``save_pretrained`` into a file, under a file, over a ``config.json`` directory or a directory holding other files:
  ConfigError, and nothing written.
* ``from_pretrained`` of a config with fields of the wrong type (``group_options``, ``timm.kwargs``), sizes beyond
  the bounds (``channels``, ``in_channels``, a cyclic ``n``), or timm names and keywords that would read files or the
  network: typed errors naming the file and the field, before anything is allocated or timm is called.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

import equican
from equican import _atomic
from equican import pretrained as P
from equican import validation as V
from equican.canon import Canonicalizer, make_canonicalizer
from equican.errors import CheckpointError, ConfigError, DataError, EquicanError, UnknownNameError
from equican.latent import LatentCanonicalized, create_model

WIDTHS = {"a": [4, 8], "b": [4, 16]}  # two models whose config and weights cannot be mixed without a shape mismatch


def canon(which: str = "a") -> Canonicalizer:
    torch.manual_seed(0 if which == "a" else 1)
    return make_canonicalizer("direct", equican.make_group("rotation"), 2, {"channels": WIDTHS[which]})


def which_model(path: Path) -> str:
    """``"a"`` or ``"b"``: the saved model at ``path``, loaded and compared weight for weight (raises if neither)."""
    loaded = Canonicalizer.from_pretrained(path).state_dict()
    for name in WIDTHS:
        ref = canon(name).state_dict()
        if ref.keys() == loaded.keys() and all(torch.equal(ref[k], loaded[k]) for k in ref):
            return name
    raise AssertionError(f"{path} loads, but as neither model")


def temporaries(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def legacy_save(module: Canonicalizer, directory: Path, pause: float = 0.0) -> None:
    """The writer before issue 22: config.json replaced first, then model.safetensors, each atomic on its own."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    text = json.dumps({"format_version": P.FORMAT_VERSION, "type": "canonicalizer",
                       "canonicalizer": P.canonicalizer_config(module)})
    for name, write in ((P.CONFIG_NAME, lambda tmp: tmp.write_text(text)),
                        (P.WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))):
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, directory / name)
        time.sleep(pause)  # the weights of a large model take a while to write


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# ---------------------------------------------------------------------------------------------- atomic saves
def test_a_failed_weights_write_leaves_the_old_model_and_no_temporaries(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "model"
    canon("a").save_pretrained(path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(DataError, match=r"save_pretrained: expected to write .*config.json.*No space left.*unchanged"):
        canon("b").save_pretrained(path)
    assert which_model(path) == "a"
    assert temporaries(path) == [] and sorted(os.listdir(path)) == sorted([P.CARD_NAME, P.CONFIG_NAME, P.WEIGHTS_NAME])


def test_negative_control_the_old_writer_tears_on_a_failed_weights_write(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "model"
    legacy_save(canon("a"), path)
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        legacy_save(canon("b"), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):  # new config, old weights
        which_model(path)


def test_an_interrupt_during_the_write_leaves_the_old_model(tmp_path, monkeypatch):
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    real = _atomic._fsync_tree

    def interrupted(directory):
        real(directory)
        raise KeyboardInterrupt

    monkeypatch.setattr(_atomic, "_fsync_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        canon("b").save_pretrained(path)
    assert which_model(path) == "a" and temporaries(path) == []


def test_saves_replace_and_create_and_keep_links_and_modes(tmp_path):
    path = tmp_path / "new" / "model"  # parents created
    assert canon("a").save_pretrained(path) == path and which_model(path) == "a"
    path.chmod(0o750)
    canon("b").save_pretrained(path)
    assert which_model(path) == "b" and (path.stat().st_mode & 0o777) == 0o750
    link = tmp_path / "link"
    link.symlink_to(path)
    canon("a").save_pretrained(link)
    assert link.is_symlink() and which_model(path) == "a" and temporaries(path) == temporaries(link) == []


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    dead, live = dead_pid(), os.getppid()
    for pid in (dead, live):
        for suffix in ("tmp", "old"):
            (tmp_path / f".model.{pid}.{suffix}").mkdir()
            (tmp_path / f".model.{pid}.{suffix}" / P.CONFIG_NAME).write_text("{}")
    canon("b").save_pretrained(path)
    assert temporaries(path) == [f".model.{live}.old", f".model.{live}.tmp"]
    assert which_model(path) == "b"


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "name").write_text(d.name)
    if not _atomic.exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this platform or file system")
    assert (a / "name").read_text() == "b" and (b / "name").read_text() == "a"


def test_the_two_rename_fallback_and_its_recovery(tmp_path, monkeypatch):
    monkeypatch.setattr(_atomic, "exchange", lambda a, b: False)
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    canon("b").save_pretrained(path)
    assert which_model(path) == "b" and temporaries(path) == []
    # A writer killed between the renames: no model at the name, the old one beside it, the new one too.
    pid = dead_pid()
    os.rename(path, tmp_path / f".model.{pid}.old")
    (tmp_path / f".model.{pid}.tmp").mkdir()
    assert which_model(path) == "b"  # the reader put the old one back
    canon("a").save_pretrained(path)
    assert which_model(path) == "a" and temporaries(path) == []


def test_negative_control_without_recovery_the_fallback_crash_loses_the_model(tmp_path, monkeypatch):
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    os.rename(path, tmp_path / f".model.{dead_pid()}.old")
    monkeypatch.setattr(_atomic, "recover_directory", lambda path: False)
    with pytest.raises(DataError, match="expected a config file"):
        which_model(path)


def _save_between_reads(monkeypatch, path: Path) -> None:
    """Make the next load's first open of the weights file run a save of model b first (once)."""
    real, done = P._Saved.open, []

    def racing(self, name, what):
        if name == P.WEIGHTS_NAME and not done:
            done.append(True)
            canon("b").save_pretrained(path)
        return real(self, name, what)

    monkeypatch.setattr(P._Saved, "open", racing)


def test_a_save_between_the_reads_of_a_load_gives_one_whole_model(tmp_path, monkeypatch):
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    _save_between_reads(monkeypatch, path)
    assert which_model(path) in ("a", "b")


def test_negative_control_a_reader_by_path_mixes_two_saves(tmp_path, monkeypatch):
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    _save_between_reads(monkeypatch, path)
    monkeypatch.setattr(os, "supports_dir_fd", set())  # the reader opens each file by its path
    with pytest.raises(CheckpointError, match="shape mismatches"):
        which_model(path)


def kill_loop(path: Path, writer, kills: int, *, seed: int, stop_at_tear: bool = False) -> dict[str, int]:
    """Fork a process that saves models a and b in turn, kill -9 it at a random instant, load; ``kills`` times."""
    rng = random.Random(seed)
    stats = {"kills": 0, "unloadable": 0, "mid_save": 0, "a": 0, "b": 0}
    models = [canon("a"), canon("b")]
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # the writer: saves until killed
            try:
                for i in range(10**9):
                    writer(models[i % 2], path)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.005, 0.12))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        stats["kills"] += 1
        stats["mid_save"] += bool(temporaries(path))
        try:
            stats[which_model(path)] += 1
        except EquicanError:
            stats["unloadable"] += 1
            if stop_at_tear:
                break
    return stats


KILLS = int(os.environ.get("EQUICAN_SAVE_KILLS", "60"))


@pytest.mark.slow
@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_kill_9_during_save_pretrained_never_leaves_an_unloadable_model(tmp_path, monkeypatch, swap):
    if swap == "two renames":
        monkeypatch.setattr(_atomic, "exchange", lambda a, b: False)
    path = tmp_path / "model"
    canon("a").save_pretrained(path)
    kills = KILLS if swap == "exchange" else max(KILLS // 2, 20)
    stats = kill_loop(path, lambda m, p: m.save_pretrained(p), kills, seed=0)
    print(swap, stats)
    assert stats["kills"] == kills and stats["unloadable"] == 0
    assert stats["mid_save"] > 0 and stats["a"] > 0 and stats["b"] > 0  # the kills did land inside saves
    canon("a").save_pretrained(path)
    assert temporaries(path) == []  # the next save removed what the killed writers left


@pytest.mark.slow
def test_negative_control_kill_9_tears_the_old_writer(tmp_path):
    path = tmp_path / "model"
    legacy_save(canon("a"), path)
    stats = kill_loop(path, lambda m, p: legacy_save(m, p, pause=0.005), 60, seed=0, stop_at_tear=True)
    assert stats["unloadable"] == 1, stats


# ---------------------------------------------------------------------------------------------- save targets
def test_save_into_a_file_under_a_file_or_over_a_config_directory_is_a_config_error(tmp_path):
    file = tmp_path / "file"
    file.write_text("not a model")
    cases = [(file, "is an existing file"), (file / "model", "under the file")]
    cluttered = tmp_path / "cluttered"
    (cluttered / P.CONFIG_NAME).mkdir(parents=True)
    cases.append((cluttered, r"config.json to be a file of a saved model, got a directory"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    cases.append((other, "also holds notes.txt"))
    before = sorted(p.name for p in tmp_path.iterdir())
    for target, message in cases:
        with pytest.raises(ConfigError, match=message):
            canon("a").save_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporaries
    assert (other / "notes.txt").read_text() == "keep me" and file.read_text() == "not a model"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_an_unwritable_parent_is_a_config_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="writable"):
            canon("a").save_pretrained(locked / "model")
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_control_new_empty_and_saved_directories_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "new", empty, tmp_path / "new"):
        canon("a").save_pretrained(target)
        assert which_model(target) == "a"


# ---------------------------------------------------------------------------------------------- configs from disk
def edited(path: Path, edit) -> Path:
    config = json.loads((path / P.CONFIG_NAME).read_text())
    edit(config)
    (path / P.CONFIG_NAME).write_text(json.dumps(config))
    return path


@pytest.fixture
def saved_cyclic(tmp_path) -> Path:
    make_canonicalizer("direct", equican.make_group("cyclic", n=4), 2, {"channels": [4]}).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("field,value,error,message", [
    ("group_options", "ab", DataError, r"canonicalizer.group_options in .*config.json to be a mapping .* got str 'ab'"),
    ("group_options", 5, DataError, r"canonicalizer.group_options in .*config.json to be a mapping .* got int 5"),
    ("group_options", [1], DataError, r"canonicalizer.group_options .* got list"),
    ("options", "channels", DataError, r"canonicalizer.options in .*config.json to be a mapping .* got str"),
    ("kind", 3, DataError, r"canonicalizer.kind in .*config.json to be a registered name, got 3"),
    ("group_options", {"n": 10**12}, ConfigError, r"canonicalizer in .*config.json: .*n to be an int in \[1, 1024\]"),
    ("group_options", {"n": 1e12}, ConfigError, r"canonicalizer in .*config.json: .*n to be an int in \[1, 1024\]"),
    ("in_channels", 10**12, ConfigError, r"in_channels to be an int in \[1, 16384\], got 1000000000000"),
    ("in_channels", 1e12, ConfigError,
     r"canonicalizer in .*config.json: .*in_channels to be an int .*got 1000000000000\.0"),
    ("options", {"channels": [10**6, 10**6]}, ConfigError, r"every width of channels to be at most 4096, got 1000000"),
    ("options", {"channels": [1e6, 1e6]}, ConfigError, r"channels to be a non-empty sequence of positive ints"),
    ("options", {"channels": [4] * 1000}, ConfigError, r"channels to list at most 64 widths, got 1000"),
    ("options", {"reduce": 10**9}, ConfigError, r"reduce to be an int in \[1, 4096\]"),
])
def test_a_bad_canonicalizer_field_is_a_typed_error_naming_file_and_field(saved_cyclic, field, value, error,
                                                                          message):
    edited(saved_cyclic, lambda c: c["canonicalizer"].__setitem__(field, value))
    with pytest.raises(error, match=message):
        Canonicalizer.from_pretrained(saved_cyclic)


def test_an_option_a_builder_cannot_convert_is_a_config_error(saved_cyclic):
    edited(saved_cyclic, lambda c: c["canonicalizer"].update(kind="dec", options={"channels": [4],
                                                                                   "jacobian_weight": "x"}))
    with pytest.raises(ConfigError, match=r"canonicalizer in .*config.json: .*jacobian_weight"):
        Canonicalizer.from_pretrained(saved_cyclic)


def test_an_oversized_config_file_is_not_read_whole(saved_cyclic):
    config = json.loads((saved_cyclic / P.CONFIG_NAME).read_text())
    config["padding"] = " " * P.MAX_CONFIG_BYTES
    (saved_cyclic / P.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(DataError, match=f"config.json to hold JSON, got an unreadable file .*more than "
                                        f"{P.MAX_CONFIG_BYTES} bytes"):
        Canonicalizer.from_pretrained(saved_cyclic)


def test_control_the_largest_sizes_within_the_bounds_are_accepted(saved_cyclic):
    edited(saved_cyclic, lambda c: c["canonicalizer"].__setitem__("group_options", {"n": 4}))
    assert isinstance(Canonicalizer.from_pretrained(saved_cyclic), Canonicalizer)
    assert equican.make_group("cyclic", n=V.MAX_ORDER).n == V.MAX_ORDER
    assert equican.make_group("dihedral", n=V.MAX_ORDER).n == V.MAX_ORDER
    big = make_canonicalizer("direct", equican.make_group("rotation"), V.MAX_CHANNELS, {"channels": [4]})
    assert big.canonicalizer_config["in_channels"] == V.MAX_CHANNELS


def test_the_bounds_hold_on_every_path_not_only_from_disk():
    group = equican.make_group("rotation")
    for kind in ("direct", "dec", "optimization"):
        with pytest.raises(ConfigError, match="in_channels"):
            make_canonicalizer(kind, group, 10**12)
        with pytest.raises(ConfigError, match="at most 4096"):
            make_canonicalizer(kind, group, 3, {"channels": [10**6, 10**6]})
    with pytest.raises(ConfigError, match="in_channels"):
        make_canonicalizer("dec", group, 10**12, {"preset": "paper", "channels": [4]})
    for name in ("cyclic", "dihedral"):
        with pytest.raises(ConfigError, match=r"n to be an int in \[1, 1024\]"):
            equican.make_group(name, n=10**12)


# ---------------------------------------------------------------------------------------------- timm records
TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, num_classes=5)


@pytest.fixture(scope="module")
def saved_latent(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("latent") / "model"
    torch.manual_seed(0)
    create_model("vit_tiny_patch16_224", group="rotation", canonicalizer="direct", at=0,
                 canonicalizer_options={"channels": [4]}, **TINY).save_pretrained(path)
    return path


@pytest.fixture
def latent_copy(saved_latent, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(saved_latent, tmp_path / "model"))


@pytest.fixture
def timm_calls(monkeypatch) -> list[str]:
    """Every call of timm.create_model, by the default device it ran under ("meta" for shape probes)."""
    import timm

    calls, real = [], timm.create_model

    def recording(*args, **kwargs):
        calls.append(str(torch.get_default_device()))
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    return calls


def set_timm(key: str, value) -> object:
    def edit(config):
        if key in ("name", "kwargs"):
            config["timm"][key] = value
        else:
            config["timm"]["kwargs"][key] = value
    return edit


@pytest.mark.parametrize("key,value,error,message", [
    ("kwargs", "img_size=32", ConfigError, r"config.json: expected timm.kwargs to be a mapping .* got str"),
    ("kwargs", [32, 8], ConfigError, r"config.json: expected timm.kwargs to be a mapping .* got list"),
    ("checkpoint_path", "/tmp/weights.pth", ConfigError,
     r"timm.kwargs without 'checkpoint_path' \(timm would unpickle"),
    ("pretrained", True, ConfigError, r"timm.kwargs.pretrained to be one of \[False\], got True"),
    ("pretrained_cfg", {"file": "/tmp/w.pth"}, ConfigError, r"without 'pretrained_cfg'"),
    ("pretrained_cfg_overlay", {"hf_hub_id": "x/y"}, ConfigError, r"without 'pretrained_cfg_overlay'"),
    ("cache_dir", "/tmp", ConfigError, r"without 'cache_dir'"),
    ("act_layer", "gelu", ConfigError, r"only the architecture keywords .*, got 'act_layer' \(accepted: .*num_classes"),
    ("features_only", True, ConfigError, r"got 'features_only'"),
    ("embed_dim", 10**9, ConfigError, r"timm.kwargs.embed_dim to be an int in \[1, 8192\].*got 1000000000"),
    ("num_classes", True, ConfigError, r"timm.kwargs.num_classes to be an int in \[0, 100000\], got True"),
    ("img_size", "32", ConfigError, r"timm.kwargs.img_size to be an int"),
    ("drop_rate", 1.5, ConfigError, r"timm.kwargs.drop_rate to be a number in \[0, 1\)"),
    ("dims", [8, 16], ConfigError, r"timm.kwargs that timm's vit_tiny_patch16_224 accepts.*TypeError"),
    ("name", "hf-hub:timm/vit_tiny_patch16_224", ConfigError, r"timm.name to be a plain timm model name .* 'hf-hub:"),
    ("name", "timm/vit_tiny_patch16_224", ConfigError, r"timm.name to be a plain timm model name"),
    ("name", "local-dir:/tmp", ConfigError, r"timm.name to be a plain timm model name"),
    ("name", 5, ConfigError, r"timm.name to be a plain timm model name .* got 5"),
    ("name", "vit_tiny_patch16_2244", UnknownNameError,
     r"config.json: timm.name: unknown model .* vit_tiny_patch16_224"),
])
def test_a_timm_record_outside_the_allow_list_never_reaches_timm(latent_copy, timm_calls, key, value, error, message):
    edited(latent_copy, set_timm(key, value))
    with pytest.raises(error, match=message):
        LatentCanonicalized.from_pretrained(latent_copy)
    if key != "dims":  # an allowed keyword the model rejects is timm's to refuse (on the meta device first)
        assert timm_calls == []


def test_control_an_untouched_record_and_pretrained_false_load(latent_copy, timm_calls):
    edited(latent_copy, set_timm("pretrained", False))
    assert isinstance(LatentCanonicalized.from_pretrained(latent_copy), LatentCanonicalized)
    assert timm_calls == ["meta", "cpu"]  # the shape probe, then the model


def test_a_config_asking_for_more_than_the_weights_hold_is_refused_before_allocating(latent_copy, timm_calls):
    # 4096 wide and 2 deep: 400 million parameters (1.6 GB) that the 48-wide weights cannot fill.
    edited(latent_copy, set_timm("embed_dim", 4096))
    edited(latent_copy, set_timm("num_heads", 4))
    with pytest.raises(CheckpointError, match=r"shape mismatches: model\.cls_token: weights \(1, 1, 48\), config "
                                              r"\(1, 1, 4096\)"):
        LatentCanonicalized.from_pretrained(latent_copy)
    assert timm_calls == ["meta"]


@pytest.mark.parametrize("field,value,error,message", [
    ("timm", "vit_tiny_patch16_224", DataError,
     r"expected timm in .*config.json to be a mapping \(name, kwargs\) or null"),
    ("points", [3], DataError, r"every point of .*config.json to be a mapping"),
    ("points", [{"at": "0"}], DataError, r"every point of .*config.json to have at, canonicalizer"),
])
def test_a_bad_latent_field_is_a_typed_error(latent_copy, field, value, error, message):
    edited(latent_copy, lambda c: c.__setitem__(field, value))
    with pytest.raises(error, match=message):
        LatentCanonicalized.from_pretrained(latent_copy)


def test_a_latent_points_bad_group_options_name_the_point(latent_copy):
    edited(latent_copy, lambda c: c["points"][0]["canonicalizer"].__setitem__("group_options", "ab"))
    with pytest.raises(DataError, match=r"points\[0\].canonicalizer.group_options in .*config.json"):
        LatentCanonicalized.from_pretrained(latent_copy)


def test_a_model_built_with_other_timm_keywords_is_refused_at_save_not_at_load(tmp_path):
    model = create_model("vit_tiny_patch16_224", group="rotation", canonicalizer="identity", at=0,
                         act_layer="gelu", **TINY)
    with pytest.raises(ConfigError, match="save_pretrained: expected timm.kwargs to use only the architecture"):
        model.save_pretrained(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
