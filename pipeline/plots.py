"""Evaluation plots (PNG, matplotlib Agg): one line per model, chance drawn where there is one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.distance import DISTANCE_BUCKETS  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def distance_plot(results: dict[str, Any], path: Path) -> Path:
    k = results["k"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, metric in zip(axes, ("top1", f"top{k}")):
        for name, r in results["models"].items():
            ys = [r["by_distance"][b][metric] for b in DISTANCE_BUCKETS]
            ax.plot(range(len(ys)), [float("nan") if y is None else y for y in ys], marker="o", label=name)
        ax.set_xticks(range(len(DISTANCE_BUCKETS)), DISTANCE_BUCKETS)
        ax.set_xlabel("words since the target last occurred")
        ax.set_title(f"{metric} accuracy by distance")
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    return _save(fig, path)


def context_plot(results: dict[str, Any], path: Path) -> Path:
    k = results["k"]
    fig, ax = plt.subplots(figsize=(6, 4))
    n = 0
    for name, r in results["models"].items():
        curve = r["context"]["curve"]
        n = r["context"]["positions"]
        labels = list(curve)
        for metric, style in (("top1", "-o"), (f"top{k}", "--s")):
            ys = [curve[c][metric] for c in labels]
            ax.plot(range(len(labels)), [float("nan") if y is None else y for y in ys], style,
                    label=f"{name} {metric}")
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("words of context the model may read")
    ax.set_ylabel("accuracy")
    ax.set_title(f"context-length curve ({n} positions of long documents)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def probe_plot(results: dict[str, Any], path: Path) -> Path | None:
    kinds = sorted({kind for r in results["models"].values() for kind in r.get("probes", {}).get("kinds", {})})
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        chance = None
        for name, r in results["models"].items():
            table = r.get("probes", {}).get("kinds", {}).get(kind)
            if not table:
                continue
            ds = [d for d in table if d != "all"]
            xs = [int(d) for d in ds]
            ys = [table[d]["accuracy"] for d in ds]
            err = [[y - table[d]["low"] for d, y in zip(ds, ys)], [table[d]["high"] - y for d, y in zip(ds, ys)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
            chance = [table[d]["chance"] for d in ds], xs
        if chance:
            ax.plot(chance[1], chance[0], ":", color="grey", label="chance")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("distance (words from cue to target)")
        ax.set_title(kind)
    axes[0][0].set_ylabel("accuracy (95% interval)")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    files = [distance_plot(results, out / "accuracy_by_distance.png"), context_plot(results, out / "context_length.png")]
    p = probe_plot(results, out / "probes_by_distance.png")
    return files + ([p] if p else [])
