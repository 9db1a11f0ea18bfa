"""Targeted probes (DESIGN §7): JSON Lines, one probe a line,

    {"context": str, "candidates": [str, ...], "answer": int, "distance": int, "kind": str}

Every candidate is scored as the next whole word after `context`; a probe is right when the answer scores highest.
Results are grouped by `kind` (any label: unknown kinds are reported, never dropped) and `distance` (words from the
cue word to the target). Per kind and distance: raw accuracy with chance (mean 1/#candidates) and a 95 % Wilson
interval; accuracy per *class* (the right answer's form); *balanced* accuracy, the mean of the per-class accuracies,
with its interval; and the mean *margin*, log P(answer) - max log P(wrong candidate) in nats. A model that always
answers `आहे` shows as 100 % on the class `आहे` and 0 % on the others, balanced at chance.

A kind's *ceiling* is its row at its shortest distance; it is *informative* for a model when the balanced accuracy's
95 % lower bound there is above chance. Only an informative kind's curve over distance says anything about how far
back a model reads: one at chance even at its shortest distance has nothing to lose.

The project's own set comes from probe_generation.generate: one frame per kind, its distance filled with real
training text (probe_constructions.py: which text, which words are kept out, and how often the training text holds
each frame). Scoring goes through the `Scorer` protocol's `score`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation.intervals import MIN_N, wilson
from pipeline.evaluation.probe_constructions import AGREEMENT, SURNAMES
from pipeline.evaluation.scorer import Scorer

KNOWN_KINDS = (*AGREEMENT, "recall")
MARGIN_CLIP = 50.0  # nats; a margin against -inf (a candidate a mixture gives probability 0) counts as ±50


class ProbeError(ValueError):
    """A probe file cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Probe:
    context: str
    candidates: tuple[str, ...]
    answer: int
    distance: int
    kind: str
    line: int = 0


# ---------------------------------------------------------------------------------------------------------- loading

def parse_line(text: str, where: str, line: int = 0) -> Probe:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one object "
                         '{"context", "candidates", "answer", "distance", "kind"}') from None
    if not isinstance(obj, dict):
        raise ProbeError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key, types in (("context", str), ("candidates", list), ("answer", int), ("distance", int), ("kind", str)):
        if key not in obj:
            raise ProbeError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], types) or isinstance(obj[key], bool):
            raise ProbeError(f"{where}: field '{key}' must be {types.__name__}, got {type(obj[key]).__name__}")
    cands = obj["candidates"]
    if len(cands) < 2:
        raise ProbeError(f"{where}: needs at least 2 candidates, got {len(cands)}")
    if not all(isinstance(c, str) and c.strip() and len(c.split()) == 1 for c in cands):
        raise ProbeError(f"{where}: every candidate must be one non-empty word")
    if not 0 <= obj["answer"] < len(cands):
        raise ProbeError(f"{where}: answer {obj['answer']} is out of range; it indexes candidates "
                         f"(0..{len(cands) - 1})")
    if obj["distance"] < 0:
        raise ProbeError(f"{where}: distance must be >= 0, got {obj['distance']}")
    return Probe(obj["context"], tuple(c.strip() for c in cands), obj["answer"], obj["distance"], obj["kind"], line)


def load_probes(path: str | Path) -> list[Probe]:
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe file {path} does not exist; generate the project's set with "
                         "`python -m pipeline probe --generate` or pass --probes FILE")
    probes = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                probes.append(parse_line(text, f"{path}, line {number}", number))
    if not probes:
        raise ProbeError(f"probe file {path} holds no probes")
    return probes


# ---------------------------------------------------------------------------------------------------------- scoring

def score_probes(scorer: Scorer, probes: list[Probe], batch: int = 256) -> list[list[float]]:
    """log P(candidate | context) for every candidate, through the scorer's `score(contexts, candidates)`."""
    out: list[list[float]] = []
    for i in range(0, len(probes), batch):
        part = probes[i:i + batch]
        out += scorer.score([p.context for p in part], [list(p.candidates) for p in part])
    return out


def margin(scores: list[float], answer: int) -> float:
    """log P(answer) - max log P(wrong candidate), clipped to ±MARGIN_CLIP (0 when both are -inf)."""
    right, wrong = scores[answer], max(s for i, s in enumerate(scores) if i != answer)
    if right == wrong:
        return 0.0
    return max(-MARGIN_CLIP, min(MARGIN_CLIP, right - wrong))


def _class_order(kind: str) -> list[str]:
    """Answer classes in the generator's order (subjects' forms, surnames); others alphabetical after them."""
    return list(AGREEMENT[kind].values()) if kind in AGREEMENT else list(SURNAMES) if kind == "recall" else []


def _row(items: list[tuple[Probe, bool, float]], order: list[str]) -> dict[str, Any]:
    """One table cell: raw, per-class and balanced accuracy, chance, intervals, margin."""
    n = len(items)
    correct = sum(r for _, r, _ in items)
    low, high = wilson(correct, n)
    by_class: dict[str, list[tuple[Probe, bool, float]]] = {}
    for it in items:
        by_class.setdefault(it[0].candidates[it[0].answer], []).append(it)
    per_class = {c: {"n": len(v), "correct": sum(r for _, r, _ in v), "accuracy": sum(r for _, r, _ in v) / len(v),
                     "margin": sum(m for _, _, m in v) / len(v)}
                 for c, v in sorted(by_class.items(), key=lambda cv: (cv[0] not in order, order.index(cv[0])
                                                                      if cv[0] in order else 0, cv[0]))}
    k = len(per_class)
    balanced = sum(c["accuracy"] for c in per_class.values()) / k
    # the mean of k proportions has the variance of one proportion over n_eff = k^2 / sum(1 / n_c) trials (= n when
    # every class has n/k probes, as in minimal-pair groups, where balanced = raw accuracy)
    n_eff = k * k / sum(1 / c["n"] for c in per_class.values())
    b_low, b_high = wilson(balanced * n_eff, n_eff)
    return {"n": n, "correct": correct, "accuracy": correct / n,
            "chance": sum(1 / len(p.candidates) for p, _, _ in items) / n, "low": low, "high": high,
            "balanced": balanced, "balanced_low": b_low, "balanced_high": b_high,
            "balanced_chance": sum(sum(1 / len(p.candidates) for p, _, _ in by_class[c]) / len(by_class[c])
                                   for c in per_class) / k,
            "margin": sum(m for _, _, m in items) / n, "per_class": per_class}


def summarize(probes: list[Probe], scores: list[list[float]]) -> dict[str, Any]:
    """{"probes": n, "kinds": {kind: {distance | "all": row}}, "unknown_kinds": {kind: n}, "ceilings": {kind: ceiling},
    "informative_kinds": [kind, ...]}; row = n, correct, accuracy, chance, low, high (raw), balanced, balanced_low,
    balanced_high, balanced_chance, margin, per_class {answer form: n, correct, accuracy, margin}."""
    groups: dict[str, dict[Any, list[tuple[Probe, bool, float]]]] = {}
    for p, s in zip(probes, scores):
        right = max(range(len(s)), key=lambda i: s[i]) == p.answer
        by_d = groups.setdefault(p.kind, {})
        for key in (p.distance, "all"):
            by_d.setdefault(key, []).append((p, right, margin(s, p.answer)))
    kinds = {kind: {str(key): _row(groups[kind][key], _class_order(kind))
                    for key in sorted(k for k in groups[kind] if k != "all") + ["all"]} for kind in sorted(groups)}
    unknown = {k: len([p for p in probes if p.kind == k]) for k in kinds if k not in KNOWN_KINDS}
    summary = {"probes": len(probes), "kinds": kinds, "unknown_kinds": unknown}
    ceil = ceilings(summary)
    return summary | {"ceilings": ceil, "informative_kinds": [k for k, c in ceil.items() if c["informative"]]}


def ceilings(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kind, its ceiling: the row at its shortest distance, the most that any longer distance can be expected to
    show; `informative` when the balanced accuracy's 95 % lower bound there is above chance (raw accuracy for a
    summary written before balanced accuracy existed). Works on any summary."""
    out = {}
    for kind, table in summary["kinds"].items():
        shortest = min((d for d in table if d != "all"), key=int)
        row = table[shortest]
        low, chance = row.get("balanced_low", row["low"]), row.get("balanced_chance", row["chance"])
        out[kind] = {"distance": int(shortest), **row, "informative": low > chance}
    return out


def _pct(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:.1f}"


def format_summary(name: str, summary: dict[str, Any]) -> str:
    lines = [f"{name}: {summary['probes']} probes"]
    for kind, table in summary["kinds"].items():
        lines.append(f"  {kind}")
        lines.append(f"    {'distance':>8} {'n':>5} {'accuracy':>9} {'balanced':>9}  {'95% interval':<16} "
                     f"{'margin':>7} {'chance':>7}  per class (accuracy)")
        for d, r in table.items():
            classes = "  ".join(f"{c} {v['accuracy']:.2f}" for c, v in r.get("per_class", {}).items())
            b = r.get("balanced", r["accuracy"])
            lo, hi = r.get("balanced_low", r["low"]), r.get("balanced_high", r["high"])
            m = f"{r['margin']:>+7.2f}" if r.get("margin") is not None else f"{'—':>7}"
            lines.append(f"    {d:>8} {r['n']:>5} {r['accuracy']:>9.3f} {b:>9.3f}  [{lo:.3f}, {hi:.3f}]   {m} "
                         f"{r['chance']:>7.3f}  {classes}")
        c = (summary.get("ceilings") or ceilings(summary))[kind]
        lines.append(f"    ceiling (d={c['distance']}): balanced {c.get('balanced', c['accuracy']):.3f} "
                     f"[{c.get('balanced_low', c['low']):.3f}, {c.get('balanced_high', c['high']):.3f}], chance "
                     f"{c['chance']:.3f}: " + ("informative" if c["informative"] else
                                               "not informative (at chance even at its shortest distance, so it "
                                               "says nothing about distance)"))
    if summary["unknown_kinds"]:
        lines.append("  note: kinds not generated by this project (scored and reported as they are): " +
                     ", ".join(f"{k} ({n})" for k, n in summary["unknown_kinds"].items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------- report

def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _cell(row: dict[str, Any] | None) -> str:
    """'62.5 [53.6, 70.6] / +0.84': balanced accuracy % [95 %] / mean margin (nats); '—' when n < MIN_N."""
    if row is None or row["n"] < MIN_N:
        return "—"
    b, lo, hi = (row.get(k, row[o]) for k, o in (("balanced", "accuracy"), ("balanced_low", "low"),
                                                 ("balanced_high", "high")))
    m = f" / {row['margin']:+.2f}" if row.get("margin") is not None else ""
    return f"{_pct(b)} [{_pct(lo)}, {_pct(hi)}]{m}"


def _constant(row: dict[str, Any]) -> str | None:
    """The form a model gives whatever the cue: one class >= 90 % right, every other <= 10 %."""
    pc = row.get("per_class", {})
    top = [c for c, v in pc.items() if v["accuracy"] >= 0.9]
    if len(pc) > 1 and len(top) == 1 and all(v["accuracy"] <= 0.1 for c, v in pc.items() if c != top[0]):
        return top[0]
    return None


def report_lines(scored: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The experiment report's "Probes by distance" section from (model, probe summary) pairs: per kind, balanced
    accuracy [95 %] and margin per model by distance, per-class accuracy at the shortest distance, and whether the
    kind is informative (some model's balanced accuracy above chance at its shortest distance), which decides whether
    the report's reading may use its curve."""
    scored = [(name, s) for name, s in scored if s and s.get("kinds")]
    L = ["## Probes by distance", ""]
    kinds = sorted({k for _, s in scored for k in s["kinds"]})
    if not kinds:
        return L + ["No probe file was scored.", ""]
    ceil = {name: ceilings(s) for name, s in scored}
    useful = [k for k in kinds if any(ceil[n].get(k, {}).get("informative") for n, _ in scored)]
    L += ["Each probe group holds one probe per answer class with the same filler and candidate order, the contexts "
          "differing only in the cue word, so a model that ignores the cue is at chance exactly. Cells: *balanced "
          "accuracy* (the mean over answer classes of the accuracy on that class) in % [95 % Wilson] / mean *margin* "
          "log P(right) − max log P(wrong) in nats (above 0: the right form wins on average). A kind is "
          "*informative* when some model's balanced accuracy at the kind's shortest distance has its lower bound "
          "above chance; only then does its curve over distance say how far back a model reads.", "",
          "Informative kinds, whose curves the reading may use: " + (", ".join(useful) or "none") + ". Not "
          "informative, left out of the reading: " + (", ".join(k for k in kinds if k not in useful) or "none") + ".",
          ""]
    for kind in kinds:
        here = [(name, s["kinds"][kind]) for name, s in scored if kind in s["kinds"]]
        ds = sorted({d for _, t in here for d in t if d != "all"}, key=int)
        first = here[0][1]
        chance = first["all"].get("balanced_chance", first["all"]["chance"])
        L += [f"### {kind} (chance {_pct(chance)} %)", ""]
        L += _md_table(["model", *(f"d={d} (n={max(t[d]['n'] for _, t in here if d in t)})" for d in ds), "all"],
                       [[name, *(_cell(t.get(d)) for d in ds), _cell(t["all"])] for name, t in here])
        d0 = ds[0]
        classes = list(dict.fromkeys(c for _, t in here for c in t.get(d0, {}).get("per_class", {})))
        if classes:
            L += ["", f"Accuracy per class (the right answer's form) at d={d0}, % (n):", ""]
            L += _md_table(["model", *classes],
                           [[name, *(f"{_pct(pc[c]['accuracy'])} ({pc[c]['n']})" if c in pc else "—"
                                     for c in classes)]
                            for name, pc in ((n, t.get(d0, {}).get("per_class", {})) for n, t in here)])
        above = [name for name, _ in here if ceil[name][kind]["informative"]]
        at = [name for name, _ in here if not ceil[name][kind]["informative"]]
        L += [""]
        if above:
            L += [f"Informative: above chance at d={d0} for {', '.join(above)}"
                  + (f"; at chance there: {', '.join(at)}" if at else "") + f". The curve over d of {', '.join(above)} "
                  "says how far back the cue still decides the answer."]
        else:
            L += [f"Not informative: no model is above chance even at d={d0}, so this kind says nothing about "
                  "distance and the reading leaves it aside."]
        const = [(name, _constant(t.get(d0, {}))) for name, t in here if _constant(t.get(d0, {}))]
        if const:
            L += ["Constant answers at d=" + str(d0) + ": " + "; ".join(
                f"{name} gives `{c}` whatever the cue" for name, c in const) + " (100 % on one class, 0 % on "
                "the others: raw accuracy at chance for the wrong reason)."]
        L += [""]
    return L + ["![probes](experiment/probes_by_distance.png)", ""]
