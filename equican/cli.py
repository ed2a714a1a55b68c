"""The ``equican`` command.

* ``equican demo``: the README's main job: train a plain and a DEC-canonicalized classifier on Locally Scaled MNIST
  from the bundled digits, print their metrics and save a figure of canonical forms ([`equican.demo`][equican.demo]).
* ``equican train``: one training run from a config file (YAML/TOML or a packaged name) and flags over it; works the
  same under ``torchrun --nproc_per_node=N`` ([`equican.train`][equican.train]).
* ``equican evaluate CHECKPOINT``: the metrics of a trained checkpoint.
* ``equican show-groups``: see below.

``equican show-groups`` loads a few MNIST digits (the subset bundled with the package unless ``--data`` names a
directory of MNIST IDX files), acts on them with random elements of every registered group, writes a PNG grid
(rows: groups; columns: original, transformed ``act(g, x)``, transformed back ``act(g⁻¹, act(g, x))``) and prints
each group's measured law errors from [`equican.testing.check_group_laws`][equican.testing.laws.check_group_laws].

Exit status: 0 on success, 1 when some group fails its laws, 2 on bad input (the message says what was wrong):
an unknown name, an invalid config value or a missing file is reported before any training starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ._paths import require_writable_dir, require_writable_file
from .validation import SEED_MAX
from .config import TrainConfig, apply_overrides, load_config
from .data import load_mnist
from .errors import ConfigError, DataError, EquicanError
from .group import Group, list_groups, make_group
from .report import results_table
from .train import CHECKPOINT, METRICS, evaluate_checkpoint, evaluation_overrides, load_checkpoint, train

__all__ = ["main", "build_parser", "show_groups", "render_grid", "GroupRow", "CANVAS"]

CANVAS = 40
"""Side of the canvas the 28×28 digits are centred on, so that rotations and zooms do not cut them off."""
MAX_COUNT = 32


@dataclass(frozen=True)
class GroupRow:
    """One group's row of the grid and its measurements.

    Attributes:
        name: the registry name.
        group: the group, built with its defaults.
        g: the sampled elements, shape ``(K, *group.param_shape)``.
        original: the digits, shape ``(K, 1, CANVAS, CANVAS)``, float32 in ``[0, 1]``.
        transformed: ``act(g, original)``, same shape.
        restored: ``act(inverse(g), transformed)``, same shape.
        report: the [`LawReport`][equican.testing.laws.LawReport] of ``check_group_laws(group)``.
    """

    name: str
    group: Group
    g: torch.Tensor
    original: torch.Tensor
    transformed: torch.Tensor
    restored: torch.Tensor
    report: Any

    @property
    def roundtrip_error(self) -> float:
        """Mean ``|restored - original|`` over the digits' pixels (content pushed out of the canvas is lost)."""
        return float((self.restored - self.original).abs().mean())


def _parse_names(values: Sequence[str] | None) -> list[str]:
    """``["monotone,rotation", "affine"]`` -> ``["monotone", "rotation", "affine"]`` (order kept, no repeats)."""
    if values is None:
        return list_groups()
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise ConfigError("show-groups: expected at least one group name in --groups, got none")
    return names


def load_digits(count: int, *, data: str | Path | None = None, split: str = "train") -> torch.Tensor:
    """The first ``count`` digits of ``split``, centred on a ``CANVAS × CANVAS`` black canvas.

    Args:
        count: how many digits, ``1 <= count <= MAX_COUNT``.
        data: a directory of MNIST IDX files, or None for the bundled subset.
        split: ``"train"`` or ``"test"``.

    Returns:
        Shape ``(count, 1, CANVAS, CANVAS)``, float32 in ``[0, 1]``.

    Raises:
        ConfigError: ``count`` out of range.
        DataError: missing or corrupt files, or fewer than ``count`` digits in them.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ConfigError(f"show-groups: expected --count between 1 and {MAX_COUNT}, got {count!r}")
    images, _ = load_mnist(split, root=data, limit=count)
    if images.shape[0] < count:
        raise DataError(f"show-groups: expected at least {count} {split} digits in {data or 'the bundled subset'}, "
                        f"got {images.shape[0]}")
    pad = CANVAS - images.shape[-1]
    x = images[:, None].to(torch.float32) / 255.0
    return F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))


def show_groups(names: Sequence[str] | None = None, *, data: str | Path | None = None, split: str = "train",
                count: int = 6, seed: int = 0) -> list[GroupRow]:
    """Act on digits with random elements of each group and measure each group's laws.

    Args:
        names: registry names (default: every registered group).
        data: a directory of MNIST IDX files, or None for the bundled subset.
        split: ``"train"`` or ``"test"``.
        count: number of digits ``K``.
        seed: seeds the law checks and, mixed with a checksum of the group's name, each group's
            ``torch.Generator`` (so a group's row does not depend on which other groups are shown, and groups with
            similar parametrizations do not all get the same draws).

    Returns:
        One [`GroupRow`][equican.cli.GroupRow] per group, in the order given.

    Raises:
        UnknownNameError: a name is not registered (the message lists the registered ones).
        ConfigError, DataError: bad ``count``/``split``/``seed`` or unreadable data.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"show-groups: expected --seed to be a non-negative int, got {seed!r}")
    if seed > SEED_MAX:
        raise ConfigError(f"show-groups: expected --seed to be at most {SEED_MAX} (64-bit seeds), got {seed}")
    names = _parse_names(names)
    groups = [(name, make_group(name)) for name in names]  # every name is resolved before any work starts
    x = load_digits(count, data=data, split=split)
    # Imported here: equican.testing pulls in hypothesis, which `equican --help` should not pay for.
    from .testing import check_group_laws

    rows = []
    for name, group in groups:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (SEED_MAX + 1))
        g = group.sample(count, generator=generator, dtype=x.dtype)
        with torch.no_grad():
            transformed = group.act(g, x)
            restored = group.act(group.inverse(g), transformed)
        report = check_group_laws(group, seed=seed)
        rows.append(GroupRow(name, group, g, x, transformed, restored, report))
    return rows


def _strip(images: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """``(K, 1, H, W)`` -> one ``(H, K·W + (K-1)·gap)`` strip, the gaps NaN (drawn in the colormap's 'bad' colour)."""
    k, _, h, w = images.shape
    out = torch.full((h, k * w + (k - 1) * gap), float("nan"))
    for i in range(k):
        out[:, i * (w + gap): i * (w + gap) + w] = images[i, 0].clamp(0, 1)
    return out


def render_grid(rows: Sequence[GroupRow], *, title: str = "") -> Any:
    """Draw the grid: one row per group, columns original / transformed / transformed back.

    Args:
        rows: the output of [`show_groups`][equican.cli.show_groups].
        title: a line above the grid.

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot; save it with ``fig.savefig``).
    """
    # Figure + the Agg canvas directly: no pyplot global state, no GUI backend, works headless.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = rows[0].original.shape[0]
    columns = [("original  x", "original"), ("transformed  act(g, x)", "transformed"),
               ("transformed back  act(g⁻¹, act(g, x))", "restored")]
    strip_w = max(0.6 * count, 2.8)  # inches per column: wide enough for the longest column title
    height, width = _strip(rows[0].original).shape
    row_h = max(0.6 * count, 0.0) * height / width + 0.3  # the strip's own aspect, plus room between rows
    fig = Figure(figsize=(3 * strip_w + 2.0, max(row_h, 0.75) * len(rows) + 0.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#5b7fa8")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, row in enumerate(rows):
        for c, (heading, field) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(_strip(getattr(row, field)).numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heading, fontsize=10)
        status = "laws passed" if row.report.passed else "LAWS FAILED"
        axes[r, 0].set_ylabel(f"{row.name}\n{type(row.group).__name__}\n{status}", rotation=0, ha="right",
                              va="center", fontsize=9, color="black" if row.report.passed else "red")
        axes[r, 2].text(1.02, 0.5, f"round trip\nmean |Δ|\n{row.roundtrip_error:.3f}", transform=axes[r, 2].transAxes,
                        ha="left", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _summary(rows: Sequence[GroupRow]) -> str:
    """A table: per group, laws passed, the worst error/tolerance ratio, and the digits' round-trip error."""
    lines = [f"{'group':<12} {'class':<18} {'laws':<7} {'worst error/tolerance':>22} {'digits mean |Δ|':>16}",
             "-" * 79]
    for row in rows:
        ratios = [r.error / r.tolerance for r in row.report.results if r.tolerance > 0]
        worst = f"{max(ratios):.3g}" if ratios else "-"
        lines.append(f"{row.name:<12} {type(row.group).__name__:<18} {'passed' if row.report.passed else 'FAILED':<7} "
                     f"{worst:>22} {row.roundtrip_error:>16.4f}")
    return "\n".join(lines)


# Flags that set one config field each: flag -> (dotted key, type, help). `train` takes all of them, `compare` the
# ones that make sense for every run of a comparison.
_CONFIG_FLAGS: dict[str, tuple[str, type, str]] = {
    "--method": ("method.name", str, "training method: plain, augment, invariance, dec, direct, optimization, escnn, "
                                     "latent"),
    "--group": ("method.group", str, "group of the method (default: the method's, monotone)"),
    "--model": ("model.name", str, "model: cnn, vit, or any timm model name"),
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
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], help=set_help)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (its default prints the usage first, several lines for a subcommand
    with many options); ``--help`` still shows the usage."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``equican`` command."""
    parser = _Parser(prog="equican", description="equican: equivariance by canonicalization.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    show.add_argument("--count", metavar="K", type=int, default=6, help=f"digits per row, 1..{MAX_COUNT} (default 6)")
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
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")

    ev = commands.add_parser("evaluate", help="evaluate a trained checkpoint",
                             description="Compute the metrics of a checkpoint on its run's test split (or other "
                                         "data/eval settings given with --set data.* / eval.*).")
    ev.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `equican train`")
    ev.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                    help="override data.* or eval.* fields, e.g. --set eval.limit=100")
    ev.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="where to write the metrics (default: evaluation.json beside the checkpoint)")

    cmp_ = commands.add_parser(
        "compare", help="train the same model with the DEC over each group plus baselines, and compare them",
        description="Train the same model on the same data with the DEC canonicalizer for each group (default: "
                    "monotone, affine, scale, rotation) plus the plain and augmentation baselines; evaluate accuracy "
                    "on clean and transformed test data, the local-scale error and the invariance error under every "
                    "group; print and write a markdown table, CSV/JSON and figures to --out.")
    cmp_.add_argument("--config", metavar="FILE|NAME", default=None,
                      help="base config (data, model, optimizer, eval; default: the packaged 'compare')")
    cmp_.add_argument("--groups", nargs="+", default=None, metavar="GROUP",
                      help="groups of the canonicalizer runs (default: monotone affine scale rotation)")
    cmp_.add_argument("--kinds", nargs="+", default=["dec"], metavar="KIND",
                      help="canonicalizer methods run per group, some of: dec direct (default: dec)")
    cmp_.add_argument("--baselines", nargs="*", default=None, metavar="NAME", help="some of: plain augment")
    cmp_.add_argument("--eval-groups", nargs="+", default=None, metavar="GROUP",
                      help="groups of the invariance cross table (default: --groups)")
    cmp_.add_argument("--augment-group", default="monotone", help="group of the augmentation baseline")
    cmp_.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (mean ± spread over them)")
    _add_config_flags(cmp_, {k: _CONFIG_FLAGS[k] for k in ("--model", "--data", "--epochs")},
                      set_help="override any field of the base config")
    cmp_.add_argument("--out", type=Path, default=Path("outputs/compare"), help="output directory")
    cmp_.add_argument("--quick", action="store_true", help="tiny runs that check the pipeline in seconds")
    cmp_.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                      help="instead of training, join finished comparisons (their --out directories, e.g. run as "
                           "separate processes) into one page in --out")
    cmp_.add_argument("--no-progress", action="store_true", help="no progress bars")

    demo = commands.add_parser(
        "demo", help="the main job: train plain and DEC classifiers on Locally Scaled MNIST and compare them",
        description="Train a plain and a DEC-canonicalized classifier with the packaged 'demo' configuration on "
                    "Locally Scaled MNIST made from the bundled digits, print accuracy, invariance error and "
                    "local-scale error, and save a figure of inputs beside their canonical forms.")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory (default: outputs/demo)")
    demo.add_argument("--data", metavar="DIR", default=None, help="MNIST IDX directory (default: bundled subset)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo config's)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline in seconds")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _figure_path(path: Path, *, where: str, name: str) -> Path:
    """A writable file path whose suffix matplotlib can save to, checked before the figure is made."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kinds = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in kinds:
        raise ConfigError(f"{where}: expected {name} to end in an image suffix ({', '.join(sorted(kinds))}), "
                          f"got {str(path)!r}")
    return require_writable_file(path, where=where, name=name)


def _run_show_groups(args: argparse.Namespace) -> int:
    _figure_path(args.out, where="show-groups", name="--out")
    rows = show_groups(args.groups, data=args.data, split=args.split, count=args.count, seed=args.seed)
    for row in rows:
        print(f"== {row.name}: {row.group!r}")
        print(row.report)
        print()
    print(_summary(rows))
    source = args.data or "bundled MNIST subset"
    fig = render_grid(rows, title=f"equican show-groups: {args.count} {args.split} digits from {source}, "
                                  f"seed {args.seed}")
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out)
    except OSError as exc:
        raise ConfigError(f"show-groups: expected a writable --out path, got {args.out} ({exc.strerror or exc})") \
            from None
    print(f"\nwrote {args.out}")
    failed = [row.name for row in rows if not row.report.passed]
    if failed:
        print(f"equican show-groups: group laws failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _flag_overrides(args: argparse.Namespace, top_level: Sequence[str] = ()) -> list[str]:
    """``key=value`` overrides from the flags that name a config field (dotted dests, and ``top_level``)."""
    # JSON is valid YAML, so each typed flag value reaches apply_overrides unchanged (a string stays a string).
    return [f"{key}={json.dumps(value)}" for key, value in vars(args).items()
            if value is not None and ("." in key or key in top_level)]


def _train_config(args: argparse.Namespace) -> TrainConfig:
    config = load_config(args.config) if args.config is not None else TrainConfig()
    flags = _flag_overrides(args, ("seed", "out", "device", "threads"))
    config = apply_overrides(config, [*flags, *args.overrides])
    if args.no_progress:
        config = config.replace(progress=False)
    return config


def _run_train(args: argparse.Namespace) -> int:
    config = _train_config(args)
    result = train(config, resume=args.resume, until_epoch=args.until_epoch)
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
    overrides = evaluation_overrides(args.overrides)
    path = require_writable_file(args.json or args.checkpoint.with_name("evaluation.json"), where="evaluate",
                                 name="--json")
    config, _, _ = load_checkpoint(args.checkpoint)
    overrides = apply_overrides(config, overrides) if overrides else None
    result = evaluate_checkpoint(args.checkpoint, overrides=overrides)
    print(results_table([(f"{config.method.name} (epoch {result['epoch']})", result)]))
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from .compare import BASELINES, DEFAULT_GROUPS, QUICK, compare, merge

    require_writable_dir(args.out, where="compare", name="--out")
    if args.merge is not None:
        merge(args.merge, out=args.out, command=args.command_line)
        print(f"\nwrote {args.out}/compare.md, compare.json, compare.csv and the figures")
        return 0
    base = load_config(args.config if args.config is not None else "compare")
    flags = _flag_overrides(args)
    base = apply_overrides(base, [*flags, *(QUICK if args.quick else ()), *args.overrides])
    compare(base, groups=args.groups if args.groups is not None else DEFAULT_GROUPS,
            baselines=args.baselines if args.baselines is not None else BASELINES, eval_groups=args.eval_groups,
            augment_group=args.augment_group, seeds=args.seeds, kinds=args.kinds, out=args.out,
            progress=not args.no_progress,
            figure_count=4 if args.quick else 8, command=args.command_line)
    print(f"\nwrote {args.out}/compare.md, compare.json, compare.csv, compare.png and canonical_forms.png")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, data=args.data, epochs=args.epochs, seed=args.seed, quick=args.quick,
             progress=not args.no_progress)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``equican`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors in the input (an unknown group, a missing data directory, a bad count) print one line to stderr and
    return 2 instead of raising, so the command never shows a traceback for a user mistake.
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
           "demo": _run_demo, "compare": _run_compare}[args.command]
    try:
        return run(args)
    except EquicanError as exc:
        # One line, whatever the message holds (a parser's excerpt of the source, a library's multi-line text).
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"equican {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
