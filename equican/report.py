"""Reporting: results tables in markdown and figures of canonical forms.

Used by ``equican train``/``evaluate``/``demo`` and the benchmarks, so every table of results looks the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import ConfigError, ShapeError

__all__ = ["METRIC_COLUMNS", "results_table", "canonical_forms_figure"]

#: The evaluation metrics shown in tables, in order: (key in the metrics dict, column title).
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("accuracy_unscaled", "accuracy (scale 1)"),
    ("invariance_error", "invariance error"),
    ("local_scale_error", "local-scale error"),
)


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:  # (mean, spread)
        return f"{value[0]:.4f} ± {value[1]:.4f}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def results_table(rows: Sequence[tuple[str, Mapping[str, Any]]],
                  columns: Sequence[tuple[str, str]] = METRIC_COLUMNS, *, label: str = "method") -> str:
    """A markdown table, one row per run.

    Args:
        rows: ``(name, metrics)`` pairs; a metric is a number, a ``(mean, spread)`` pair, a string or missing.
        columns: ``(key, title)`` pairs; columns no row has are left out.
        label: the first column's title.

    Returns:
        The table's lines joined by newlines (no trailing newline).
    """
    kept = [(key, title) for key, title in columns if any(key in metrics for _, metrics in rows)]
    lines = ["| " + " | ".join([label, *(title for _, title in kept)]) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(kept)) + "|"]
    for name, metrics in rows:
        lines.append("| " + " | ".join([name, *(_cell(metrics.get(key)) for key, _ in kept)]) + " |")
    return "\n".join(lines)


@torch.no_grad()
def canonical_forms_figure(canonicalizer: torch.nn.Module, images: torch.Tensor, *, title: str = "",
                           row_labels: Sequence[str] | None = None) -> Any:
    """A grid: each input beside its canonical form under ``canonicalizer``.

    Args:
        canonicalizer: a :class:`~equican.canon.Canonicalizer` (its ``forward(x).x`` is the canonical form).
        images: ``(K, V, C, H, W)``: ``K`` samples (columns), each in ``V`` versions (e.g. the same composite at
            different scales); every version gets a row of inputs and a row of canonical forms below it, so a
            canonicalizer that works makes the canonical rows of one sample look alike.
        title: the figure's title.
        row_labels: ``V`` names of the versions (default ``version 1``, ...).

    Returns:
        A matplotlib Figure (the caller saves it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"canonical_forms_figure: expected images of shape (K, V, C, H, W), got {shape}")
    k, v = images.shape[:2]
    labels = list(row_labels) if row_labels is not None else [f"version {i + 1}" for i in range(v)]
    if len(labels) != v:
        raise ConfigError(f"canonical_forms_figure: expected {v} row labels, got {len(labels)}")
    param = next(canonicalizer.parameters(), None)
    flat = images.flatten(0, 1)
    if param is not None:
        flat = flat.to(device=param.device, dtype=param.dtype)
    was_training = canonicalizer.training
    canonicalizer.eval()
    try:
        canonical = canonicalizer(flat).x.view(k, v, *images.shape[2:]).cpu()
    finally:
        canonicalizer.train(was_training)
    fig, axes = plt.subplots(2 * v, k, figsize=(1.6 * k, 1.6 * 2 * v), squeeze=False)
    for j in range(k):
        for i in range(v):
            for r, (tensor, name) in enumerate(((images, labels[i]), (canonical, "canonical"))):
                ax = axes[2 * i + r, j]
                ax.imshow(tensor[j, i].float().mean(dim=0).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
