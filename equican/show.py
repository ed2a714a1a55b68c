"""``equican show-groups``: every registered group acting on MNIST digits, and its measured law errors.

It loads a few MNIST digits (the subset bundled with the package unless ``--data`` names a directory of MNIST IDX
files), acts on them with random elements of every registered group, writes a PNG grid (per group: original,
transformed ``act(g, x)``, transformed back ``act(g⁻¹, act(g, x))``, drawn by
[`equican.report.image_grid`][equican.report.image_grid]) and prints each group's measured law errors from
[`equican.testing.check_group_laws`][equican.testing.laws.check_group_laws]. Exit status 1 when a group fails its laws.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ._paths import require_writable_file
from .data import load_mnist
from .errors import ConfigError, DataError
from .group import Group, list_groups, make_group
from .validation import SEED_MAX

__all__ = ["show_groups", "render_grid", "load_digits", "GroupRow", "CANVAS", "MAX_COUNT", "summary",
           "run_show_groups"]

CANVAS = 40
"""Side of the canvas the 28×28 digits are centred on, so that rotations and zooms do not cut them off."""
MAX_COUNT = 32
"""The most digits per row ``--count`` accepts (the grid stays readable)."""


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
        One [`GroupRow`][equican.show.GroupRow] per group, in the order given.

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


def render_grid(rows: Sequence[GroupRow], *, title: str = "") -> Any:
    """Draw the grid with [`equican.report.image_grid`][equican.report.image_grid]: one row per group holding its
    ``K`` original digits ``x``, then ``act(g, x)``, then ``act(g⁻¹, act(g, x))``, labelled with the group's name,
    whether its laws passed and the digits' round-trip error.

    Args:
        rows: the output of [`show_groups`][equican.show.show_groups].
        title: a line above the grid (the column layout is added to it).

    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot; save it with ``fig.savefig``).
    """
    from .report import image_grid

    grid = [(f"{row.name}\n{'laws passed' if row.report.passed else 'LAWS FAILED'}\n|Δ| {row.roundtrip_error:.3f}",
             torch.cat([row.original, row.transformed, row.restored]))
            for row in rows]
    count = rows[0].original.shape[0]
    layout = (f"columns: {count} digits x  |  transformed act(g, x)  |  transformed back act(g⁻¹, act(g, x))")
    fig = image_grid(grid, title=f"{title}\n{layout}" if title else layout)
    # image_grid gives each panel 1.6 inches, made for a few images per row; here a row holds 3K of them.
    fig.set_size_inches(max(0.55 * 3 * count + 1.4, 6.0), 0.7 * len(rows) + 1.0)
    fig.tight_layout()
    return fig


def summary(rows: Sequence[GroupRow]) -> str:
    """A table: per group, laws passed, the worst error/tolerance ratio, and the digits' round-trip error."""
    lines = [f"{'group':<12} {'class':<18} {'laws':<7} {'worst error/tolerance':>22} {'digits mean |Δ|':>16}",
             "-" * 79]
    for row in rows:
        ratios = [r.error / r.tolerance for r in row.report.results if r.tolerance > 0]
        worst = f"{max(ratios):.3g}" if ratios else "-"
        lines.append(f"{row.name:<12} {type(row.group).__name__:<18} {'passed' if row.report.passed else 'FAILED':<7} "
                     f"{worst:>22} {row.roundtrip_error:>16.4f}")
    return "\n".join(lines)


def figure_path(path: Path, *, where: str, name: str) -> Path:
    """A writable file path whose suffix matplotlib can save to, checked before the figure is made."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kinds = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in kinds:
        raise ConfigError(f"{where}: expected {name} to end in an image suffix ({', '.join(sorted(kinds))}), "
                          f"got {str(path)!r}")
    return require_writable_file(path, where=where, name=name)


def run_show_groups(args: Any) -> int:
    """``equican show-groups`` with parsed arguments ``args``; returns the exit status."""
    figure_path(args.out, where="show-groups", name="--out")
    rows = show_groups(args.groups, data=args.data, split=args.split, count=args.count, seed=args.seed)
    for row in rows:
        print(f"== {row.name}: {row.group!r}")
        print(row.report)
        print()
    print(summary(rows))
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
