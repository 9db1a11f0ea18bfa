"""Evaluation plots (PNG, matplotlib Agg): one line per model, chance drawn where there is one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.evaluation.distance import DISTANCE_BUCKETS  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(y, lo, hi) -> list[np.ndarray]:
    """errorbar's yerr for an interval [lo, hi] around y, clipped at the point: an interval computed apart from its
    point (a bootstrap, a Wilson bound) can lie a rounding error on the wrong side of it, and matplotlib refuses a
    negative bar length ("'yerr' must not contain negative values"). Every errorbar here goes through this."""
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return [np.maximum(0.0, y - lo), np.maximum(0.0, hi - y)]


def _with_interval(ax, xs, cells: list[dict], name: str, **kw) -> None:
    """A model's accuracy points with their clustered 95 % bars (pipeline/evaluation/text_kinds.py cells); cells under
    MIN_N targets have no accuracy and are left out, as in the tables."""
    pts = [(x, c["models"][name]["acc"], c["models"][name]["low"], c["models"][name]["high"])
           for x, c in zip(xs, cells) if name in c["models"]]
    if pts:
        x, y, lo, hi = map(np.array, zip(*pts))
        ax.errorbar(x, y, yerr=_bars(y, lo, hi), marker="o", capsize=3, **kw)


def _panels(n: int, width: float = 4.6):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), 4), squeeze=False)
    return fig, list(axes[0])


def distance_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Top-1 by distance, one panel per text kind."""
    kinds = results.get("kinds", {})
    if not kinds:
        return None
    fig, axes = _panels(len(kinds))
    for ax, (kind, t) in zip(axes, kinds.items()):
        cells = [t["by_distance"][b] for b in DISTANCE_BUCKETS]
        for name in results["models"]:
            _with_interval(ax, range(len(DISTANCE_BUCKETS)), cells, name, label=name)
        ax.set_xticks(range(len(DISTANCE_BUCKETS)), [f"{b}\nn={c['n']}" for b, c in zip(DISTANCE_BUCKETS, cells)],
                      fontsize=7)
        ax.set_title(f"{kind} ({t['documents']} documents)", fontsize=9)
        ax.set_xlabel("words since the target last occurred")
    axes[0].set_ylabel("top-1 (95% document-clustered interval)")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def context_plot(results: dict[str, Any], path: Path) -> Path | None:
    """The context-length curves, one panel per text kind that has one."""
    curves = results.get("curves", {})
    if not curves:
        return None
    fig, axes = _panels(len(curves))
    for ax, (kind, t) in zip(axes, curves.items()):
        labels = list(t["curve"])
        for name in results["models"]:
            _with_interval(ax, range(len(labels)), [t["curve"][c] for c in labels], name, label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("words of context the model may read")
        ax.set_title(f"{kind}: {t['positions']} positions with >= {t['min_context_words']} words before them",
                     fontsize=8)
    axes[0].set_ylabel("top-1 (95% document-clustered interval)")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def ablation_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Δ(c), the context ablation's loss increase when only the last c words are kept, one panel per text kind, with
    its 95 % clustered bars (c = 0, everything replaced, is the context benefit: off the chart's log axis)."""
    kinds = {k: t for k, t in (results.get("ablation") or {}).get("kinds", {}).items() if t["models"]}
    if not kinds:
        return None
    fig, axes = _panels(len(kinds))
    for ax, (kind, t) in zip(axes, kinds.items()):
        cs = [c for c in t["lengths"] if c > 0]
        for name, r in t["models"].items():
            cells = [r["delta"][str(c)] for c in cs]
            y = [c["mean"] for c in cells]
            ax.errorbar(cs, y, yerr=_bars(y, [c["low"] for c in cells], [c["high"] for c in cells]), marker="o",
                        capsize=3, label=f"{name} (effective {r['effective'] or '> ' + str(max(cs))})")
        ax.axhline(0.01, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.set_xlabel("words of real context kept (c)")
        ax.set_title(f"{kind}: {t['positions']} positions, {t['documents']} documents", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Δ(c): loss increase, nats (95% clustered)")
    return _save(fig, path)


def probe_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Per probe kind: balanced accuracy (mean over answer classes, 95 % interval) by distance, chance dotted; below
    it the mean margin log P(right) - max log P(wrong). Summaries written before balanced accuracy show raw accuracy."""
    kinds = sorted({kind for r in results["models"].values() for kind in r.get("probes", {}).get("kinds", {})})
    if not kinds:
        return None
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.5 * len(kinds), 6.4), squeeze=False, sharex="col")
    for col, kind in enumerate(kinds):
        ax, mx = axes[0][col], axes[1][col]
        chance = None
        for name, r in results["models"].items():
            table = r.get("probes", {}).get("kinds", {}).get(kind)
            if not table:
                continue
            ds = sorted((d for d in table if d != "all"), key=int)
            xs = [int(d) for d in ds]
            ys = [table[d].get("balanced", table[d]["accuracy"]) for d in ds]
            lo = [table[d].get("balanced_low", table[d]["low"]) for d in ds]
            hi = [table[d].get("balanced_high", table[d]["high"]) for d in ds]
            line = ax.errorbar(xs, ys, yerr=_bars(ys, lo, hi), marker="o", capsize=3,
                               label=name)
            if all(table[d].get("margin") is not None for d in ds):
                mx.plot(xs, [table[d]["margin"] for d in ds], marker="o", color=line[0].get_color())
            chance = [table[d].get("balanced_chance", table[d]["chance"]) for d in ds], xs
        if chance:
            ax.plot(chance[1], chance[0], ":", color="grey", label="chance")
        mx.axhline(0, ls=":", color="grey")
        ax.set_xscale("log", base=2)
        if chance:
            mx.set_xticks(chance[1], [str(x) for x in chance[1]])
        ax.set_ylim(0, 1.02)
        ax.set_title(kind)
        mx.set_xlabel("distance (words from cue to target)")
    axes[0][0].set_ylabel("balanced accuracy (95% interval)")
    axes[1][0].set_ylabel("mean margin (nats)")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Every plot of an evaluation; a plot that fails is reported and skipped, never taking the command down (the
    tables are written before it)."""
    files = []
    for make, name in ((distance_plot, "accuracy_by_distance.png"), (context_plot, "context_length.png"),
                       (ablation_plot, "context_ablation.png"), (probe_plot, "probes_by_distance.png")):
        try:
            p = make(results, out / name)
        except Exception as e:  # noqa: BLE001 - a figure is never worth the command's results
            plt.close("all")
            print(f"warning: could not draw {name} ({type(e).__name__}: {e}); the tables and CSVs are written")
            continue
        if p is not None:
            files.append(p)
    return files
