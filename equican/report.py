"""Reporting: results tables in markdown and figures of canonical forms.

Used by ``equican train``/``evaluate``/``demo`` and the benchmarks, so every table of results looks the same.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, ConvergenceWarning, ShapeError
from .modes import evaluating

__all__ = ["METRIC_COLUMNS", "results_table", "canonicalize", "image_grid", "canonical_forms_figure", "cpu_model",
           "machine_info", "describe_machine"]

METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("accuracy_unscaled", "accuracy (scale 1)"),
    ("invariance_error", "invariance error"),
    ("local_scale_error", "local-scale error"),
    ("canon_invariance", "canonical-form error"),
    ("canon_invariance_identity", "same, no canonicalizer"),
    ("solver_converged", "DEQ converged"),
)
"""The evaluation metrics shown in tables, in order: (key in the metrics dict, column title)."""


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
def canonicalize(canonicalizer: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Canonical forms ``(N, C, H, W)`` of ``images (N, C, H, W)``, in evaluation mode, on the CPU.

    The canonicalizer's training flag is restored afterwards; convergence warnings are silenced (a picture shows
    the result, the metrics count non-convergence).
    """
    param = next(canonicalizer.parameters(), None)
    x = images if param is None else images.to(device=param.device, dtype=param.dtype)
    with evaluating(canonicalizer), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return canonicalizer(x).x.cpu()


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], *, title: str = "") -> Any:
    """A grid of grey images, one labelled row per entry.

    Args:
        rows: ``(label, images)`` with ``images (K, C, H, W)`` (the mean over channels is shown, clipped to
            ``[0, 1]``); every row has the same ``K``.
        title: the figure's title.

    Returns:
        A ``matplotlib.figure.Figure``, not attached to pyplot (save it with ``fig.savefig``; nothing to close).
    """
    # A pyplot-free Figure: it needs no backend to be saved, so the caller's backend (a notebook's, say) is left
    # alone and no figure accumulates in pyplot's global state.
    from matplotlib.figure import Figure

    if not rows or any(not isinstance(t, torch.Tensor) or t.ndim != 4 for _, t in rows):
        raise ShapeError("image_grid: expected rows of (label, images (K, C, H, W))")
    k = rows[0][1].shape[0]
    if any(t.shape[0] != k for _, t in rows):
        raise ShapeError(f"image_grid: expected {k} images in every row, got {[t.shape[0] for _, t in rows]}")
    fig = Figure(figsize=(1.6 * k, 1.6 * len(rows)))
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for j in range(k):
            ax = axes[r, j]
            ax.imshow(images[j].detach().float().cpu().mean(dim=0).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def canonical_forms_figure(canonicalizer: torch.nn.Module, images: torch.Tensor, *, title: str = "",
                           row_labels: Sequence[str] | None = None) -> Any:
    """A grid: each input beside its canonical form under ``canonicalizer``.

    Args:
        canonicalizer: a [`Canonicalizer`][equican.canon.base.Canonicalizer] (its ``forward(x).x`` is the canonical form).
        images: ``(K, V, C, H, W)``: ``K`` samples (columns), each in ``V`` versions (e.g. the same composite at
            different scales); every version gets a row of inputs and a row of canonical forms below it, so a
            canonicalizer that works makes the canonical rows of one sample look alike.
        title: the figure's title.
        row_labels: ``V`` names of the versions (default ``version 1``, ...).

    Returns:
        A ``matplotlib.figure.Figure``, not attached to pyplot (save it with ``fig.savefig``).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"canonical_forms_figure: expected images of shape (K, V, C, H, W), got {shape}")
    k, v = images.shape[:2]
    labels = list(row_labels) if row_labels is not None else [f"version {i + 1}" for i in range(v)]
    if len(labels) != v:
        raise ConfigError(f"canonical_forms_figure: expected {v} row labels, got {len(labels)}")
    canonical = canonicalize(canonicalizer, images.flatten(0, 1)).view(k, v, *images.shape[2:])
    rows = []
    for i in range(v):
        rows += [(labels[i], images[:, i]), ("canonical", canonical[:, i])]
    return image_grid(rows, title=title)


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one), e.g. ``"AMD EPYC 7B13"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a measurement ran on, for the JSON of every benchmark and comparison that states its machine.

    Returns:
        ``cpu``, ``cpus`` (logical), ``usable_cpus`` (this process's affinity), ``torch_threads``, ``torch``,
        ``python``, ``platform``, ``cuda_available``, ``gpu`` (the name of CUDA device 0, or None) and
        ``load_average_start`` (the 1, 5 and 15 minute load averages now; the machine may be shared).
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "usable_cpus": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cuda_available": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_start": list(os.getloadavg())}


def describe_machine(machine: Mapping[str, Any]) -> str:
    """One markdown sentence from a [`machine_info`][equican.report.machine_info] dict (plus an optional
    ``load_average_end``), for results pages."""
    end = machine.get("load_average_end", machine["load_average_start"])
    return (f"{machine['cpu']}, {machine['cpus']} logical CPUs ({machine['usable_cpus']} usable), "
            f"{machine['torch_threads']} torch thread(s); torch {machine['torch']}, Python {machine['python']}; "
            f"GPU: {machine['gpu'] or 'none'}. Load average (1, 5, 15 min) at the start "
            f"{', '.join(f'{v:.2f}' for v in machine['load_average_start'])}, at the end "
            f"{', '.join(f'{v:.2f}' for v in end)}.")
