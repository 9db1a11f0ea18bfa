"""The controlled long-range task's figures (PNG, matplotlib Agg), all drawn from longrange.json's numbers:
longrange.png (seeds solved per cell × d; the ablation's diagnostics), survival.png (share of seeds solved against
steps, per cell and d) and steps_vs_d.png (median steps to success against d, log–log, each cell's fitted slope)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.experiments.figures import pyplot, save_figure
from pipeline.experiments.longrange_report import RATIO, cell_text, ran


def plot_grid(result: dict[str, Any], path: Path) -> Path:
    """Left: seeds solved per cell × d (colour: success rate; grey: beyond the frontier or not run). Right: the
    2 × 2 ablation's cue-gradient ratio and readout slope at the end of training, per d."""
    plt = pyplot()
    s, cells = result["settings"], result["cells"]
    ds, grid = s["distances"], [n for n, c in cells.items() if c["role"] == "grid"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(19, 0.7 * len(grid) + 3), gridspec_kw={"width_ratios": [2.2, 1]})
    rate = np.full((len(grid), len(ds)), np.nan)
    for i, n in enumerate(grid):
        for j, d in enumerate(ds):
            b = cells[n]["by_d"].get(str(d))
            if ran(b):
                rate[i, j] = b["success_rate"]
            ax.text(j, i, cell_text(b, s["steps"]).replace("; ", "\n").replace(" [", "\n["), ha="center",
                    va="center", fontsize=7)
    ax.imshow(np.ma.masked_invalid(rate), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", alpha=0.5)
    ax.set_xticks(range(len(ds)), [str(d) for d in ds])
    ax.set_yticks(range(len(grid)), [f"{n}\n{cells[n]['start']}, lr {cells[n]['lr']:g}" for n in grid], fontsize=8)
    ax.set(xlabel="distance d (each model trained at that d only)",
           title=f"seeds solved (test accuracy ≥ {s['success']}) within {s['steps']:,} steps; median steps")
    ab = result.get("ablation")
    if ab:
        for i, n in enumerate(ab["cells"]):
            x, ratio, slope = [], [], []
            for d in ab["distances"]:
                b = ab["by_d"][n].get(str(d))
                v = (b or {}).get("diagnostics", {})
                if ran(b) and v:
                    x.append(d)
                    ratio.append(v[RATIO]["end"] or np.nan)
                    slope.append(v["lstm_readout_slope"]["end"])
            ax2.plot(x, ratio, "-o", color=f"C{i}", label=f"{n}: {RATIO}")
            ax2.plot(x, slope, ":s", color=f"C{i}", label=f"{n}: readout slope")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xticks(ab["distances"], [str(d) for d in ab["distances"]])
        ax2.set(xlabel="distance d", title="the 2 × 2 ablation at the end of training (medians over seeds)\n"
                                            "cue/last-distractor gradient (solid), 1 − tanh²(c_T) (dotted)")
        ax2.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


def plot_survival(result: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per cell: the share of seeds solved by each step, one line per d."""
    plt = pyplot()
    s = result["settings"]
    names = list(dict.fromkeys(r["cell"] for r in rows)) or ["(none)"]
    cols = 4
    fig, axes = plt.subplots((len(names) + cols - 1) // cols, cols, figsize=(4.5 * cols, 3.2 * ((len(names) + cols - 1)
                                                                                                // cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        mine = [r for r in rows if r["cell"] == name]
        for k, d in enumerate(sorted({r["d"] for r in mine})):
            pts = sorted((r["step"], r["share"]) for r in mine if r["d"] == d)
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=f"C{k}", label=f"d={d}")
        ax.set(title=name, xlim=(0, s["steps"]), ylim=(-0.03, 1.03), xlabel="training steps",
               ylabel="share of seeds solved")
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return save_figure(fig, path, dpi=100)


def plot_steps(result: dict[str, Any], path: Path) -> Path:
    """Median steps to success against d, log–log, with each cell's fitted line; the step cap dashed."""
    plt = pyplot()
    s = result["settings"]
    fig, ax = plt.subplots(figsize=(8, 6))
    for i, (name, f) in enumerate(result["slopes"].items()):
        if result["cells"][name]["role"] != "grid" or not f["points"]:
            continue
        x, y = zip(*f["points"])
        label = name + (f": slope {f['slope']:.2f}" if f["slope"] is not None else "")
        ax.plot(x, y, "o", color=f"C{i % 10}", label=label)
        if f["slope"] is not None:
            xx = np.array([min(x), max(x)], dtype=float)
            ax.plot(xx, np.exp(f["intercept"]) * xx ** f["slope"], "-", color=f"C{i % 10}", lw=1)
    ax.axhline(s["steps"], color="grey", ls="--", lw=0.8, label=f"step cap {s['steps']:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(s["distances"], [str(d) for d in s["distances"]])
    ax.set(xlabel="distance d", ylabel="median steps to success",
           title="steps to success against d (where at least half the seeds solved)")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)
