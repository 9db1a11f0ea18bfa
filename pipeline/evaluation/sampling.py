"""Which words an evaluation scores (DESIGN §7): every word, or a seeded, word-weighted, stratified sample.

Long context lives in long documents (in the full test split five documents of >= 512 words hold a third of the
words, the first 200 documents average 13), so "the first N documents" would score short sentences only. Instead:

    documents ──> strata by length (words): ≤16 │ 17–64 │ 65–256 │ 257–1024 │ >1024
    each document ──> chunks of ≤ chunk_words consecutive words (a long document gives many)
    stratum s gets max_words · (words in s / all words)          (largest remainder: the shares add up exactly)
    within s: chunks in seeded random order, taken whole until the stratum's budget; the last one cut to a random
              window of the words still owed

Every chunk of a stratum is equally likely, so every word is (up to the last, cut chunk): estimates are unbiased
per word, and long documents keep their share of words exactly. The scorer still reads each document from its start
up to the last sampled word, so a word deep in a long document keeps all of its context.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any

from pipeline.config import EvalConfig
from pipeline.corpus.cleaning import is_word

LENGTH_EDGES = (16, 64, 256, 1024)  # stratum upper bounds (words); the last stratum is everything longer
CHUNK_WORDS = 256


def stratum_of(words: int) -> int:
    return bisect.bisect_left(LENGTH_EDGES, words)


def word_sample(doc_words: Sequence[int], max_words: int | None, seed: int,
                chunk_words: int = CHUNK_WORDS) -> list[list[int]]:
    """For each document (given by its number of words), the sorted indices of the words to score."""
    total = sum(doc_words)
    if max_words is None or max_words >= total:
        return [list(range(n)) for n in doc_words]
    if max_words < 1:
        raise ValueError(f"max_words={max_words}: give a positive word budget, or null to score every word")
    strata: dict[int, list[tuple[int, int, int]]] = {}  # stratum -> chunks (doc, start, end)
    for d, n in enumerate(doc_words):
        for a in range(0, n, chunk_words):
            strata.setdefault(stratum_of(n), []).append((d, a, min(a + chunk_words, n)))
    words = {s: sum(e - a for _, a, e in chunks) for s, chunks in strata.items()}
    exact = {s: max_words * w / total for s, w in words.items()}
    budget = {s: int(x) for s, x in exact.items()}
    for s in sorted(exact, key=lambda s: (budget[s] - exact[s], s))[:max_words - sum(budget.values())]:
        budget[s] += 1  # largest remainders first
    rng = random.Random(f"word-sample-{seed}")
    chosen: list[list[int]] = [[] for _ in doc_words]
    for s in sorted(strata):
        chunks = strata[s][:]
        rng.shuffle(chunks)
        owed = budget[s]
        for d, a, e in chunks:
            if owed <= 0:
                break
            if e - a > owed:  # the last chunk: a random window of the words still owed
                a = a + rng.randrange(e - a - owed + 1)
                e = a + owed
            chosen[d].extend(range(a, e))
            owed -= e - a
    return [sorted(c) for c in chosen]


def targets_of(tokens: Sequence[str]) -> list[int]:
    """The indices of a document's word tokens (punctuation is context, never a target)."""
    return [j for j, t in enumerate(tokens) if is_word(t)]


def sampled_targets(docs: list[str], ec: EvalConfig
                    ) -> tuple[list[list[str]], list[list[int]], list[list[int]], dict[str, Any]]:
    """The evaluation's words: `sample_of` with eval.max_words and eval.sample_seed."""
    return sample_of(docs, ec.max_words, ec.sample_seed)


def sample_of(docs: list[str], max_words: int | None, seed: int
              ) -> tuple[list[list[str]], list[list[int]], list[list[int]], dict[str, Any]]:
    """Tokens and word targets of every document, and which of its words are scored (indices into its targets):
    all of them (max_words None), or the seeded sample of `word_sample`."""
    tokens = [d.split() for d in docs]
    targets = [targets_of(t) for t in tokens]
    chosen = word_sample([len(t) for t in targets], max_words, seed)
    available = sum(map(len, targets))
    scored = sum(map(len, chosen))
    info = {"words_available": available, "documents_available": len(docs), "words": scored,
            "documents": sum(1 for c in chosen if c), "max_words": max_words,
            "seed": seed if scored < available else None}
    return tokens, targets, chosen, info


def sampled_documents(tokens: list[list[str]], targets: list[list[int]], chosen: list[list[int]]
                      ) -> tuple[list[int], list[list[str]], list[list[int]]]:
    """What a scorer reads for a sample: the documents with a sampled word (`keep`), each cut after its last sampled
    word (so a word deep in a long document keeps all of its context), and the sampled targets of each."""
    keep = [d for d, c in enumerate(chosen) if c]
    want = [[targets[d][i] for i in chosen[d]] for d in keep]
    cut = [tokens[d][:w[-1] + 1] for d, w in zip(keep, want)]
    return keep, cut, want


def sample_line(info: dict[str, Any]) -> str:
    """What was scored, in words: every figure's denominator (and a zero start, when there was no warm one)."""
    zero = f"; read from zero states ({info['zero_start']})" if info.get("zero_start") else ""
    if info["words"] < info["words_available"]:
        return (f"scored {info['words']:,} of {info['words_available']:,} words ({info['documents']:,} of "
                f"{info['documents_available']:,} documents): seeded sample (eval.sample_seed={info['seed']}), "
                "stratified by document length" + zero)
    return f"scored every word: {info['words']:,} words in {info['documents_available']:,} documents" + zero
