"""The ``equican`` command.

* ``equican demo``: the README's main job: train a plain and a DEC-canonicalized classifier on Locally Scaled MNIST
  from the bundled digits, print their metrics and save a figure of canonical forms ([`equican.demo`][equican.demo]).
* ``equican train``: one training run from a config file (YAML/TOML or a packaged name) and flags over it; works the
  same under ``torchrun --nproc_per_node=N`` ([`equican.train`][equican.train]).
* ``equican evaluate CHECKPOINT``: the metrics of a trained checkpoint.
* ``equican compare``: the same model trained per group and baseline ([`equican.compare`][equican.compare]).
* ``equican show-groups``: every group acting on digits, and its measured law errors ([`equican.show`][equican.show]).
* ``equican list``: the registered groups, training methods, canonicalizer kinds and packaged configurations.
* ``equican --version``.

Every subcommand takes ``--import MODULE`` (repeatable; also ``EQUICAN_PLUGINS=a,b``): a user's module, by name or
``.py`` path, imported before any registry is read, so a group or canonicalizer kind it registers can be named;
a module that fails to import is a ``ConfigError`` naming it.

Exit status: 0 on success, 1 when some group fails its laws, 2 on bad input (one line on stderr says what was
wrong): an unknown name, an invalid config value, a flag the chosen method would ignore, or a missing file is
reported before any training starts.

The module imports only the standard library at load (torch and the rest load when a command runs), so
``equican --help``, ``--version`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, EquicanError, EquicanWarning

__all__ = ["main", "build_parser", "list_entries"]

_SHOW_NAMES = ("show_groups", "render_grid", "load_digits", "GroupRow", "CANVAS", "MAX_COUNT")


def __getattr__(name: str) -> Any:
    # show-groups moved to equican.show; the old names still resolve (lazily: importing it loads torch).
    if name in _SHOW_NAMES:
        from . import show

        return getattr(show, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Flags that set one config field each: flag -> (dotted key, type, help). `train` takes all of them, `compare` the
# ones that make sense for every run of a comparison.
_CONFIG_FLAGS: dict[str, tuple[str, type, str]] = {
    "--method": ("method.name", str, "training method: plain, augment, invariance, dec, direct, optimization, escnn, "
                                     "latent"),
    "--group": ("method.group", str, "group of the method (default: the method's own; refused for a method "
                                     "that uses no group, such as plain)"),
    "--model": ("model.name", str, "model: cnn, vit, or any timm model name (another model than the config's drops its model.options)"),
    "--dataset": ("data.dataset", str, "dataset: local_scale, transformed, mnist"),
    "--data": ("data.root", str, "directory of MNIST IDX files (default: the bundled subset)"),
    "--epochs": ("optim.epochs", int, "epochs"),
    "--batch-size": ("optim.batch_size", int, "global batch size"),
    "--lr": ("optim.lr", float, "AdamW learning rate"),
    "--seed": ("seed", int, "seed of initialization, data order and random elements"),
    "--out": ("out", str, "output directory"),
    "--device": ("device", str, "auto, cpu or cuda"),
    "--threads": ("threads", int, "torch intra-op threads"),
}


def _add_config_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, type, str]], *,
                      set_help: str) -> None:
    """``flags`` (each stored under its dotted key, read back by ``_flag_overrides``) and ``--set KEY=VALUE``."""
    for flag, (key, kind, text) in flags.items():
        parser.add_argument(flag, dest=key, metavar=key.rsplit(".", 1)[-1].upper(), type=kind, default=None,
                            help=text)
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], help=set_help,
                        type=_key_value)


def _key_value(text: str) -> str:
    """An argparse type: one ``KEY=VALUE`` argument (``--set optim.lr 3e-4`` would leave 3e-4 unrecognized)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE in one argument (e.g. --set {text or 'optim.lr'}=VALUE),"
                                         f" got {text!r}")
    return text


def _path(text: str) -> Path:
    """An argparse type: a non-empty path (``Path("")`` would quietly mean the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"expected a path without NUL characters, got {text!r}")
    return Path(text)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (its default prints the usage first, several lines for a subcommand
    with many options); ``--help`` still shows the usage."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``equican`` command."""
    parser = _Parser(prog="equican", description="equican: equivariance by canonicalization.")
    parser.add_argument("--version", action="version", version=f"equican {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    lst = commands.add_parser(
        "list", help="list the registered groups, training methods, canonicalizer kinds and packaged configs",
        description="List what the other commands accept by name: registered groups (built-in and plugins), "
                    "training methods (--method), canonicalizer kinds, and packaged configurations (--config).")
    lst.add_argument("what", nargs="*", metavar="WHAT", help=f"some of: {', '.join(_LISTS)} (default: all)")
    show = commands.add_parser(
        "show-groups", help="draw every group acting on MNIST digits and print the measured group-law errors",
        description="Act on K MNIST digits with random elements of each registered group, write a PNG grid "
                    "(original, transformed, transformed back) and print each group's measured law errors.")
    show.add_argument("--data", metavar="DIR", default=None,
                      help="directory of MNIST IDX files (train-images-idx3-ubyte[.gz], ...); default: the subset "
                           "bundled with the package")
    show.add_argument("--split", choices=("train", "test"), default="train", help="which split (default: train)")
    show.add_argument("--out", metavar="PATH", type=Path, default=Path("outputs/show_groups.png"),
                      help="PNG to write (default: outputs/show_groups.png)")
    show.add_argument("--seed", type=int, default=0, help="seed of the sampled elements and law checks (default 0)")
    show.add_argument("--count", metavar="K", type=int, default=6, help="digits per row, 1..32 (default 6)")
    show.add_argument("--groups", metavar="NAMES", nargs="+", default=None,
                      help="group names, space- or comma-separated (default: every registered group)")

    tr = commands.add_parser(
        "train", help="train a classifier (single process, or under torchrun with DDP)",
        description="Train one run: a config file (TOML/YAML, or a packaged name such as 'demo') with flags and "
                    "--set KEY=VALUE overrides over it, in that order. Writes OUT/checkpoint.pt each epoch and "
                    "OUT/metrics.json at the end. Under `torchrun --nproc_per_node=N -m equican train ...` it "
                    "trains with DistributedDataParallel; --batch-size is the global batch.")
    tr.add_argument("--config", metavar="FILE|NAME", default=None,
                    help="config file (.toml/.yaml/.yml) or packaged config name (default: built-in defaults)")
    _add_config_flags(tr, _CONFIG_FLAGS, set_help="override any config field, e.g. --set optim.lr=3e-4 --set "
                                                   "data.options.digits=2")
    tr.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                    help="continue from OUT/checkpoint.pt, or from the given checkpoint")
    tr.add_argument("--until-epoch", type=int, default=None, metavar="N",
                    help="stop after N epochs in total (resume later); the schedule still spans all epochs")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run OUT holds (without it, a fresh run into a directory with a checkpoint.pt "
                         "or metrics.json is refused); OUT is locked while a run writes there")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument("--amp", nargs="?", const="auto", default=None, choices=("auto", "bf16", "fp16", "off"),
                    help="mixed precision: bf16 on the CPU, bf16 or fp16 on CUDA (bare --amp: the device's best)")

    ev = commands.add_parser("evaluate", help="evaluate a trained checkpoint",
                             description="Compute the metrics of a checkpoint on its run's test split (or other "
                                         "data/eval settings given with --set data.* / eval.*).")
    ev.add_argument("checkpoint", type=_path, help="a checkpoint.pt written by `equican train`")
    ev.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], type=_key_value,
                    help="override data.* or eval.* fields, e.g. --set eval.limit=100")
    ev.add_argument("--json", type=_path, default=None, metavar="PATH",
                    help="where to write the metrics (default: evaluation.json beside the checkpoint)")

    cmp_ = commands.add_parser(
        "compare", help="train the same model with the DEC over each group plus baselines, and compare them",
        description="Train the same model on the same data with the DEC canonicalizer for each group "
                    "plus the plain and augmentation baselines; evaluate accuracy "
                    "on clean and transformed test data, the local-scale error and the invariance error under every "
                    "group; print and write a markdown table, CSV/JSON and figures to --out.")
    cmp_.add_argument("--config", metavar="FILE|NAME", default=None,
                      help="base config (data, model, optimizer, eval; default: the packaged 'compare')")
    cmp_.add_argument("--groups", nargs="+", default=None, metavar="GROUP",
                      help="groups of the canonicalizer runs (default: equican.compare.DEFAULT_GROUPS)")
    cmp_.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                      help="canonicalizer methods run per group, some of: dec direct (default: dec)")
    cmp_.add_argument("--baselines", nargs="*", default=None, metavar="NAME", help="some of: plain augment")
    cmp_.add_argument("--eval-groups", nargs="+", default=None, metavar="GROUP",
                      help="groups of the invariance cross table (default: --groups)")
    cmp_.add_argument("--augment-group", default=None,
                      help="group of the augmentation baseline (default: the first of --groups); refused without "
                           "the augment baseline")
    cmp_.add_argument("--seeds", nargs="+", type=int, default=None,
                      help="seeds (mean ± spread over them; default: 0)")
    _add_config_flags(cmp_, {k: _CONFIG_FLAGS[k] for k in ("--model", "--data", "--epochs")},
                      set_help="override any field of the base config")
    cmp_.add_argument("--out", type=_path, default=Path("outputs/compare"),
                      help="output directory (locked while in use; a rerun replaces the comparison there)")
    cmp_.add_argument("--quick", action="store_true", help="tiny runs that check the pipeline in seconds")
    cmp_.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                      help="instead of training, join finished comparisons (their --out directories, e.g. run as "
                           "separate processes) into one page in --out, which must lie outside every DIR; each run "
                           "and seed must come from one DIR only; only --out (and --no-progress) go with it")
    cmp_.add_argument("--no-progress", action="store_true", help="no progress bars")

    demo = commands.add_parser(
        "demo", help="the main job: train plain and DEC classifiers on Locally Scaled MNIST and compare them",
        description="Train a plain and a DEC-canonicalized classifier with the packaged 'demo' configuration on "
                    "Locally Scaled MNIST made from the bundled digits, print accuracy, invariance error and "
                    "local-scale error, and save a figure of inputs beside their canonical forms.")
    demo.add_argument("--out", type=_path, default=Path("outputs/demo"),
                      help="output directory (default: outputs/demo; a rerun replaces the demo there)")
    demo.add_argument("--data", metavar="DIR", default=None, help="MNIST IDX directory (default: bundled subset)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo config's)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline in seconds")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    for sub in (lst, show, tr, ev, cmp_, demo):  # a user's groups and kinds, registered before anything is read
        sub.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=[],
                         help="import a module (a name or a .py file) first, e.g. one that registers a group or "
                              "a canonicalizer kind; repeatable; EQUICAN_PLUGINS=a,b does the same")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _canonicalizer_kinds() -> list[str]:
    """The registered canonicalizer kinds (the kind registry, built-ins and plugins)."""
    from .canon.registry import list_canonicalizers

    return list_canonicalizers()


def _packaged() -> list[str]:
    from .config import packaged_configs

    return packaged_configs()


def _groups() -> list[str]:
    from .group import list_groups

    return list_groups()


def _methods() -> list[str]:
    from .methods import list_methods

    return list_methods()


_LISTS = {"groups": _groups, "methods": _methods, "canonicalizers": _canonicalizer_kinds, "configs": _packaged}


def list_entries(what: Sequence[str] = ()) -> dict[str, list[str]]:
    """What ``equican list`` prints: ``{"groups": [...], "methods": [...], "canonicalizers": [...],
    "configs": [...]}``, or the named subset.

    Raises:
        ConfigError: an unknown list name.
    """
    unknown = [w for w in what if w not in _LISTS]
    if unknown:
        raise ConfigError(f"expected WHAT to be some of {', '.join(_LISTS)}, got {unknown[0]!r}")
    return {name: _LISTS[name]() for name in (what or _LISTS)}


def _run_list(args: argparse.Namespace) -> int:
    for name, entries in list_entries(args.what).items():
        print(f"{name}: {', '.join(entries)}")
    return 0


def _run_show_groups(args: argparse.Namespace) -> int:
    from .show import run_show_groups

    return run_show_groups(args)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _flag_overrides(args: argparse.Namespace, top_level: Sequence[str] = ()) -> list[str]:
    """``key=value`` overrides from the flags that name a config field (dotted dests, and ``top_level``)."""
    # JSON is valid YAML, so each typed flag value reaches apply_overrides unchanged (a string stays a string).
    return [f"{key}={json.dumps(value)}" for key, value in vars(args).items()
            if value is not None and ("." in key or key in top_level)]


def _refuse_ignored_flags(config: Any, args: argparse.Namespace) -> None:
    """Refuse a group given to a method that uses none, after checking the name (a typo gets its hint first).

    Raises:
        UnknownNameError: an unregistered group. ConfigError: ``--group`` / ``method.group_options`` for a method
            that uses no group.
    """
    from .config import MethodConfig
    from .group import group_class
    from .methods import method_group

    from .errors import UnknownNameError

    method = config.method
    flag = getattr(args, "method.group", None)
    if method.group is not None:
        try:
            group_class(method.group)  # an unknown name fails here, with the registry's closest match
        except UnknownNameError as exc:
            raise UnknownNameError(f"--group {flag}: {exc}" if flag is not None else str(exc)) from None
    if method.group is None and not method.group_options:
        return
    if method_group(MethodConfig(name=method.name)) is None:  # the method uses no group
        given = f"--group {method.group}" if flag is not None else (
            f"method.group={method.group}" if method.group is not None else "method.group_options")
        raise ConfigError(f"{given}: method {method.name!r} uses no group, so it would be ignored; choose a method "
                          f"that uses one (e.g. --method augment or --method dec) or leave it out")


def _train_config(args: argparse.Namespace) -> Any:
    from .config import TrainConfig, apply_overrides, load_config

    method = getattr(args, "method.name", None)
    if method is not None:  # named as the flag, before the config's own checks word it as a path
        from .errors import UnknownNameError
        from .methods import list_methods
        from .validation import did_you_mean

        if method not in list_methods():
            known = list_methods()
            raise UnknownNameError(f"--method {method}: expected a registered training method ({', '.join(known)}; "
                                   f"a module of your own with --import), got {method!r}{did_you_mean(method, known)}")
    config = load_config(args.config) if args.config is not None else TrainConfig()
    flags = _flag_overrides(args, ("seed", "out", "device", "threads", "amp"))
    config = apply_overrides(config, [*flags, *args.overrides])
    if args.no_progress:
        config = config.replace(progress=False)
    _refuse_ignored_flags(config, args)
    return config


def _run_train(args: argparse.Namespace) -> int:
    config = _train_config(args)
    from .report import results_table
    from .train import CHECKPOINT, METRICS, train

    result = train(config, resume=args.resume, until_epoch=args.until_epoch, overwrite=args.overwrite)
    if not _is_main_process():
        return 0
    out = Path(config.out)
    if "eval" in result:
        print(results_table([(config.method.name, result["eval"])]))
    elif not result["complete"]:
        print(f"stopped after epoch {result['epochs_done']} of {config.optim.epochs}; continue with --resume")
    else:
        print(f"trained {config.optim.epochs} epochs (evaluation disabled: eval.enabled = false)")
    print(f"wrote {out / CHECKPOINT} and {out / METRICS}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from ._atomic import write_text_atomic
    from ._paths import require_writable_file
    from ._rundir import EVALUATION
    from .config import apply_overrides
    from .report import results_table
    from .train import evaluate_checkpoint, evaluation_overrides, load_checkpoint

    overrides = evaluation_overrides(args.overrides)
    if args.json is None and not args.checkpoint.name:  # "/" or "..": no file beside which to write the metrics
        raise ConfigError(f"evaluate: expected CHECKPOINT to be the path of a checkpoint file, got {args.checkpoint}")
    path = require_writable_file(args.json or args.checkpoint.with_name(EVALUATION), where="evaluate",
                                 name="--json")
    config, _, _ = load_checkpoint(args.checkpoint)
    overrides = apply_overrides(config, overrides) if overrides else None
    result = evaluate_checkpoint(args.checkpoint, overrides=overrides)
    print(results_table([(f"{config.method.name} (epoch {result['epoch']})", result)]))
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


# What `compare --merge` uses: it joins finished comparisons as they are, so every other option would be ignored.
_MERGE_USES = ("command", "command_line", "merge", "out", "no_progress")


def _refuse_unused_by_merge(args: argparse.Namespace) -> None:
    """Refuse an option given with ``--merge`` that a merge would ignore (a flag left at its default is not given).

    Raises:
        ConfigError: naming every such option.
    """
    defaults = vars(build_parser().parse_args(["compare"]))
    flags = {key: flag for flag, (key, _, _) in _CONFIG_FLAGS.items()} | {"overrides": "--set"}
    given = [flags.get(key, "--" + key.replace("_", "-")) for key, value in vars(args).items()
             if key not in _MERGE_USES and key in defaults and value != defaults[key]]
    if given:
        raise ConfigError(f"compare --merge: expected only --out (and --no-progress) beside --merge, got "
                          f"{', '.join(given)}, which a merge does not use (it joins finished comparisons as they "
                          f"are); leave {'it' if len(given) == 1 else 'them'} out")


def _run_compare(args: argparse.Namespace) -> int:
    from ._paths import require_writable_dir
    from .compare import BASELINES, DEFAULT_GROUPS, QUICK, compare, merge
    from .config import apply_overrides, load_config

    require_writable_dir(args.out, where="compare", name="--out")
    if args.merge is not None:
        _refuse_unused_by_merge(args)
        merge(args.merge, out=args.out, command=args.command_line)
        print(f"\nwrote {args.out}/compare.md, compare.json, compare.csv and the figures")
        return 0
    groups = args.groups if args.groups is not None else DEFAULT_GROUPS
    baselines = args.baselines if args.baselines is not None else BASELINES
    if args.augment_group is not None and "augment" not in baselines:
        raise ConfigError(f"--augment-group {args.augment_group}: no augment baseline runs (--baselines "
                          f"{' '.join(baselines) or '(none)'}), so it would be ignored; add augment to --baselines "
                          f"or leave it out")
    base = load_config(args.config if args.config is not None else "compare")
    flags = _flag_overrides(args)
    base = apply_overrides(base, [*flags, *(QUICK if args.quick else ()), *args.overrides])
    compare(base, groups=groups, baselines=baselines, eval_groups=args.eval_groups,
            augment_group=args.augment_group, seeds=args.seeds or (0,), kinds=args.kinds or ("dec",), out=args.out,
            progress=not args.no_progress,
            figure_count=4 if args.quick else 8, command=args.command_line)
    print(f"\nwrote {args.out}/compare.md, compare.json, compare.csv, compare.png and canonical_forms.png")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, data=args.data, epochs=args.epochs, seed=args.seed, quick=args.quick,
             progress=not args.no_progress)
    return 0


def _one_line_warning(message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None
                      ) -> str:
    """A library warning on one line, as the command's other messages are (Python's own format adds the source
    file and line, which say nothing to a user of the command)."""
    if issubclass(category, EquicanWarning):
        return f"equican: warning: {' '.join(str(message).split())}\n"
    return _FORMAT_WARNING(message, category, filename, lineno, line)


_FORMAT_WARNING = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``equican`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors in the input (an unknown group, a missing data directory, a bad count, a flag the method would ignore)
    print one line to stderr and return 2 instead of raising, so the command never shows a traceback for a user
    mistake.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the problem; keep main() a function that returns
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # The command line as typed, for results pages that say how they were made.
    args.command_line = shlex.join(["equican", *(sys.argv[1:] if argv is None else argv)])
    run = {"show-groups": _run_show_groups, "train": _run_train, "evaluate": _run_evaluate,
           "demo": _run_demo, "compare": _run_compare, "list": _run_list}[args.command]
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        from ._plugins import load_plugins

        load_plugins(args.imports)
        return run(args)
    except EquicanError as exc:
        # One line, whatever the message holds (a parser's excerpt of the source, a library's multi-line text).
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"equican {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
