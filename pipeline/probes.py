"""Targeted probes (DESIGN §7): JSON Lines, one probe a line,

    {"context": str, "candidates": [str, ...], "answer": int, "distance": int, "kind": str}

Every candidate is scored as the next whole word after `context`; a probe is right when the answer scores highest.
Results are grouped by `kind` (any label: unknown kinds are reported, never dropped) and `distance` (words from the
cue word to the target), with chance = mean 1/#candidates and a 95 % Wilson interval.

The project's own probe set comes from `generate(seed)`: hand-written Marathi templates in which exactly one
candidate is grammatical (agreement) or true to the story (recall).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KNOWN_KINDS = ("agreement", "agreement_attractor", "recall")
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


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(probes: list[Probe], scores: list[list[float]]) -> dict[str, Any]:
    """{"kinds": {kind: {distance | "all": row}}, "unknown_kinds": {kind: n}}; row = n, correct, accuracy, chance,
    low, high."""
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
    return {"probes": len(probes), "kinds": kinds, "unknown_kinds": unknown}


def format_summary(name: str, summary: dict[str, Any]) -> str:
    lines = [f"{name}: {summary['probes']} probes"]
    for kind, table in summary["kinds"].items():
        lines.append(f"  {kind}")
        lines.append(f"    {'distance':>8} {'n':>5} {'accuracy':>9} {'chance':>7}  95% interval")
        for d, r in table.items():
            lines.append(f"    {d:>8} {r['n']:>5} {r['accuracy']:>9.3f} {r['chance']:>7.3f}  "
                         f"[{r['low']:.3f}, {r['high']:.3f}]")
    if summary["unknown_kinds"]:
        lines.append("  note: kinds not generated by this project (scored and reported as they are): " +
                     ", ".join(f"{k} ({n})" for k, n in summary["unknown_kinds"].items()))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- generator
# Agreement: "काल एक <subject> <adverbials…> <completion> <verb>". The past tense of an intransitive verb agrees
# with its subject's gender. Fillers are adverbials, postpositional phrases and gender-invariant converbs (-ून,
# -ल्यामुळे, -ल्यावर): none has a nominative noun that could control the verb. Attractors are nouns of the other
# gender in an oblique case (-ला, -च्या, -सोबत), which a verb never agrees with.

SUBJECTS = {"m": ["मुलगा", "शेतकरी", "राजा", "शिक्षक", "भाऊ", "म्हातारा"],
            "f": ["मुलगी", "आई", "राणी", "शिक्षिका", "बहीण", "म्हातारी"]}
VERBS = [("घरी", "गेला", "गेली"), ("परत", "आला", "आली"), ("मोठ्याने", "हसला", "हसली"),
         ("खाली", "बसला", "बसली"), ("तिथेच", "थांबला", "थांबली")]
ADVERBIALS = ["अचानक", "शांतपणे", "हळूहळू", "पुन्हा", "शेवटी", "लगेच", "नेहमीप्रमाणे",
              "त्या दिवशी", "थोड्या वेळाने", "मोठ्या आनंदाने", "खूप थकल्यामुळे", "जेवण झाल्यानंतर",
              "पावसात भिजल्यामुळे", "बाजारातून परतल्यावर", "संध्याकाळच्या वेळी",
              "दिवसभर काम करून", "सगळे काम संपवून", "आपल्या जुन्या सायकलवरून", "गावातल्या जुन्या मंदिराजवळून",
              "कोणालाही काहीही न सांगता", "रस्त्यात थोडा वेळ रेंगाळून"]
ATTRACTORS = {"m": ["आईला भेटून", "बहिणीसोबत गप्पा मारून", "शिक्षिकेचा निरोप घेऊन", "मुलीच्या शाळेजवळून",
                    "राणीच्या वाड्यासमोरून"],   # feminine nouns, for a masculine subject
              "f": ["भावाला भेटून", "मुलासोबत गप्पा मारून", "शिक्षकाचा निरोप घेऊन", "मुलाच्या शाळेजवळून",
                    "राजाच्या वाड्यासमोरून"]}   # masculine nouns, for a feminine subject
AGREEMENT_DISTANCES = (2, 4, 8, 16, 32, 64)

# Recall: a man's name is introduced, then filler sentences of exactly five words that name nobody, then the slot.
NAMES = ["अमित", "सुनील", "राहुल", "विजय", "संजय", "अजय", "रमेश", "गणेश", "प्रकाश", "महेश"]
RECALL_INTRO = "आमच्या गावात {name} नावाचा एक शेतकरी राहत होता ."
RECALL_OUTRO = "त्या शेतकऱ्याचे नाव"
RECALL_FILLERS = ["तो रोज सकाळी लवकर उठायचा .", "त्याच्याकडे दोन पांढरे बैल होते .",
                  "त्याचे घर नदीच्या काठावर होते .", "पावसाळ्यात तो शेतात खूप राबायचा .",
                  "गावातले लोक त्याचा आदर करायचे .", "संध्याकाळी तो मंदिरात भजन म्हणायचा .",
                  "त्याला जुनी गाणी ऐकायला आवडायचे .", "त्याच्या शेतात भरपूर ज्वारी पिकायची .",
                  "एकदा गावात मोठा दुष्काळ पडला .", "तेव्हा त्याने सगळ्यांना धान्य वाटले .",
                  "त्याची बायको उत्तम स्वयंपाक करायची .", "दारात एक आंब्याचे झाड होते .",
                  "उन्हाळ्यात मुले त्या झाडाखाली खेळायची .", "दर आठवड्याला तो बाजारात जायचा .",
                  "तिथे तो भाजीपाला विकत असे .", "त्याचे जीवन अगदी साधे होते ."]


def _n_words(text: str) -> int:
    from pipeline.cleaning import words

    return len(words(text))


def _fill(rng: random.Random, n: int) -> list[str]:
    """Adverbial phrases with exactly n words in all (one-word phrases guarantee an exact fit)."""
    out, left = [], n
    while left > 0:
        fits = [a for a in ADVERBIALS if _n_words(a) <= left and (not out or a != out[-1])]
        out.append(rng.choice(fits))
        left -= _n_words(out[-1])
    return out


def _agreement(rng: random.Random, distance: int, attractor: bool, gender: str) -> dict[str, Any]:
    subject = rng.choice(SUBJECTS[gender])
    completion, masc, fem = rng.choice(VERBS)
    between = distance - 2  # words strictly between the subject and the completion word before the verb
    phrases = []
    if attractor:
        att = rng.choice([a for a in ATTRACTORS[gender] if _n_words(a) <= between])
        phrases = _fill(rng, between - _n_words(att)) + [att]  # the attractor sits nearest the verb
    else:
        phrases = _fill(rng, between)
    context = " ".join(["काल एक", subject, " , ".join(phrases), completion]).replace("  ", " ")
    cands = [masc, fem]
    rng.shuffle(cands)
    return {"context": context, "candidates": cands, "answer": cands.index(masc if gender == "m" else fem),
            "distance": distance, "kind": "agreement_attractor" if attractor else "agreement"}


def _recall(rng: random.Random, n_fill: int) -> dict[str, Any]:
    cands = rng.sample(NAMES, 4)
    name = cands[0]
    rng.shuffle(cands)
    fillers = rng.sample(RECALL_FILLERS, n_fill)
    context = " ".join([RECALL_INTRO.format(name=name), *fillers, RECALL_OUTRO])
    intro_after = _n_words(RECALL_INTRO.split("{name}")[1])
    distance = intro_after + sum(_n_words(f) for f in fillers) + _n_words(RECALL_OUTRO) + 1
    return {"context": context, "candidates": cands, "answer": cands.index(name), "distance": distance,
            "kind": "recall"}


def generate(seed: int = DEFAULT_SEED, per_cell: int = 10) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for d in AGREEMENT_DISTANCES:
        for attractor in (False, True):
            if attractor and d < 4:
                continue
            for gender in ("m", "f"):
                out += [_agreement(rng, d, attractor, gender) for _ in range(per_cell)]
    for n_fill in range(16):
        out += [_recall(rng, n_fill) for _ in range(per_cell)]
    return out


def write_probes(path: str | Path, seed: int = DEFAULT_SEED) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in generate(seed):
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    return path


def cli(args, cfg) -> int:
    import sys

    from pipeline.config import resolve_path
    from pipeline.evaluate import build_scorers

    path = resolve_path(args.probes or cfg.eval.probes or "data/probes/probes.jsonl")
    try:
        if args.generate:
            write_probes(path)
            print(f"wrote {sum(1 for _ in open(path, encoding='utf-8'))} probes to {path}")
        if not args.model:
            if not args.generate:
                print("error: give --model (checkpoint or export directory) or --generate", file=sys.stderr)
                return 2
            return 0
        probes = load_probes(path)
    except ProbeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for scorer in build_scorers(cfg, args.model, getattr(args, "baseline", False)):
        print(format_summary(scorer.name, summarize(probes, score_probes(scorer, probes))))
    return 0


def as_dict(p: Probe) -> dict[str, Any]:
    d = asdict(p)
    d.pop("line")
    d["candidates"] = list(d["candidates"])
    return d
