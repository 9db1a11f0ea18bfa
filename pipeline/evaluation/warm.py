"""Warm starts (DESIGN §7): the text a scored context is read after, so that no model starts from a zero state.

Training reads documents as one stream and carries the state from one to the next, so a model never starts a
document from zeros; a zero state is a transient that a tanh RNN does not leave within 256 words. Here every
document d of a split gets a preceding text made of *other* documents of the same split:

    one seeded order of the split's documents ── `pool` seeded offsets into it ── d gets offset choice[d]
    stream(d) = the documents from that offset on, cycling, d itself skipped
    warm(d)      = whole documents of stream(d) until at least `words` words        (the burn-in)
    replaced(d, n) = warm(d) + the next n tokens of stream(d)                         (the context ablation's
                     replacement: same length as the n tokens of d it stands for, information gone)

A warm start is a `Warm`: a `Stream` of segments (each a document, or the start of one, read from its `bos`) and
how many of its tokens to read. Streams compare by identity, so every context that starts somewhere in the same
stream shares one reading of it (network_scorer.py reads each stream once and keeps the state at every cut asked
for). The texts depend on the documents and the seed only, so every model starts from the same text.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.corpus.cleaning import is_word


@dataclass(frozen=True, eq=False)  # identity: hashing a long stream's tokens for every context would cost O(n^2)
class Stream:
    segments: tuple[tuple[str, ...], ...]

    @functools.cached_property
    def ends(self) -> list[int]:
        """ends[i]: the tokens in segments 0 … i (computed once: an n-gram asks for thousands of tails)."""
        return list(itertools.accumulate(map(len, self.segments)))

    @property
    def tokens(self) -> int:
        return self.ends[-1] if self.segments else 0

    def tail(self, n: int, last: int) -> list[str]:
        """The last `last` tokens of the stream's first `n` tokens (what an n-gram reads of a warm start)."""
        out: list[str] = []
        i = bisect.bisect_left(self.ends, n)  # the segment holding token n − 1
        while i >= 0 and len(out) < last and n > 0:
            start = self.ends[i] - len(self.segments[i])
            seg = self.segments[i][:n - start]
            out = list(seg[max(0, len(seg) - (last - len(out))):]) + out
            n, i = start, i - 1
        return out


@dataclass(frozen=True)
class Warm:
    """Read the first `tokens` tokens of `stream` before the context."""
    stream: Stream
    tokens: int


class WarmStarts:
    def __init__(self, docs: list[list[str]], words: int, pool: int, seed: int):
        if len(docs) < 2:
            raise ValueError(f"a warm start reads other documents of the same split, and there are {len(docs)}: "
                             "give at least 2 documents, or set eval.warm_start=false to start from zero states")
        self.docs, self.words = [tuple(d) for d in docs], words
        rng = random.Random(f"warm-start-{seed}")
        self.order = list(range(len(docs)))
        rng.shuffle(self.order)
        self.offsets = [rng.randrange(len(docs)) for _ in range(max(1, pool))]
        self.choice = [rng.randrange(len(self.offsets)) for _ in docs]
        self._streams: dict[tuple, Stream] = {}

    def _stream(self, d: int) -> Iterator[tuple[str, ...]]:
        start, n = self.offsets[self.choice[d]], len(self.order)
        while True:  # cycles: a replacement may be longer than the rest of a small split
            for i in range(n):
                other = self.order[(start + i) % n]
                if other != d and self.docs[other]:
                    yield self.docs[other]

    def _shared(self, segments: tuple) -> Stream:
        key = tuple(map(id, segments))  # segments are the split's own tuples (or slices cut once per document)
        if key not in self._streams:
            self._streams[key] = Stream(segments)
        return self._streams[key]

    def burn_in(self, d: int) -> tuple[tuple[str, ...], ...]:
        """Whole other documents until at least `words` words (one at least)."""
        out, seen = [], 0
        for doc in self._stream(d):
            out.append(doc)
            seen += sum(map(is_word, doc))
            if seen >= self.words:
                break
        return tuple(out)

    def warm(self, d: int) -> Warm:
        """Where document d is read from: after its burn-in."""
        stream = self._shared(self.burn_in(d))
        return Warm(stream, stream.tokens)

    def replacing(self, d: int) -> tuple[Stream, int]:
        """The burn-in followed by as many tokens of the documents after it as d has: the stream whose first
        `burn + p` tokens stand for d's first p tokens (returned: the stream and `burn`)."""
        head = self.burn_in(d)
        stream = self._stream(d)
        for _ in head:
            next(stream)
        out, owed = list(head), len(self.docs[d])
        while owed > 0:
            doc = next(stream)
            out.append(doc[:owed] if len(doc) > owed else doc)
            owed -= len(out[-1])
        return Stream(tuple(out)), sum(map(len, head))

    def before(self, d: int) -> Stream:
        """The burn-in followed by document d itself: a stream whose cut at `burn + t` is d's first t tokens."""
        return Stream(self.burn_in(d) + (self.docs[d],))
