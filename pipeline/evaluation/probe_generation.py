"""The project's own probe set (DESIGN §7 "Probes"): agreement of a verb with a distant subject and recall of a name
introduced earlier, each distance filled with real training text, written in the probe file format (probes.py)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pipeline.evaluation.probe_constructions import (
    AGREEMENT,
    RECALL_FRAME_WORDS,
    RECALL_INTRO,
    SURNAMES,
    FillerRules,
    agreement_sources,
    recall_passages,
)

DEFAULT_SEED = 20261124


# Probes come in minimal-pair groups: one draw of filler and candidate order, then one probe per answer class (each
# subject, or each surname of the candidate set as the one introduced). Within a group the contexts differ only in
# the cue word, so a model that ignores the cue gets exactly one probe of each group right: chance.
#
# A distance is used only where the full train split holds the frame at that distance for every answer class
# (`probe --count --config configs/full.yaml`, data/README.md) and the filler source holds the fillers. Dropped:
# agreement beyond d = 8 (the frame occurs within one clause; at 9-16 words तू … आहेस, तुम्ही … आहात and ती … होती
# never do) and recall beyond d = 32 (a surname recurs 33-64 words after its last mention twice in the whole
# split, never further; the embedded train holds 17 prose passages of 61 words that share no sentence, 30 needed).

AGREEMENT_DISTANCES = (2, 4, 8)  # words from the subject to the auxiliary; 2 = "मी <one word> आहे"
RECALL_DISTANCES = (3, 8, 16, 32)  # from the surname to the slot; 3 = "{S} यांनी सांगितले . ___"
PER_DISTANCE = 120  # probes per kind and distance (30 groups of 4, 40 of 3)
RECALL_CANDIDATES = 4


def filler_documents(cfg=None) -> list[str]:
    """The filler source: the cleaned train split of the embedded corpus (configs/default.yaml, data/corpus/), so
    that no text of the full corpus is copied into the project; `cfg` only lends its cache directory."""
    from pipeline.config import PROJECT_ROOT, load_config
    from pipeline.corpus.prepare import documents

    sets = [f"data.cache_dir={cfg.data.cache_dir}"] if cfg is not None else []
    return documents(load_config(PROJECT_ROOT / "configs" / "default.yaml", sets), "train")


def _agreement_groups(rng: random.Random, kind: str, sources: list, d: int, groups: int) -> list[dict[str, Any]]:
    """`groups` fillers of d-1 words, each from a different place in the text; one probe per subject of the kind."""
    pool = sorted({src[2][-(d - 1):] for src in sources if len(src[2]) >= d - 1})
    out = []
    for filler in rng.sample(pool, groups):
        cands = list(AGREEMENT[kind].values())
        rng.shuffle(cands)
        out += [{"context": " ".join((subject, *filler)), "candidates": cands, "answer": cands.index(form),
                 "distance": d, "kind": kind} for subject, form in AGREEMENT[kind].items()]
    return out


def _surname_sets(rng: random.Random, groups: int) -> list[list[str]]:
    """`groups` candidate sets of RECALL_CANDIDATES different surnames in which every surname is drawn equally often
    (exactly, when groups * RECALL_CANDIDATES is a multiple of 10): then every answer class has the same n, and a
    model that ignores the cue is at chance on balanced accuracy too, not only on raw accuracy."""
    k = RECALL_CANDIDATES
    while True:
        slots = [s for _ in range(-(-groups * k // len(SURNAMES))) for s in rng.sample(SURNAMES, len(SURNAMES))]
        sets = [slots[i:i + k] for i in range(0, groups * k, k)]
        if all(len(set(c)) == k for c in sets):
            return sets


def _recall_groups(rng: random.Random, passages: list, d: int, groups: int) -> list[dict[str, Any]]:
    """`groups` passages of d-3 words that share no sentence (at d = 3 the empty filler, every group); one probe per
    candidate surname as the one introduced."""
    chosen: list[str] = []
    if d == RECALL_FRAME_WORDS:
        chosen = [""] * groups
    else:
        used: set[tuple[int, int]] = set()
        for doc, first, last, text in rng.sample(sorted(passages), len(passages)):
            span = {(doc, i) for i in range(first, last + 1)}
            if not span & used:
                used |= span
                chosen.append(text)
            if len(chosen) == groups:
                break
    out = []
    for text, cands in zip(chosen, _surname_sets(rng, len(chosen))):
        out += [{"context": " ".join(w for w in (RECALL_INTRO.format(name=name), text) if w), "candidates": cands,
                 "answer": cands.index(name), "distance": d, "kind": "recall"} for name in cands]
    return out


def generate(documents: list[str], seed: int = DEFAULT_SEED, per_distance: int = PER_DISTANCE,
             dropped: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The project's probe set, fillers drawn from `documents` (cleaned training text). A (kind, distance) whose
    fillers the documents cannot provide is left out and, when `dropped` is given, recorded there with the reason."""
    rng = random.Random(seed)
    rules = FillerRules.of(documents)
    out: list[dict[str, Any]] = []
    for kind, subjects in AGREEMENT.items():
        sources = agreement_sources(documents, kind, rules)
        groups = per_distance // len(subjects)
        for d in AGREEMENT_DISTANCES:
            have = len({src[2][-(d - 1):] for src in sources if len(src[2]) >= d - 1})
            if have < groups:
                if dropped is not None:
                    dropped[f"{kind} d={d}"] = f"{have} fillers of {d - 1} words, {groups} needed"
                continue
            out += _agreement_groups(rng, kind, sources, d, groups)
    passages = recall_passages(documents, [d - RECALL_FRAME_WORDS for d in RECALL_DISTANCES])
    groups = per_distance // RECALL_CANDIDATES
    for d in RECALL_DISTANCES:
        part = _recall_groups(rng, passages.get(d - RECALL_FRAME_WORDS, []), d, groups)
        if len(part) < groups * RECALL_CANDIDATES:
            if dropped is not None:
                dropped[f"recall d={d}"] = (f"{len(part) // RECALL_CANDIDATES} passages of {d - RECALL_FRAME_WORDS} "
                                            f"words that share no sentence, {groups} needed")
            continue
        out += part
    return out


def write_probes(path: str | Path, documents: list[str] | None = None, seed: int = DEFAULT_SEED,
                 per_distance: int = PER_DISTANCE, dropped: dict[str, str] | None = None) -> Path:
    """The generated set as JSON Lines; fillers from `documents` (default: the embedded train split)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probes = generate(filler_documents() if documents is None else documents, seed, per_distance, dropped)
    with open(path, "w", encoding="utf-8") as f:
        for p in probes:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    return path
