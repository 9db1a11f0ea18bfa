"""The one interface every predictor implements and every consumer uses (as lm-evaluation-harness's `LM`).

A `Scorer` answers three requests about whole words after cleaned, tokenised text:

    read(docs, targets)          a reading of documents: batches of target positions, each with the scorer's
                                 ranking at those positions (`TargetBatch.top`, optionally under typed prefixes),
                                 and every target's log-probability (`Reading.logp`) once the reading is done;
                                 each document from a warm start (warm.py) when given, and losses only when the
                                 consumer needs no ranking (rank=False: the context ablation and copy test)
    top_words(contexts, k)       the top k after free-standing contexts (the context-length curves)
    score(contexts, candidates)  log P(candidate | context) for given candidates (the probes)

The consumers — the evaluation loop, the context ablation, the typist, the mixture's fitting, the probes — see
nothing else, so a new
predictor is one adapter of this protocol. The adapters in this package: the network (network_scorer.py), the
Kneser-Ney n-gram (ngram_scorer.py) and their mixture with a cache (mixture_scorer.py).

A document is a list of tokens (words and punctuation); a target is the index of a word token in it. A key is
(document index, token index).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pipeline.evaluation.warm import Warm

Key = tuple[int, int]
Ranking = list[list[tuple[str, float]]]  # per row, (word, score) best first


@dataclass
class TargetBatch:
    """Targets whose contexts have been read, in the order the scorer reached them. `top(k, prefixes, rows)` ranks
    the next word at rows `rows` of the batch (all when None), completing `prefixes[i]` (typed characters of the
    word; "" for none) — the scorer's own ranking, the one its server shows. `settling`, when the scorer has it: the
    same ranking for a caller that only asks whether `settle[i]` is in row i's top k (the typist): the answer is the
    same, the rest of a row may be left unproven (a search can stop sooner)."""
    keys: list[Key]
    rank: Callable[[int, list[str] | None, list[int] | None], Ranking]
    settling: Callable[[int, list[str] | None, list[int] | None, list[str]], Ranking] | None = None

    def top(self, k: int, prefixes: list[str] | None = None, rows: list[int] | None = None) -> Ranking:
        return self.rank(k, prefixes, rows)

    def words(self, k: int, prefixes: list[str] | None = None, rows: list[int] | None = None,
              settle: list[str] | None = None) -> list[list[str]]:
        ranked = self.rank(k, prefixes, rows) if settle is None or self.settling is None \
            else self.settling(k, prefixes, rows, settle)
        return [[w for w, _ in row] for row in ranked]


@dataclass
class Reading:
    """Iterate for the batches; `logp[key]` (natural log of P(target word | its context)) is complete once the
    iteration is (a scorer may fill it as it goes, or at the end)."""
    batches: Iterator[TargetBatch]
    logp: dict[Key, float] = field(default_factory=dict)

    def __iter__(self) -> Iterator[TargetBatch]:
        return self.batches

    @classmethod
    def of(cls, batches: Callable[[Reading], Iterator[TargetBatch]]) -> Reading:
        """A reading whose batches come from the generator `batches(reading)`, which fills the reading as it goes."""
        reading = cls(iter(()))
        reading.batches = batches(reading)
        return reading


@runtime_checkable
class Scorer(Protocol):
    name: str
    # counts of the whole-word search behind `top` (rows searched, widened, left unproven); None without one
    search_stats: dict[str, int] | None

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True,
             warm: list[Warm | None] | None = None, rank: bool = True) -> Reading:
        """Read each document up to its last target (from `bos` when bos, else mid-document), after warm[d] when
        given (else from a fresh state); yield the targets in batches. With logp=False the scorer may skip computing
        `Reading.logp`; with rank=False the batches may refuse `top` (a loss-only reading can be much faster)."""
        ...

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True, warm: list[Warm | None] | None = None
                  ) -> list[list[str]]:
        """The top k words after each context (tokens), read from its start (`bos` for a document's start), after
        warm[i] when given."""
        ...

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log P(candidate | context) as the next whole word, for each candidate of each raw-text context."""
        ...


def read_all(scorer: Scorer, docs: list[list[str]], targets: list[list[int]], k: int,
             progress: Callable[[int], object] = lambda n: None, bos: bool = True,
             warm: list[Warm | None] | None = None) -> tuple[dict[Key, list[str]], dict[Key, float]]:
    """The top k words (none when k = 0: a loss-only reading) and the log-probability of every target: the
    evaluation's request."""
    reading = scorer.read(docs, targets, bos, logp=True, warm=warm, rank=k > 0)
    top: dict[Key, list[str]] = {}
    for batch in reading:
        if k > 0:
            top.update(zip(batch.keys, batch.words(k)))
        progress(len(batch.keys))
    return top, reading.logp
