"""Targeted probes (DESIGN §7): JSON Lines, one probe a line,

    {"context": str, "candidates": [str, ...], "answer": int, "distance": int, "kind": str}

Every candidate is scored as the next whole word after `context`; a probe is right when the answer scores highest.
Results are grouped by `kind` (any label: unknown kinds are reported, never dropped) and `distance` (words from the
cue word to the target), with chance = mean 1/#candidates and a 95 % Wilson interval.

Each kind's *ceiling* is its accuracy at its shortest distance; a kind is *informative* when the ceiling's 95 % lower
bound is above chance. Only an informative kind's curve over distance says anything about how far back a model
reads: one at chance even at its shortest distance has nothing to lose.

The project's own probe set comes from `generate(seed)`: Marathi templates built from constructions the training
text teaches (pipeline/evaluation/probe_constructions.py: which, and how often), in which exactly one candidate is grammatical
(agreement of an auxiliary with its pronoun subject's person, or gender) or true to the text (recall of a surname).
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation.intervals import wilson
from pipeline.evaluation.probe_constructions import (
    ADVERBIALS,
    AGREEMENT,
    COMPLETIONS,
    RECALL_FILLERS,
    RECALL_FRAME,
    RECALL_INTRO,
    SURNAMES,
)

KNOWN_KINDS = (*AGREEMENT, "recall")
DEFAULT_SEED = 20261124


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

def score_probes(scorer, probes: list[Probe], batch: int = 256) -> list[list[float]]:
    """log P(candidate | context) for every candidate, through the scorer's `score(contexts, candidates)`."""
    out: list[list[float]] = []
    for i in range(0, len(probes), batch):
        part = probes[i:i + batch]
        out += scorer.score([p.context for p in part], [list(p.candidates) for p in part])
    return out


def summarize(probes: list[Probe], scores: list[list[float]]) -> dict[str, Any]:
    """{"kinds": {kind: {distance | "all": row}}, "unknown_kinds": {kind: n}, "ceilings": {kind: ceiling}}; row = n,
    correct, accuracy, chance, low, high; a ceiling is its kind's shortest-distance row + distance, informative."""
    groups: dict[str, dict[Any, list[tuple[bool, float]]]] = {}
    for p, s in zip(probes, scores):
        right = max(range(len(s)), key=lambda i: s[i]) == p.answer
        by_d = groups.setdefault(p.kind, {})
        for key in (p.distance, "all"):
            by_d.setdefault(key, []).append((right, 1 / len(p.candidates)))
    kinds = {}
    for kind in sorted(groups):
        table = {}
        for key in sorted((k for k in groups[kind] if k != "all")) + ["all"]:
            rows = groups[kind][key]
            n, correct = len(rows), sum(r for r, _ in rows)
            low, high = wilson(correct, n)
            table[str(key)] = {"n": n, "correct": correct, "accuracy": correct / n,
                               "chance": sum(c for _, c in rows) / n, "low": low, "high": high}
        kinds[kind] = table
    unknown = {k: len([p for p in probes if p.kind == k]) for k in kinds if k not in KNOWN_KINDS}
    summary = {"probes": len(probes), "kinds": kinds, "unknown_kinds": unknown}
    return summary | {"ceilings": ceilings(summary)}


def ceilings(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kind, its ceiling: the row at its shortest distance, the most that any longer distance can be expected to
    show; `informative` when the ceiling's 95 % lower bound is above chance. A kind at chance even at its shortest
    distance says nothing about distance. Works on any summary (also ones written before ceilings existed)."""
    out = {}
    for kind, table in summary["kinds"].items():
        shortest = min((d for d in table if d != "all"), key=int)
        row = table[shortest]
        out[kind] = {"distance": int(shortest), **row, "informative": row["low"] > row["chance"]}
    return out


def format_summary(name: str, summary: dict[str, Any]) -> str:
    lines = [f"{name}: {summary['probes']} probes"]
    for kind, table in summary["kinds"].items():
        lines.append(f"  {kind}")
        lines.append(f"    {'distance':>8} {'n':>5} {'accuracy':>9} {'chance':>7}  95% interval")
        for d, r in table.items():
            lines.append(f"    {d:>8} {r['n']:>5} {r['accuracy']:>9.3f} {r['chance']:>7.3f}  "
                         f"[{r['low']:.3f}, {r['high']:.3f}]")
        c = (summary.get("ceilings") or ceilings(summary))[kind]
        lines.append(f"    ceiling (d={c['distance']}): {c['accuracy']:.3f} [{c['low']:.3f}, {c['high']:.3f}], chance "
                     f"{c['chance']:.3f}: " + ("informative" if c["informative"] else
                                               "not informative (at chance even at its shortest distance, so it "
                                               "says nothing about distance)"))
    if summary["unknown_kinds"]:
        lines.append("  note: kinds not generated by this project (scored and reported as they are): " +
                     ", ".join(f"{k} ({n})" for k, n in summary["unknown_kinds"].items()))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- generator
# Probes come in minimal-pair groups: one draw of completion, fillers and candidate order, then one probe per answer
# class (each subject, or each surname of the candidate set as the one introduced). Within a group the contexts
# differ only in the cue word, so a model that ignores the cue gets exactly one probe of each group right: chance.
# The constructions and their train counts: pipeline/evaluation/probe_constructions.py.

AGREEMENT_DISTANCES = (2, 4, 8, 16, 32, 64, 128)  # words from the subject to the auxiliary; 2 = "मी जात आहे"
RECALL_DISTANCES = (3, 8, 16, 32, 64, 128)  # from the surname to the slot; 3 = "{S} यांनी सांगितले . ___"
PER_DISTANCE = 60  # probes per kind and distance


def _n_words(text: str) -> int:
    from pipeline.corpus.cleaning import words

    return len(words(text))


def _fill(rng: random.Random, pool: tuple[str, ...], n: int) -> list[str]:
    """Phrases of `pool` with exactly n words in all, never the same phrase twice in a row and, while others fit,
    never twice at all. A phrase is taken only if what is left can still be filled (0 or >= the shortest phrase;
    every such total is reachable when the pool holds phrases of consecutive lengths from the shortest)."""
    lengths = {p: _n_words(p) for p in pool}
    shortest = min(lengths.values())
    out: list[str] = []
    left = n
    while left > 0:
        fits = [p for p in pool if lengths[p] <= left and (lengths[p] == left or left - lengths[p] >= shortest)
                and (not out or p != out[-1])]
        fresh = [p for p in fits if p not in out]
        if not fits:
            raise ValueError(f"cannot fill {n} words from a pool whose shortest phrase has {shortest} words")
        out.append(rng.choice(fresh or fits))
        left -= lengths[out[-1]]
    return out


def _agreement_group(rng: random.Random, kind: str, distance: int) -> list[dict[str, Any]]:
    """"<subject> <adverbials…> <completion>" -> the auxiliary; one probe per subject of the kind."""
    completion = rng.choice(COMPLETIONS)
    middle = " , ".join(_fill(rng, ADVERBIALS, distance - 2))
    cands = list(AGREEMENT[kind].values())
    rng.shuffle(cands)
    return [{"context": " ".join(w for w in (subject, middle, completion) if w), "candidates": cands,
             "answer": cands.index(form), "distance": distance, "kind": kind}
            for subject, form in AGREEMENT[kind].items()]


def _recall_group(rng: random.Random, distance: int) -> list[dict[str, Any]]:
    """"{S} यांनी सांगितले . <sentences naming nobody>" -> S; one probe per candidate surname as the one introduced."""
    cands = rng.sample(SURNAMES, 4)
    fillers = _fill(rng, RECALL_FILLERS, distance - _n_words(RECALL_FRAME) - 1)
    return [{"context": " ".join([RECALL_INTRO.format(name=name), *fillers]), "candidates": cands,
             "answer": cands.index(name), "distance": distance, "kind": "recall"} for name in cands]


def generate(seed: int = DEFAULT_SEED, per_distance: int = PER_DISTANCE) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for kind in AGREEMENT:
        for d in AGREEMENT_DISTANCES:
            for _ in range(per_distance // len(AGREEMENT[kind])):
                out += _agreement_group(rng, kind, d)
    for d in RECALL_DISTANCES:
        for _ in range(per_distance // 4):
            out += _recall_group(rng, d)
    return out


def write_probes(path: str | Path, seed: int = DEFAULT_SEED) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in generate(seed):
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    return path


def count_cli(args, cfg) -> None:
    """`probe --count`: the table of pipeline/evaluation/probe_constructions.py for the train split (or --data FILE)."""
    from pipeline.evaluation.probe_constructions import (
        count_constructions,
        format_counts,
    )

    if getattr(args, "data", None):
        from pipeline.evaluation.evaluate import corpus_file_documents

        docs, where = corpus_file_documents(args.data, cfg), args.data
    else:
        from pipeline.corpus.prepare import documents

        docs, where = documents(cfg, "train"), f"train split of {cfg.name}"
    print(f"probe constructions in {where}:")
    print(format_counts(count_constructions(docs)))


def cli(args, cfg) -> int:
    import sys

    from pipeline.config import PROJECT_ROOT

    path = Path(args.probes or cfg.eval.probes or PROJECT_ROOT / "data/probes/probes.jsonl")
    count = getattr(args, "count", False)
    try:
        if count:
            count_cli(args, cfg)
        if args.generate:
            write_probes(path)
            print(f"wrote {sum(1 for _ in open(path, encoding='utf-8'))} probes to {path}")
        if not args.model:
            if not (args.generate or count):
                print("error: give --model (checkpoint or export directory), --generate or --count", file=sys.stderr)
                return 2
            return 0
        probes = load_probes(path)
    except ProbeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipeline.evaluation.evaluate import build_scorers

    for scorer in build_scorers(cfg, args.model, getattr(args, "baseline", False)):
        print(format_summary(scorer.name, summarize(probes, score_probes(scorer, probes))))
    return 0


def as_dict(p: Probe) -> dict[str, Any]:
    d = asdict(p)
    d.pop("line")
    d["candidates"] = list(d["candidates"])
    return d
