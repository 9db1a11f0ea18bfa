"""Natural-text tables by kind of text, with document-clustered intervals and paired differences (DESIGN §7).

Kinds differ in their long-range structure: prose (Wikipedia paragraphs) has topics that recur, verse (the classical
texts) has verse numbers and refrains at fixed periods, short modern sentences have almost no context at all. So a
table that pools them mostly compares kinds, not distances. Here every table is split by kind (from each document's
source, `eval.kinds`), the headline targets are words with a letter (numerals, mostly verse numbering, are a row of
their own), and every cell carries n, its number of documents and a clustered bootstrap interval
(pipeline/evaluation/bootstrap.py); each model's difference from `eval.paired_reference` is paired on the same words.

    scored words (the evaluation's sample, in its order) ─┬─ kind, cluster, distance bucket, position bucket, numeral
    hits per model ("0110…", one character per word) ─────┴─> cells: {n, documents, models: {acc, low, high}, paired}

The same-documents table keeps, per kind, only the documents that contribute to every distance bucket it shows, so
that its buckets differ by distance and not by which texts fill them.
"""
from __future__ import annotations

import fnmatch
import zlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pipeline.config import EvalConfig
from pipeline.evaluation.bootstrap import clustered_cell
from pipeline.evaluation.distance import DISTANCE_BUCKETS, POSITION_BUCKETS, bucket, distances, position_bucket
from pipeline.evaluation.intervals import MIN_N

ALL = "all"  # the kind of a document without a source, and the pooled row when there are several kinds


def kind_of(source: str, kinds: dict[str, tuple[str, ...]]) -> str:
    """The first kind one of whose glob patterns matches `source`; "all" for no source, "other" for no match."""
    if not source:
        return ALL
    for kind, patterns in kinds.items():
        if any(fnmatch.fnmatchcase(source, p) for p in patterns):
            return kind
    return "other"


def is_numeral(word: str) -> bool:
    return not any(ch.isalpha() for ch in word)


@dataclass
class ScoredWords:
    """One entry per scored word, in the order the evaluation scores them."""
    doc: np.ndarray        # (n,) document index
    word: np.ndarray       # (n,) index among the document's words = words of context before it
    cluster: np.ndarray    # (n,) bootstrap cluster: (document, block of cluster_block_words words)
    kind: np.ndarray       # (n,) text kind
    distance: np.ndarray   # (n,) distance bucket (DISTANCE_BUCKETS)
    position: np.ndarray   # (n,) position bucket (POSITION_BUCKETS)
    numeral: np.ndarray    # (n,) bool: a target without a letter

    def __len__(self) -> int:
        return len(self.doc)

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(self.kind.tolist()))

    def take(self, idx: np.ndarray) -> "ScoredWords":
        return ScoredWords(*(getattr(self, f.name)[idx] for f in fields(self)))


def scored_words(tokens: list[list[str]], targets: list[list[int]], chosen: list[list[int]], sources: list[str],
                 ec: EvalConfig) -> ScoredWords:
    """The index of the words an evaluation scores (sampled_targets' output), with the document's kind."""
    doc, word, cluster, kind, dist, pos, num = [], [], [], [], [], [], []
    block = ec.cluster_block_words
    for d, idx in enumerate(chosen):
        if not idx:
            continue
        ws = [tokens[d][j] for j in targets[d]]
        ds = distances(ws)
        k = kind_of(sources[d] if d < len(sources) else "", ec.kinds)
        for i in idx:
            doc.append(d)
            word.append(i)
            cluster.append(d * 1_000_000 + (i // block if block else 0))
            kind.append(k)
            dist.append(bucket(ds[i]))
            pos.append(position_bucket(i))
            num.append(is_numeral(ws[i]))
    return ScoredWords(np.array(doc, dtype=np.int64), np.array(word, dtype=np.int64),
                       np.array(cluster, dtype=np.int64), np.array(kind, dtype=object), np.array(dist, dtype=object),
                       np.array(pos, dtype=object), np.array(num, dtype=bool))


def hit_string(hits) -> str:
    return "".join("1" if h else "0" for h in hits)


def hit_array(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("ascii"), dtype=np.uint8) == ord("1")


def cell(words: ScoredWords, mask: np.ndarray, hits: dict[str, np.ndarray], ec: EvalConfig, key: str,
         min_n: int = MIN_N) -> dict[str, Any]:
    """One table cell over the words in `mask`: n, documents, and (from min_n words on) accuracies with clustered
    intervals and paired differences."""
    n = int(mask.sum())
    out: dict[str, Any] = {"n": n, "documents": int(len(np.unique(words.doc[mask]))), "models": {}, "paired": {}}
    if n < min_n:
        return out
    got = clustered_cell(words.cluster[mask].tolist(), {m: h[mask] for m, h in hits.items()},
                         ec.bootstrap_replicates, ec.bootstrap_seed, key, ec.paired_reference)
    return out | {"clusters": got["clusters"], "models": got["models"], "paired": got["paired"]}


def same_documents(words: ScoredWords, mask: np.ndarray, hits: dict[str, np.ndarray], ec: EvalConfig,
                   key: str) -> dict[str, Any]:
    """The distance table on the documents that contribute to every bucket it shows: start from the buckets with
    MIN_N words, keep the documents that have a word in each; while a bucket then falls under MIN_N, drop the
    bucket found in the fewest documents (it is what empties the intersection) and try again."""
    def docs_in(m: np.ndarray) -> set[int]:
        return set(np.unique(words.doc[m]).tolist())

    shown = [b for b in DISTANCE_BUCKETS if (mask & (words.distance == b)).sum() >= MIN_N]
    keep = mask
    while len(shown) >= 2:
        docs = set.intersection(*(docs_in(mask & (words.distance == b)) for b in shown))
        keep = mask & np.isin(words.doc, sorted(docs))
        if all((keep & (words.distance == b)).sum() >= MIN_N for b in shown):
            break
        shown.remove(min(shown, key=lambda b: len(docs_in(mask & (words.distance == b)))))
    if len(shown) < 2:  # a table of one bucket compares nothing
        return {"documents": 0, "buckets": [], "by_distance": {}}
    return {"documents": int(len(np.unique(words.doc[keep]))), "buckets": shown,
            "by_distance": {b: cell(words, keep & (words.distance == b), hits, ec, f"{key}/same/{b}")
                            for b in shown}}


def kind_tables(words: ScoredWords, hits: dict[str, dict[str, str]], ec: EvalConfig) -> dict[str, Any]:
    """Per kind (and pooled, when there are several): overall top-1 and top-k, numerals apart, top-1 by distance,
    by position, and the same-documents distance table. `hits`: model -> metric -> hit string."""
    k = f"top{ec.k}"
    top1 = {m: hit_array(h["top1"]) for m, h in hits.items()}
    topk = {m: hit_array(h[k]) for m, h in hits.items()}
    for m, h in top1.items():
        if len(h) != len(words):
            raise ValueError(f"{m}: {len(h)} hits for {len(words)} scored words: the models were not scored on the "
                             "same words (same documents, eval.max_words and eval.sample_seed)")
    kinds = words.kinds()
    if len(kinds) > 1:
        kinds.append(ALL)
    out: dict[str, Any] = {}
    for kind in kinds:
        in_kind = np.ones(len(words), bool) if kind == ALL and len(kinds) > 1 else words.kind == kind
        letters = in_kind & ~words.numeral
        out[kind] = {
            "documents": int(len(np.unique(words.doc[in_kind]))), "words": int(in_kind.sum()),
            "top1": cell(words, letters, top1, ec, f"{kind}/top1"),
            k: cell(words, letters, topk, ec, f"{kind}/{k}"),
            "numerals": cell(words, in_kind & words.numeral, top1, ec, f"{kind}/numerals"),
            "by_distance": {b: cell(words, letters & (words.distance == b), top1, ec, f"{kind}/d/{b}")
                            for b in DISTANCE_BUCKETS},
            "by_position": {b: cell(words, letters & (words.position == b), top1, ec, f"{kind}/p/{b}")
                            for b in POSITION_BUCKETS},
            "same_documents": same_documents(words, letters, top1, ec, kind)}
    return out


def curve_positions(words: ScoredWords, ec: EvalConfig, minimum: dict[str, int] | None = None
                    ) -> dict[str, np.ndarray]:
    """Per kind with a context curve: the indices (into `words`) of every scored word with a letter and at least
    eval.context_curves[kind] (or minimum[kind]) words before it; for the curves (no `minimum`), at most
    eval.curve_positions of them, a sample seeded by eval.sample_seed and the kind (`eligible_positions` counts all)."""
    out = {}
    for kind in words.kinds():
        need = (ec.context_curves if minimum is None else minimum).get(kind)
        if need is not None:
            out[kind] = np.flatnonzero(_eligible(words, kind, need))
            if minimum is None and ec.curve_positions is not None and len(out[kind]) > ec.curve_positions:
                rng = np.random.default_rng([ec.sample_seed, zlib.crc32(kind.encode("utf-8"))])
                out[kind] = np.sort(rng.choice(out[kind], ec.curve_positions, replace=False))
    return out


def eligible_positions(words: ScoredWords, ec: EvalConfig, kind: str) -> int:
    """How many positions of `kind` could be on its curve (the sample's population when eval.curve_positions cuts)."""
    return int(_eligible(words, kind, ec.context_curves[kind]).sum())


def _eligible(words: ScoredWords, kind: str, need: int) -> np.ndarray:
    """The scored words of `kind` with a letter and at least `need` words before them (a boolean mask)."""
    return (words.kind == kind) & ~words.numeral & (words.word >= need)


def curve_lengths(ec: EvalConfig, kind: str) -> list[int]:
    return [c for c in ec.context_lengths if c <= ec.context_curves[kind]]


def curve_tables(words: ScoredWords, curves: dict[str, dict[str, Any]], ec: EvalConfig) -> dict[str, Any]:
    """Per kind: top-1 at each context length c (and "all") on that kind's curve positions, clustered intervals,
    paired differences. `curves`: model -> kind -> {"hits": {c: hit string}} (as evaluate_scorer stores them)."""
    out: dict[str, Any] = {}
    for kind, pos in curve_positions(words, ec).items():
        models = {m: c[kind] for m, c in curves.items() if kind in c}
        if not models:
            continue
        sub = words.take(pos)
        every = np.ones(len(pos), bool)
        lengths = list(next(iter(models.values()))["hits"])
        out[kind] = {"min_context_words": ec.context_curves[kind], "positions": int(len(pos)),
                     "eligible": eligible_positions(words, ec, kind),
                     "documents": int(len(np.unique(sub.doc))), "curve": {
                         c: cell(sub, every, {m: hit_array(r["hits"][c]) for m, r in models.items()}, ec,
                                 f"curve/{kind}/{c}") for c in lengths}}
    return out
