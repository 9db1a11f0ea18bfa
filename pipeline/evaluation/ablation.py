"""How far back a model reads, measured causally in nats (DESIGN §7; Khandelwal et al. 2018), a consumer of the
`Scorer` protocol: the context ablation and the copy test.

Each model is compared with itself: the same target word is scored with its real context and with part of that
context's information removed, and the change in its whole-word loss −log P(word) is the answer. A model that is
worse everywhere has a higher loss everywhere; that cancels in the difference.

Context ablation, at every position of a kind with at least eval.ablation_contexts[kind] words before it:

    full      warm(d) ─ d[0 … i-1] ─ target i                        (the document from its warm start)
    c words   replaced(d)[: |d[0 … i-c-1]|] ─ d[i-c … i-1] ─ target   (everything before the last c words: the same
                                                                       number of tokens of other documents)
    shuffled  replaced(d)[: |d[0 … i-m-1]|] ─ shuffle(d[i-m … i-c-1]) ─ d[i-c … i-1] ─ target   (m: the kind's
                                                                       minimum context; a seeded sample of positions)
    Δ(c) = loss(c) − loss(full); the context benefit is Δ(0); effective context = the smallest c with Δ(c) ≤
    eval.effective_nats (and ≤ eval.effective_share of loss(full))

One row of the scorer's reading starts at word q = i − c of document d and carries on to q + max c: it gives the
loss at c for every target q + c at once, so the ablation reads each position's window once per c it serves, not
once per (target, c); the replacement text is one stream per document (warm.py), read once.

Copy test, on a seeded sample of the repeated words of each kind (eval.copy_targets): the target as is, and with
every earlier occurrence of it in the document replaced by one word of the same frequency class (log2 of its train
count; seeded, not in the document); the text is otherwise untouched. Δ = loss(replaced) − loss(as is), by the
distance of the last occurrence.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.config import EvalConfig
from pipeline.corpus.cleaning import is_word
from pipeline.evaluation.distance import bucket, distances
from pipeline.evaluation.scorer import Scorer
from pipeline.evaluation.text_kinds import ScoredWords, curve_positions
from pipeline.evaluation.warm import Warm, WarmStarts

ROWS_PER_READ = 4096  # rows handed to the scorer at once: its warm states for them are held together


def _losses(scorer: Scorer, rows: list[list[str]], targets: list[list[int]], warm: list[Warm | None], bos: bool,
            progress: Callable[[int], object]) -> dict[tuple[int, int], float]:
    """−log P(target) for every (row, target), in chunks of ROWS_PER_READ rows."""
    out: dict[tuple[int, int], float] = {}
    for a in range(0, len(rows), ROWS_PER_READ):
        b = min(a + ROWS_PER_READ, len(rows))
        reading = scorer.read(rows[a:b], targets[a:b], bos, logp=True, warm=warm[a:b], rank=False)
        for batch in reading:
            progress(len(batch.keys))
        out.update(((a + r, j), -lp) for (r, j), lp in reading.logp.items())
    return out


class FrequencyClasses:
    """Words by the class floor(log2(train count + 1)): a replacement as frequent as the word it replaces."""

    def __init__(self, counts: Counter):
        self.counts = counts
        self.members: dict[int, list[str]] = {}
        for w in sorted(counts):
            if any(ch.isalpha() for ch in w):
                self.members.setdefault(self.of(w), []).append(w)

    def of(self, word: str) -> int:
        return int(math.log2(self.counts.get(word, 0) + 1))

    def replacement(self, word: str, avoid: set[str], rng: random.Random) -> str:
        """A seeded word of the same class (the nearest class with one) that is not `word` and not in `avoid`."""
        home = self.of(word)
        for step in range(0, 64):
            for cls in dict.fromkeys((home - step, home + step)):
                words = self.members.get(cls, [])
                for _ in range(min(20, len(words))):
                    w = rng.choice(words)
                    if w != word and w not in avoid:
                        return w
        raise ValueError(f"no replacement word for {word!r}: the train split's vocabulary is too small")


def context_ablation(scorer: Scorer, tokens: list[list[str]], targets: list[list[int]], words: ScoredWords,
                     ws: WarmStarts, ec: EvalConfig, counts: Counter,
                     progress: Callable[[int], object] = lambda n: None) -> dict[str, Any]:
    """Per-target losses of the full context, of each ablation and of the copy test (per kind, in the order of
    `words`), with the seconds and rows it took. `tokens`/`targets`: every document of the split (what `words`
    indexes); `counts`: train word counts (the copy test's frequency classes)."""
    t0 = time.perf_counter()
    seed = ec.sample_seed
    positions = curve_positions(words, ec, ec.ablation_contexts)
    kinds: dict[str, Any] = {}
    jobs: list[tuple[str, Any]] = []  # (what, key) per row target, in the order of rows/row_targets
    rows, row_targets, row_warm = [], [], []
    full_keys: set[tuple[int, int]] = set()

    def add_row(toks: list[str], ts: list[int], warm: Warm, keys: list[Any]) -> None:
        rows.append(toks)
        row_targets.append(ts)
        row_warm.append(warm)
        jobs.append(keys)

    replacing: dict[int, tuple[Any, int]] = {}

    def replacement_of(d: int, tokens_before: int) -> Warm:
        if d not in replacing:
            replacing[d] = ws.replacing(d)
        stream, burn = replacing[d]
        return Warm(stream, burn + tokens_before)

    for kind, pos in positions.items():
        m = ec.ablation_contexts[kind]
        lengths = [0] + [c for c in ec.ablation_lengths if c <= m]
        at = [(int(words.doc[p]), int(words.word[p])) for p in pos]
        kinds[kind] = {"min_context_words": m, "lengths": lengths, "doc": [d for d, _ in at],
                       "cluster": [int(words.cluster[p]) for p in pos], "word": [i for _, i in at]}
        need: dict[tuple[int, int], dict[int, int]] = {}  # (d, q) -> {c: index of the target in `at`}
        for n, (d, i) in enumerate(at):
            full_keys.add((d, targets[d][i]))
            for c in lengths:
                need.setdefault((d, i - c), {})[c] = n
        for (d, q), by_c in sorted(need.items()):
            ts, first = targets[d], targets[d][q]
            top = max(by_c)
            add_row(tokens[d][first:ts[q + top] + 1], [ts[q + c] - first for c in sorted(by_c)],
                    replacement_of(d, first), [("ablate", kind, c, by_c[c]) for c in sorted(by_c)])
        shuffle_c = [c for c in ec.ablation_shuffle_lengths if c < m]
        rng = random.Random(f"ablation-shuffle-{seed}-{kind}")
        sample = sorted(rng.sample(range(len(at)), min(ec.ablation_shuffle_positions, len(at))))
        kinds[kind]["shuffle"] = {"positions": sample, "lengths": shuffle_c}
        for n in sample:
            d, i = at[n]
            ts = targets[d]
            for c in shuffle_c:
                span = tokens[d][ts[i - m]:ts[i - c]]
                random.Random(f"shuffle-{seed}-{d}-{i}-{c}").shuffle(span)
                row = span + tokens[d][ts[i - c]:ts[i] + 1]
                add_row(row, [len(row) - 1], replacement_of(d, ts[i - m]), [("shuffle", kind, c, n)])

    classes = FrequencyClasses(counts)
    copy: dict[str, Any] = {}
    before_of: dict[int, Any] = {}
    repeated: dict[str, list[tuple[int, int, int]]] = {}  # kind -> (d, i, distance) of the scored repeated words
    cluster = {(d, i): c for d, i, c in zip(words.doc.tolist(), words.word.tolist(), words.cluster.tolist())}
    kind_of = dict(zip(words.doc.tolist(), words.kind.tolist()))
    for d in sorted(kind_of):
        ws_d = [tokens[d][j] for j in targets[d]]
        for i, dist in enumerate(distances(ws_d)):
            if dist is not None and (d, i) in cluster and any(ch.isalpha() for ch in ws_d[i]):
                repeated.setdefault(kind_of[d], []).append((d, i, dist))
    for kind, cands in repeated.items():
        rng = random.Random(f"copy-{seed}-{kind}")
        if ec.copy_targets is not None and len(cands) > ec.copy_targets:
            cands = sorted(rng.sample(cands, ec.copy_targets))
        copy[kind] = {"doc": [d for d, _, _ in cands], "word": [i for _, i, _ in cands],
                      "cluster": [cluster[(d, i)] for d, i, _ in cands],
                      "bucket": [bucket(dist) for _, _, dist in cands]}
        for n, (d, i, _) in enumerate(cands):
            ts, w = targets[d], tokens[d][targets[d][i]]
            full_keys.add((d, ts[i]))
            occ = [ts[k] for k in range(i) if tokens[d][ts[k]] == w]
            r = classes.replacement(w, set(tokens[d]), random.Random(f"copy-{seed}-{d}-{i}"))
            row = [r if t in occ else tokens[d][t] for t in range(occ[0], ts[i])] + [w]
            if d not in before_of:
                before_of[d] = ws.before(d)
            stream = before_of[d]
            add_row(row, [len(row) - 1], Warm(stream, stream.tokens - len(tokens[d]) + occ[0]),
                    [("copy", kind, None, n)])

    # the full context: each document from its warm start, up to its last target
    by_doc: dict[int, list[int]] = {}
    for d, j in sorted(full_keys):
        by_doc.setdefault(d, []).append(j)
    docs = sorted(by_doc)
    full = _losses(scorer, [tokens[d][:by_doc[d][-1] + 1] for d in docs], [by_doc[d] for d in docs],
                   [ws.warm(d) for d in docs], True, progress)
    full_of = {(d, j): full[(r, j)] for r, d in enumerate(docs) for j in by_doc[d]}
    got = _losses(scorer, rows, row_targets, row_warm, False, progress)

    for kind, info in kinds.items():
        info["full"] = [round(full_of[(d, targets[d][i])], 5) for d, i in zip(info["doc"], info["word"])]
        info["loss"] = {str(c): [math.nan] * len(info["doc"]) for c in info["lengths"]}
        info["shuffle"]["loss"] = {str(c): [math.nan] * len(info["shuffle"]["positions"])
                                   for c in info["shuffle"]["lengths"]}
    slot = {kind: {n: s for s, n in enumerate(info["shuffle"]["positions"])} for kind, info in kinds.items()}
    for kind, info in copy.items():
        info["as_is"] = [round(full_of[(d, targets[d][i])], 5) for d, i in zip(info["doc"], info["word"])]
        info["replaced"] = [math.nan] * len(info["doc"])
    for r, (ts, keys) in enumerate(zip(row_targets, jobs)):
        for j, (what, kind, c, n) in zip(ts, keys):
            v = round(got[(r, j)], 5)
            if what == "ablate":
                kinds[kind]["loss"][str(c)][n] = v
            elif what == "shuffle":
                kinds[kind]["shuffle"]["loss"][str(c)][slot[kind][n]] = v
            else:
                copy[kind]["replaced"][n] = v
    pieces = sum(len(r) for r in rows)
    return {"kinds": kinds, "copy": copy, "rows": len(rows), "row_tokens": pieces,
            "seconds": round(time.perf_counter() - t0, 2)}


def train_counts(train_docs: list[str]) -> Counter:
    """Word counts of the cleaned train split (the copy test's frequency classes)."""
    counts: Counter = Counter()
    for doc in train_docs:
        counts.update(t for t in doc.split() if is_word(t))
    return counts
