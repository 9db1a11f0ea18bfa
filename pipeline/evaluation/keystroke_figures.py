"""Keystroke savings as tables (the typist is keystrokes.py): KSR per text kind with document-clustered intervals
(the ratio bootstrap of pipeline/evaluation/bootstrap.py), paired differences, taps by characters typed, echo."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import EvalConfig
from pipeline.evaluation.bootstrap import cell_seed, interval, replicates
from pipeline.evaluation.distance import ECHO_WINDOW
from pipeline.evaluation.text_kinds import ALL, ScoredWords


def keystroke_tables(words: ScoredWords, runs: dict[str, dict[str, Any]], ec: EvalConfig,
                     reference: str | None = None) -> dict[str, Any]:
    """Per text kind (and pooled "all" when there are several): n, documents, keystrokes without the bar, and per
    model KSR with its clustered 95 % interval, its paired difference from `reference`, the share of words tapped
    after 0, 1 and 2 characters and never offered, and the echo rate beside the text's own repeat rate."""
    if not runs:
        return {}
    first = next(iter(runs.values()))
    length = np.asarray(first["length"], dtype=np.float64)
    without = length + 1
    kinds = words.kinds()
    masks = {k: words.kind == k for k in kinds}
    if len(kinds) > 1:
        masks[ALL] = np.ones(len(words), bool)
    out: dict[str, Any] = {}
    for kind, mask in masks.items():
        if not mask.any():
            continue
        saved = {}
        for name, r in runs.items():
            t = np.asarray(r["typed"], dtype=np.float64)
            saved[name] = (without - np.where(t >= 0, t + 1, without))[mask]
        clusters = words.cluster[mask]
        reps = replicates(clusters, saved, ec.bootstrap_replicates, cell_seed(ec.bootstrap_seed, f"ksr:{kind}"),
                          weights=without[mask])
        total = float(without[mask].sum())
        repeat = float(np.mean(np.asarray(first["repeat"], dtype=bool)[mask]))
        cell: dict[str, Any] = {"n": int(mask.sum()), "documents": int(len(np.unique(words.doc[mask]))),
                                "clusters": int(len(np.unique(clusters))), "keystrokes_without": int(total),
                                "text_repeat_rate": repeat, "reference": reference, "models": {}, "paired": {}}
        for name, r in runs.items():
            t = np.asarray(r["typed"])[mask]
            lo, hi = interval(reps[name])
            echo = np.asarray(r["echo"], dtype=np.float64)[mask]
            cell["models"][name] = {
                "ksr": float(saved[name].sum() / total), "low": lo, "high": hi,
                "tapped_after": {str(c): float(np.mean(t == c)) for c in (0, 1, 2)},
                "never_offered": float(np.mean(t < 0)),
                "echo_rate": float(echo.sum() / (r["slots"] * len(echo)))}
            if reference in runs and name != reference:
                lo, hi = interval(reps[name] - reps[reference])
                cell["paired"][name] = {"diff": cell["models"][name]["ksr"] - float(saved[reference].sum() / total),
                                        "low": lo, "high": hi}
        out[kind] = cell
    return out


def keystroke_metrics(tables: dict[str, Any], name: str, split: str) -> dict[str, float]:
    """MLflow names: test/ksr (pooled), test/prose/ksr, test/prose/ksr_tapped_after_0, test/prose/echo_rate,
    test/prose/text_repeat_rate."""
    m: dict[str, float] = {}
    pooled = ALL if ALL in tables else next(iter(tables), None)
    for kind, c in tables.items():
        v = c["models"].get(name)
        if v is None:
            continue
        bases = ([f"{split}/"] if kind == pooled else []) + ([f"{split}/{kind}/"] if kind != ALL else [])
        for base in bases:
            m[f"{base}ksr"] = v["ksr"]
            m[f"{base}echo_rate"] = v["echo_rate"]
            m[f"{base}text_repeat_rate"] = c["text_repeat_rate"]
            for chars, share in v["tapped_after"].items():
                m[f"{base}ksr_tapped_after_{chars}"] = share
            if name in c["paired"]:
                m[f"{base}ksr_minus_{c['reference']}"] = c["paired"][name]["diff"]
    return m


def ksr_text(v: dict[str, Any] | None) -> str:
    return "—" if v is None else f"{100 * v['ksr']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def keystroke_lines(tables: dict[str, Any], names: list[str] | None = None, width: int = 28) -> list[str]:
    """The keystroke savings tables as text, one block per kind."""
    lines = []
    for kind, c in tables.items():
        names_here = names or list(c["models"])
        lines += [f"keystroke savings, {kind}: {c['n']:,} words in {c['documents']:,} documents "
                  f"({c['keystrokes_without']:,} keystrokes without the bar); KSR % [95 % document-clustered "
                  f"bootstrap]; echo: the bar's words that repeat one of the last {ECHO_WINDOW} words (the text "
                  f"itself repeats one {100 * c['text_repeat_rate']:.1f} % of the time)",
                  f"  {'model':<{width}}{'KSR %':>22}{'tapped after 0/1/2 chars %':>30}{'never %':>9}{'echo %':>8}"]
        for name in names_here:
            v = c["models"].get(name)
            if v is None:
                continue
            after = "/".join(f"{100 * v['tapped_after'][k]:.0f}" for k in ("0", "1", "2"))
            lines.append(f"  {name:<{width}}{ksr_text(v):>22}{after:>30}{100 * v['never_offered']:>9.1f}"
                         f"{100 * v['echo_rate']:>8.1f}")
        for name, p in c["paired"].items():
            if name in names_here:
                diff = f"{100 * p['diff']:+.1f} [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"
                lines.append(f"  {name + ' − ' + c['reference']:<{width}}{diff:>22}")
    return lines


def keystroke_rows(tables: dict[str, Any], reference: str | None) -> list[list]:
    """keystrokes.csv: one row per kind and model."""
    rows: list[list] = [["kind", "n", "documents", "model", "ksr", "low95", "high95", f"minus_{reference}",
                         "diff_low95", "diff_high95", "tapped_after_0", "tapped_after_1", "tapped_after_2",
                         "never_offered", "echo_rate", "text_repeat_rate"]]
    for kind, c in tables.items():
        for name, v in c["models"].items():
            p = c["paired"].get(name, {})
            rows.append([kind, c["n"], c["documents"], name, v["ksr"], v["low"], v["high"], p.get("diff"),
                         p.get("low"), p.get("high"), *(v["tapped_after"][x] for x in ("0", "1", "2")),
                         v["never_offered"], v["echo_rate"], c["text_repeat_rate"]])
    return rows
