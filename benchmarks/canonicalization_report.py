"""The page, plot and figures of ``benchmarks/canonicalization.py``, made from its JSON alone (and, for the figures,
the canonical forms each run saved): the table over seeds, the floors section and the figure links."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from equican.report import image_grid

METRICS = ("ratio", "pair_ratio", "spread", "ink", "radius", "converged", "residual", "seconds")
"""The numbers of every checkpoint, in table order."""


FIGURE_TAGS = {"pairs", "train10"}
"""Runs whose tags are all in here are drawn; the other settings are ablations, read in the table."""


def shown(name: str, names: Any) -> bool:
    """Whether run ``name`` is drawn: only the main settings' runs, and of a DEC the one trained with 10 iterations
    where there is one."""
    tags = set(name.split("/")[1:])
    return tags <= FIGURE_TAGS and f"{name}/train10" not in names


def forms_figures(directories: list[Path], out: Path) -> list[Path]:
    """One figure per digit count: two renderings of each held-out composite (columns), then each run's canonical
    forms of both (a canonicalizer that works makes its two rows look alike)."""
    found: dict[str, dict[str, Any]] = {}
    for directory in directories:
        for path in sorted((directory / "forms").glob("*.pt")):
            found[path.stem.replace("~", "/")] = torch.load(path, weights_only=True)
    written = []
    for digits in ("1", "2", "3"):
        names = [n for n in found if digit_count(n) == digits and shown(n, found)]
        if not names:
            continue
        first = found[names[0]]
        rows = [("rendering 1", first["a"]), ("rendering 2", first["b"])]
        for name in names:
            short = name.split("/")[0].replace(f"@{digits}digits", "")
            tags = name[len(name.split("/")[0]):]
            rows += [(f"{short}{tags}: 1", found[name]["ca"]), (f"{short}{tags}: 2", found[name]["cb"])]
        fig = image_grid(rows, title=f"{digits}-digit composites: two renderings and their canonical forms")
        path = out / f"canonical_forms_{digits}digit{'s' if digits != '1' else ''}.png"
        fig.savefig(path, dpi=70)
        written.append(path)
    return written


def digit_count(name: str) -> str:
    """The digits per composite of run ``name`` (``"2"`` for ``dec[monotone]@2digits/pairs``)."""
    return name.split("@")[1][0] if "@" in name else "1"


def summarize(results: dict[str, list[dict[str, float]]]) -> list[tuple[str, dict[str, Any]]]:
    """One row per (run, step count): the mean of each metric over seeds, and its spread (half the range)."""
    rows = []
    for name, entries in sorted(results.items(), key=lambda item: (digit_count(item[0]), "/pairs" in item[0], item[0])):
        for steps in sorted({e["steps"] for e in entries}):
            group = [e for e in entries if e["steps"] == steps]
            row: dict[str, Any] = {"seeds": len(group)}
            for key in METRICS:
                values = [e[key] for e in group if key in e and math.isfinite(e[key])]
                if values:
                    row[key] = sum(values) / len(values)
                    row[f"{key}_pm"] = (max(values) - min(values)) / 2
            rows.append((f"{name} @ {steps} steps", row))
    return rows


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """The markdown table: mean (± half the range over seeds, when there are several)."""
    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return "-"
        pm = f" ± {row[key + '_pm']:.3f}" if row["seeds"] > 1 and key != "seconds" else ""
        return f"{row[key]:.{0 if key == 'seconds' else 3}f}{pm}"

    header = ["run", "seeds", "ratio", "pair ratio", "spread", "ink", "radius", "DEQ converged", "DEQ residual",
              "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for label, row in summarize(results):
        lines.append("| " + " | ".join([label, str(row["seeds"])] + [cell(row, k) for k in METRICS]) + " |")
    return "\n".join(lines)


def page(payload: dict[str, Any]) -> str:
    """The markdown page, from the JSON alone."""
    commands = "\n".join(f"    {c}" for c in payload["commands"])
    reference = ", ".join(f"{d} digit{'s' if d != '1' else ''}: spread {v['spread']:.3f}, ink {v['ink']:.3f}, "
                          f"radius {v['radius']:.3f}" for d, v in sorted(payload["oracle"].items()))
    return (f"# Self-supervised canonicalization: the frontier\n\nCommands (each 1 thread; run side by side on a "
            f"2-core machine shared with other work, so the seconds are indicative only):\n\n{commands}\n\n"
            f"Each canonicalizer trains alone on the canonicalization loss (no labels) and is measured on held-out "
            f"composites. **ratio**: canonical-form error over the identity's under the group's own sampler (1: no "
            f"better than not canonicalizing). **pair ratio**: the same on the data's own nuisance, two renderings of "
            f"each composite at independent per-digit scales. **spread**: canonical forms of distinct inputs apart, "
            f"over the identity's. **ink**, **radius**: ink mass and radius of the canonical forms over the inputs' "
            f"(a shrink by s gives s² and s). An oracle that renders every digit at scale 1 scores {reference}: "
            f"numbers near the oracle's are what normalizing size looks like (large digits shrink, small ones "
            f"grow), numbers far below them are a collapse. Run names: `@2digits` two-digit composites, `/pairs` trained on the data's own pairs, `/s4` "
            f"the group's sampler at 4x its chart strength, `/element` the element target, `/blur1.5` the input "
            f"target on canonical forms blurred by a Gaussian of 1.5 px, `/res48` a 48 px working resolution, "
            f"`/train10` a DEC trained with 10 Anderson iterations (5 otherwise), `/eval5` one evaluated with 5 "
            f"(10 otherwise), `/lr0.0003` Adam at 3e-4, `/long` a separate longer run. The oracles are of each "
            f"data setting: two- and three-digit composites draw scales in [0.5, 1.25], so their scale-1 "
            f"renderings are larger than the inputs on average.\n\n"
            f"{table(payload['results'])}\n{floors_text(payload.get('floors', {}))}{figures_text(payload)}")


def figures_text(payload: dict[str, Any]) -> str:
    """Links to the frontier plot and, per digit count, the figure of composites above their canonical forms."""
    lines = ["", "## Figures", "", "![ratio and pair ratio against steps](canonicalization.png)", ""]
    for digits in sorted(payload["oracle"]):
        name = f"canonical_forms_{digits}digit{'s' if digits != '1' else ''}.png"
        lines += [f"![{digits}-digit composites, two renderings each, above their canonical forms]({name})", ""]
    return "\n".join(lines)


def floors_text(found: dict[str, dict[str, Any]]) -> str:
    """The floors section of the page (empty without floors)."""
    if not found:
        return ""
    lines = ["", "## What limits the numbers", "",
             "**Resampling floor** (the ratio of a canonicalizer that is exactly equivariant and leaves each input "
             "as its own canonical form: `|act(k⁻¹, act(k, x)) − x|` over `|act(k, x) − x|` with the ratio's own "
             "elements). The default samplers draw small elements, so the blur of resampling twice is a sizeable "
             "part of the difference the ratio divides by:", ""]
    for digits, entry in sorted(found.items()):
        values = ", ".join(f"{g} {v:.3f}" for g, v in sorted(entry["resampling"].items()))
        lines.append(f"* {digits} digit{'s' if digits != '1' else ''}: {values}")
    for digits, entry in sorted(found.items()):
        if "scale_oracle" in entry:
            oracle = entry["scale_oracle"]
            lines += ["", f"**Scale oracle** (one digit: the size normalizer that knows every digit's scale and undoes "
                          f"it exactly with the scale group): ratio {oracle['ratio']:.3f} under the scale group's "
                          f"sampler, pair ratio {oracle['pair_ratio']:.3f}. A learned canonicalizer of one global "
                          f"scale cannot beat these on this data.", ""]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Ratio and pair ratio against training steps, one line per main run (seed means; the ablations are in the
    table): colour by group, line style by digits per composite, open markers for the direct kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"monotone": "tab:blue", "scale": "tab:orange", "affine": "tab:green", "rotation": "tab:red"}
    styles = {"1": "-", "2": "--", "3": ":"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for name, entries in payload["results"].items():
        if not shown(name, payload["results"]):
            continue
        steps = sorted({e["steps"] for e in entries})
        group = name.split("[")[1].split("]")[0]
        for ax, key in zip(axes, ("ratio", "pair_ratio")):
            means = [sum(e[key] for e in entries if e["steps"] == s) / sum(e["steps"] == s for e in entries)
                     for s in steps]
            ax.plot(steps, means, marker="o", label=name, color=colours.get(group, "black"),
                    linestyle=styles[digit_count(name)], markerfacecolor="white" if name.startswith("direct") else None)
    for ax, title in zip(axes, ("group sampler: ratio", "data's own rescalings: pair ratio")):
        ax.set_xscale("log")
        ax.set_xlabel("training steps")
        ax.set_title(title)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("canonical-form error / identity's")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
