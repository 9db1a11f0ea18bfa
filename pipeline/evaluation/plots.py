"""Evaluation plots (PNG, matplotlib Agg): one line per model, chance drawn where there is one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.evaluation.distance import DISTANCE_BUCKETS, POSITION_BUCKETS  # noqa: E402
from pipeline.evaluation.intervals import MIN_N, wilson  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _with_interval(ax, xs, rows: list[dict], metric: str, **kw) -> None:
    """Accuracy points with 95 % Wilson bars; buckets under MIN_N targets are left out (as in the tables)."""
    pts = [(x, r[metric], *wilson(round(r[metric] * r["n"]), r["n"])) for x, r in zip(xs, rows)
           if r["n"] >= MIN_N and r[metric] is not None]
    if pts:
        x, y, lo, hi = map(np.array, zip(*pts))
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, **kw)


def distance_plot(results: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, order, xlabel in ((axes[0], "by_distance", DISTANCE_BUCKETS, "words since the target last occurred"),
                                   (axes[1], "by_position", POSITION_BUCKETS, "words of context before the target")):
        for name, r in results["models"].items():
            _with_interval(ax, range(len(order)), [r[key][b] for b in order], "top1", label=name)
        first = next(iter(results["models"].values()))
        ax.set_xticks(range(len(order)), [f"{b}\nn={first[key][b]['n']}" for b in order], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 accuracy (95% interval)")
    axes[0].set_title("by distance to the word's last occurrence")
    axes[1].set_title("by position in the document")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def context_plot(results: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    n, first_ctx = 0, 0
    for name, r in results["models"].items():
        if not r["context"]["positions"]:
            continue  # no curve measured for this model (e.g. make run's mixture rows)
        curve = r["context"]["curve"]
        n, first_ctx = r["context"]["positions"], r["context"]["min_context_words"]
        labels = list(curve)
        _with_interval(ax, range(len(labels)), [curve[c] for c in labels], "top1", label=name)
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("words of context the model may read")
    ax.set_ylabel("top-1 accuracy (95% interval)")
    ax.set_title(f"context-length curve ({n} positions with >= {first_ctx} "
                 "words before them)", fontsize=9)
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
