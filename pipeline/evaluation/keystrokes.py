"""Keystroke savings (Trnka & McCoy 2008, "Evaluating word prediction: framing keystroke savings"): what a typist
saves with a suggestion bar of W slots (eval.keystroke_slots, 3 like a phone keyboard's bar).

The typist replays each document word by word. Before the word, and after each character typed, the bar shows the
model's top W for the prefix typed so far (the next word with no prefix; completions of it after that). If the word
is in the bar the typist taps it: one keystroke, and the space comes with it. Otherwise the typist types the next
character. A word never offered costs all its characters and a space. Keystrokes are Unicode code points of the
cleaned (NFC) word, which is what an InScript keyboard types: क्ष is three (क ् ष).

    without the bar:  Σ (len(w) + 1)            with it:  Σ (c_w + 1)   (c_w: characters typed before the tap)
    KSR = 1 − with / without                                             (c_w = len(w) for a word never offered)

Worked example, W = 3, the word आणि (3 code points: आ ण ि): the bar before it shows [व, आणि, या] → tapped after 0
characters: 1 keystroke instead of 4, 3 saved. The word सुमित्रा (8 code points) not offered until "सु" is typed →
2 + 1 = 3 keystrokes instead of 9. Together: 1 − (1 + 3) / (4 + 9) = 69 % saved.

Every scored word is typed (numerals too: they are typed); punctuation is typed with or without the bar and is
left out of both counts. The words are the evaluation's (every word of the split, or the seeded eval.max_words
sample); the intervals are the document-clustered bootstrap of the ratio (pipeline/evaluation/bootstrap.py).

The same bar also says how often a model echoes what was just typed: the top-W before a word that repeat one of the
last 3 words, beside how often the text itself repeats one of its last 3 words.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.config import EvalConfig
from pipeline.evaluation.bootstrap import cell_seed, interval, replicates
from pipeline.evaluation.text_kinds import ALL, ScoredWords

ECHO_WINDOW = 3  # "what was just typed": the last three words


def simulate(words: list[str], suggest: Callable[[list[int], list[str]], list[list[str]]], slots: int
             ) -> tuple[list[int], list[list[str]]]:
    """The typist on N words at once. suggest(rows, prefixes) gives the bar (top `slots`) for words[rows[i]] with
    prefixes[i] typed. Returns per word the characters typed before it was tapped (-1: never offered) and the bar
    shown before its first character. Rounds go by characters typed, so each call holds every word still typed."""
    typed, first = [-1] * len(words), [[] for _ in words]
    active, c = list(range(len(words))), 0
    while active:
        bars = suggest(active, [words[i][:c] for i in active])
        later = []
        for i, bar in zip(active, bars):
            if c == 0:
                first[i] = list(bar[:slots])
            if words[i] in bar[:slots]:
                typed[i] = c
            elif c + 1 < len(words[i]):  # with all but the last character typed, typing it is no dearer than a tap
                later.append(i)
        active, c = later, c + 1
    return typed, first


def run_scorer(scorer, tokens: list[list[str]], targets: list[list[int]], chosen: list[list[int]], slots: int
               ) -> dict[str, Any]:
    """One scorer's typist on the scored words (sampled_targets' output), in their order: per word the characters
    typed before the tap (-1: never), its length, the bar's echoes and whether the text itself repeats."""
    keep = [d for d, c in enumerate(chosen) if c]
    want = [[targets[d][i] for i in chosen[d]] for d in keep]
    cut = [tokens[d][:w[-1] + 1] for d, w in zip(keep, want)]
    n = sum(map(len, want))
    with tqdm(total=n, unit="word", desc=f"keystrokes {scorer.name}", unit_scale=True, leave=False) as bar:
        res = scorer.keystrokes(cut, want, slots, bar.update)
        elapsed = bar.format_dict.get("elapsed") or 0.0
    typed, length, echo, repeat = [], [], [], []
    for r, d in enumerate(keep):
        ws = [tokens[d][j] for j in targets[d]]
        for i in chosen[d]:
            t, shown = res[(r, targets[d][i])]
            recent = set(ws[max(0, i - ECHO_WINDOW):i])
            typed.append(t)
            length.append(len(ws[i]))
            echo.append(sum(w in recent for w in shown))
            repeat.append(ws[i] in recent)
    return {"slots": slots, "typed": typed, "length": length, "echo": echo, "repeat": repeat,
            "words_per_s": n / elapsed if elapsed > 0 else None}


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


def cli(args, cfg) -> int:
    """`python -m pipeline keystrokes --model REF [--data FILE] [--slots 3] [--mix net] [--no-baseline]`: the
    typist on the config's split (eval.split, eval.max_words) or FILE, for each model, its registered mixture and
    the n-gram; tables by kind, keystrokes.json/csv, metrics to each model's MLflow run."""
    import csv
    import dataclasses
    import json
    from pathlib import Path

    from pipeline.evaluation.evaluate import build_scorers, eval_documents, log_to_runs, sample_line, sampled_targets
    from pipeline.evaluation.text_kinds import scored_words

    slots = cfg.eval.keystroke_slots if args.slots is None else args.slots
    if not 1 <= slots <= 10:
        print(f"error: --slots is {slots}; a suggestion bar holds 1 to 10 words (phones show 3)", file=sys.stderr)
        return 2
    if not args.model and not args.baseline:
        print("error: nothing to replay: give --model REF (repeatable), or leave the n-gram on", file=sys.stderr)
        return 2
    ec = dataclasses.replace(cfg.eval, keystroke_slots=slots)
    scorers = build_scorers(cfg, args.model, args.baseline, args.mix)
    docs, sources, split = eval_documents(cfg, args.data)
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    words = scored_words(tokens, targets, chosen, sources, ec)
    runs = {s.name: run_scorer(s, tokens, targets, chosen, slots) for s in scorers}
    tables = keystroke_tables(words, runs, ec, scorers[0].name)
    print(sample_line(info))
    print("\n".join(keystroke_lines(tables)))
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "eval" / f"{cfg.name}-keystrokes-{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "keystrokes.json").write_text(json.dumps({"split": split, "slots": slots, "sample": info,
                                                     "tables": tables, "words_per_s": {
                                                         n: r["words_per_s"] for n, r in runs.items()}},
                                                    indent=1, ensure_ascii=False))
    with open(out / "keystrokes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(keystroke_rows(tables, scorers[0].name))
    print(f"wrote keystrokes.json and keystrokes.csv to {out}")
    results = {"models": {n: {"metrics": keystroke_metrics(tables, n, split)} for n in runs}}
    log_to_runs(cfg, scorers, results, out)
    return 0
