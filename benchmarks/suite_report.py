"""Figures and the results page of the performance suite (``benchmarks/suite.py``), generated from its JSON alone.

Kept apart from the measurements so that ``--from-json`` can regenerate both without measuring; the operation and file
names are defined here and imported by the suite.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from equican.report import describe_machine

#: The measured group operations and their grid_sample references (shared with the suite, which imports them).
GROUP_OPS = ("act", "act_inverse", "compose")
REFERENCE_OPS = ("grid_sample[act]", "grid_sample[act_inverse]")
JSON_NAME, PAGE_NAME = "performance.json", "performance.md"

# ================================================================================================ figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def figure_name(section: str, device: str) -> str:
    return f"performance_{section}_{device}.png"


def plot_groups(result: dict, device: str, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    groups = sorted({r["group"] for r in rows})
    cols = min(3, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    styles = {"grid_sample[act]": ("black", "--"), "grid_sample[act_inverse]": ("grey", ":"),
              "act": ("tab:blue", "-"), "act_inverse": ("tab:orange", "-"), "compose": ("tab:green", "-")}
    markers = {b: m for b, m in zip(sorted({r["batch"] for r in rows}), "os^Dv")}
    for ax, name in zip(axes.flat, groups):
        for op, (color, ls) in styles.items():
            points = sorted((r["pixels"], r["seconds"] * 1e3, r["batch"]) for r in rows
                            if r["group"] == name and r["op"] == op)
            ax.plot([p for p, _, _ in points], [t for _, t, _ in points], ls, color=color, lw=1.2, label=op)
            for p, t, b in points:
                ax.plot(p, t, markers[b], color=color, ms=4)
        ref = sorted((r["pixels"], r["seconds"] * 1e3) for r in rows
                     if r["group"] == name and r["op"] == "grid_sample[act]")
        if ref:  # slope-1 guide through the largest grid_sample point
            p1, t1 = ref[-1]
            p0 = ref[0][0]
            ax.plot([p0, p1], [t1 * p0 / p1, t1], color="red", lw=0.8, alpha=0.5, label="slope 1 (linear)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("pixels per call (batch × H × W)")
        ax.set_ylabel("ms per call")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    batch_handles = [plt.Line2D([], [], marker=m, color="black", ls="none", label=f"batch {b}")
                     for b, m in markers.items()]
    fig.legend(handles + batch_handles, labels + [h.get_label() for h in batch_handles], loc="lower right",
               fontsize=8, ncol=2, bbox_to_anchor=(0.98, 0.05))
    fig.suptitle(f"group operations vs F.grid_sample on a precomputed grid, float32, {device}")
    _save(fig, path)


def plot_canonicalizers(result: dict, device: str, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    curves = (("dec_anderson", "tab:red", "*-", "DEC, Anderson"),
              ("dec_fixed_point", "tab:purple", "o-", "DEC, fixed-point iteration"),
              ("optimization", "tab:blue", "s-", "optimization (SGD), by steps"))
    for family, color, style, label in curves:
        points = sorted((r["iterations"], r["ms_per_image"], r["invariance_error"]) for r in rows.values()
                        if r["family"] == family)
        if not points:
            continue
        if family != "optimization":
            left.plot([k for k, _, _ in points], [t for _, t, _ in points], style, color=color, label=label)
        right.plot([t for _, t, _ in points], [e for _, _, e in points], style, color=color, label=label)
        for k, t, e in points:
            right.annotate(str(k), (t, e), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    for name, color, marker in (("direct", "tab:green", "D"), ("identity", "black", "x")):
        if name in rows:
            left.axhline(rows[name]["ms_per_image"], color=color, ls=":", lw=1, label=name)
            right.plot(rows[name]["ms_per_image"], rows[name]["invariance_error"], marker, color=color, ms=9,
                       ls="none", label=name)
    left.set_xlabel("solver iterations (forced: tolerance 1e-12)")
    left.set_ylabel("ms per image")
    left.set_title("DEC: time per image against iterations")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("ms per image (log)")
    right.set_ylabel("invariance error (mean |Δ canonical input|)")
    right.set_title("time against invariance error (labels: iterations / steps)")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(f"canonicalizers, monotone R={s['cells']}, {s['size']}×{s['size']}×{s['channels']}, "
                 f"batch {s['batch']}, {device}")
    _save(fig, path)


def plot_latent(result: dict, device: str, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = sorted(rows, key=lambda n: rows[n]["params"])
    for variant, color, marker in (("dec@1", "tab:blue", "o"), ("dec@2", "tab:orange", "s")):
        ax.plot([rows[n]["params"] / 1e6 for n in names], [rows[n][variant] for n in names], marker, color=color,
                ms=8, ls="none", label=f"DEC at {variant[-1]} point(s)")
    for n in names:
        ax.annotate(n.split("_patch")[0], (rows[n]["params"] / 1e6, rows[n]["dec@2"]), textcoords="offset points",
                    xytext=(4, 6), fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("backbone parameters (millions, log)")
    ax.set_ylabel("forward time, wrapped / bare")
    ax.set_title(f"latent DEC overhead, batch {result['batch']}, {result['settings']['size']}², "
                 f"{result['settings']['iterations']} iterations, {device}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_training(result: dict, device: str, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(names), 3.8))
    ax.bar(range(len(names)), [rows[m]["images_per_s"] for m in names], color="tab:blue", alpha=0.7)
    for i, m in enumerate(names):
        rates = rows[m]["segment_images_per_s"]
        ax.plot([i] * len(rates), rates, "k.", ms=4)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("training images / s (dots: segments)")
    ax.set_title(f"training throughput, batch {result['batch']}, {device}", fontsize=9)
    _save(fig, path)


PLOTS = {"groups": plot_groups, "canonicalizers": plot_canonicalizers, "latent": plot_latent,
         "training": plot_training}


# ================================================================================================ page
def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def absolute_device(payload: dict) -> str:
    """Where the page takes absolute times from: the GPU when it was measured, else the CPU."""
    return "cuda" if "cuda" in payload["runs"] else next(iter(payload["runs"]))


def _measured(payload: dict, section: str):
    """``(device, run, result, absolute)`` for every device that measured ``section``; ``absolute``: whether the
    page shows this device's absolute times (see :func:`absolute_device`)."""
    absolute = absolute_device(payload)
    for device, run in payload["runs"].items():
        if section in run:
            yield device, run, run[section], device == absolute


def _device_block(section: str, device: str, run: dict, settings: str, table: str) -> list[str]:
    """One device's part of a section: heading, settings line, table, figure."""
    return [f"\n### {device} ({run['device_name']})\n", f"{settings}\n", table,
            f"\n![{section}, {device}]({figure_name(section, device)})"]


def _page_groups(payload: dict) -> list[str]:
    out = ["Every registered group at its defaults, float32. Each operation's time is divided by `F.grid_sample` "
           "of the same images on a precomputed grid of the same size: the grid that reproduces the group's action "
           "(for `act` and `compose`) or its inverse action (for `act_inverse`). `compose` works on the elements "
           "only, so its cost does not grow with the image and its ratio falls with size. Slope: the fitted "
           "log-log slope of time against pixels (B·H·W) over the larger calls (1 = linear)."]
    for device, run, result, absolute in _measured(payload, "groups"):
        rows = result["rows"]
        groups = sorted({r["group"] for r in rows})
        configs = [tuple(c) for c in result["configs"]]
        largest = max(configs, key=lambda c: (c[0] * c[0] * c[1], c[0]))
        summary = []
        for name in groups:
            for op in GROUP_OPS:
                ratios = [r["ratio"] for r in rows if r["group"] == name and r["op"] == op]
                at = next(r["ratio"] for r in rows if r["group"] == name and r["op"] == op
                          and (r["size"], r["batch"]) == largest)
                summary.append([name, f"`{op}`", _f(statistics.median(ratios)), _f(min(ratios)), _f(max(ratios)),
                                _f(at), _f(result["slopes"][name][op]),
                                _f(result["slopes"][name][REFERENCE_OPS[1] if op == "act_inverse"
                                                           else REFERENCE_OPS[0]])])
        out += [f"\n### Ratios to grid_sample, {device} ({run['device_name']})\n",
                f"{len(configs)} (size, batch) pairs; largest {largest[0]}×{largest[0]}, batch {largest[1]}.\n",
                _table(["group", "op", "median ratio", "min", "max", f"ratio at {largest[0]}², batch {largest[1]}",
                        "log-log slope", "grid_sample slope"], summary)]
        per_config = [[f"{size}×{size}", str(batch)]
                      + [_f(next(r["ratio"] for r in rows if r["group"] == g and r["op"] == op
                                 and (r["size"], r["batch"]) == (size, batch)))
                         for g in groups for op in ("act", "act_inverse")] for size, batch in configs]
        out += ["\nPer size and batch (act / act_inverse ratio):\n",
                _table(["size", "batch", *[f"{g} {op}" for g in groups for op in ("act", "act_inv")]], per_config),
                f"\n![group operations, {device}]({figure_name('groups', device)})"]
        if absolute:
            times = [[f"{size}×{size}", str(batch)]
                     + [_ms(next(r["seconds"] for r in rows if r["group"] == g and r["op"] == op
                                 and (r["size"], r["batch"]) == (size, batch)))
                        for g in groups for op in ("grid_sample[act]", "act")] for size, batch in configs]
            out += [f"\n### Absolute times, {device}: ms per call (median)\n",
                    _table(["size", "batch", *[f"{g} {'grid_sample' if op.startswith('grid') else op}"
                                               for g in groups for op in ("grid_sample[act]", "act")]], times)]
    return out


def _page_canonicalizers(payload: dict) -> list[str]:
    out = ["One update network (the DEC of `benchmarks/canonicalizers.py`, trained here), every kind on the same "
           "batch in evaluation mode without gradients. Iterations are forced (tolerance 1e-12). Invariance error: "
           "mean |canon(k₁·p).x − canon(k₂·p).x| over held-out pairs of warps of the same pattern. Ratio: time "
           "per image over the direct canonicalizer's (one network pass)."]
    for device, run, result, absolute in _measured(payload, "canonicalizers"):
        s = result["settings"]
        header = ["kind", "iterations / steps", "invariance error", "ratio to direct"]
        if absolute:
            header.insert(2, "ms per image")
        table = []
        for name, r in result["rows"].items():
            line = [r["family"], "–" if r["iterations"] is None else str(r["iterations"]),
                    _f(r["invariance_error"], 5), _f(r["ratio_to_direct"])]
            if absolute:
                line.insert(2, _f(r["ms_per_image"]))
            table.append(line)
        out += _device_block("canonicalizers", device, run,
                             f"Monotone R={s['cells']}, {s['size']}×{s['size']}×{s['channels']}, batch {s['batch']}, "
                             f"network {s['channels']}→{'→'.join(map(str, s['widths']))}, trained "
                             f"{s['train_steps']} steps ({result['train_seconds']:.0f} s, final loss "
                             f"{_f(result['final_train_loss'], 4)}); optimization: {s['optimizer'][0]} lr "
                             f"{s['optimizer'][1]:g}.", _table(header, table))
    return out


def _page_latent(payload: dict) -> list[str]:
    out = ["Forward pass (evaluation mode, no gradients) of the bare timm model and of the same model wrapped with "
           "the monotone DEC (10 forced iterations) at block/stage 0, and at 0 and 1; ratio of medians, "
           "wrapped / bare (`benchmarks/latent_overhead.py`'s `build` and `time_all`)."]
    for device, run, result, absolute in _measured(payload, "latent"):
        header = ["model", "parameters (M)", "DEC@1 / bare", "DEC@2 / bare"]
        if absolute:
            header.insert(2, "bare ms per batch")
        table = []
        for name, r in sorted(result["rows"].items(), key=lambda kv: kv[1]["params"]):
            line = [f"`{name}`", f"{r['params'] / 1e6:.1f}", _f(r["dec@1"], 3), _f(r["dec@2"], 3)]
            if absolute:
                line.insert(2, _ms(r["bare_s"]))
            table.append(line)
        s = result["settings"]
        out += _device_block("latent", device, run,
                             f"Batch {result['batch']}, {s['size']}×{s['size']}, {s['iterations']} iterations, "
                             f"{s['repeats']} interleaved rounds.", _table(header, table))
    return out


def _page_training(payload: dict) -> list[str]:
    out = ["Optimizer steps (forward, backward, AdamW) of the `plain` and `dec` methods of "
           "`benchmarks/training.py` (its `BASE` and `METHODS`), in alternating segments. `dec` is the method as "
           "built by name (at the input's own resolution, the default); `dec@64` (where measured) solves on a 64 px "
           "copy, `dec@36` on a 36 px copy (`method.options.resolution`). `,ce`: the "
           "cross-entropy alone (`canon_weight=0`), without the canonicalization loss's extra solves on "
           "transformed inputs (the DEC's training step before issue 12)."]
    for device, run, result, absolute in _measured(payload, "training"):
        s = result["settings"]
        ref = result["reference"]
        header = ["method", f"slowdown vs {ref}", "solver step returned (mean)", "converged fraction"]
        if absolute:
            header[1:1] = ["images / s", "ms per step (median)"]
        table = []
        for m, r in result["rows"].items():
            line = [m, _f(r[f"slowdown_vs_{ref}"]), _f(r["stats"].get("steps")), _f(r["stats"].get("converged"))]
            if absolute:
                line[1:1] = [f"{r['images_per_s']:.0f}", _f(r["ms_per_step"], 1)]
            table.append(line)
        shape = "×".join(map(str, result["image_shape"]))
        out += _device_block("training", device, run,
                             f"Batch {result['batch']} of {shape} images ({result['train_images']} composites, "
                             f"cycled); {s['segments']} segments of {s['steps_per_segment']} steps per method after "
                             f"{s['warmup_steps']} warm-up steps.", _table(header, table))
    return out


PAGE_SECTIONS = {"groups": ("Group operations", _page_groups),
                 "canonicalizers": ("Canonicalizers", _page_canonicalizers),
                 "latent": ("Latent canonicalization", _page_latent),
                 "training": ("Training throughput", _page_training)}


def page(payload: dict) -> str:
    """The results page, from the JSON payload alone."""
    m = payload["machine"]
    absolute = absolute_device(payload)
    lines = ["# Performance suite", "",
             f"Written by `benchmarks/suite.py` from `{JSON_NAME}`; measured with `{payload['command']}`. "
             f"Regenerate this page and its figures without measuring: "
             f"`python benchmarks/suite.py --from-json docs/results/{JSON_NAME} --page`."]
    if payload["quick"]:
        lines += ["", "**Quick mode: a pipeline check with tiny sizes and models; these numbers measure nothing.**"]
    lines += ["", "## Machine", "",
              f"- {describe_machine(m)} Platform: {m['platform']}.",
              "- Devices measured: " + ", ".join(f"{d} ({r['device_name']})" for d, r in payload["runs"].items())
              + ". "
              + ("Absolute times are from the GPU; ratios from every device."
                 if absolute == "cuda" else
                 "No GPU in this run: absolute times are from the CPU (shared with other work; the ratios, "
                 "measured side by side, are the numbers to compare)."),
              "", "Wall time per section (s):", "",
              _table(["device", *[title for title, _ in PAGE_SECTIONS.values()]],
                     [[d, *[_f(r[s]["wall_seconds"], 0) if s in r else "–" for s in PAGE_SECTIONS]]
                      for d, r in payload["runs"].items()])]
    for section, (title, render) in PAGE_SECTIONS.items():
        lines += ["", f"## {title}", ""]
        if section in payload["sections"]:
            lines += render(payload)
        else:
            lines += [f"Not measured in this run (`--sections {section}` measures it)."]
    return "\n".join(lines) + "\n"
