"""The Kneser-Ney n-gram (ngram.py) as a `Scorer` (scorer.py): the "what a user would pick instead" row."""
from __future__ import annotations

from collections.abc import Iterator

from pipeline.corpus.cleaning import clean_text
from pipeline.evaluation.ngram import KneserNey, context_tail
from pipeline.evaluation.scorer import Ranking, Reading, TargetBatch

BATCH_TARGETS = 512  # targets per batch: the n-gram's vectorised calls take them together


class NgramScorer:
    search_stats = None  # its top k are exact by construction: no search to count

    def __init__(self, lm: KneserNey, name: str | None = None):
        self.lm, self.name = lm, name or f"kn{lm.order}gram"

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True
             ) -> Reading:
        return Reading.of(lambda reading: self._read(docs, targets, bos, logp, reading))

    def _read(self, docs, targets, bos: bool, logp: bool, reading: Reading) -> Iterator[TargetBatch]:
        keys = [(d, j) for d, ts in enumerate(targets) for j in ts]
        for a in range(0, len(keys), BATCH_TARGETS):
            part = keys[a:a + BATCH_TARGETS]
            ctxs = [context_tail(docs[d], j) for d, j in part]
            if logp:
                lps = self.lm.log_prob(ctxs, [docs[d][j] for d, j in part], bos)
                reading.logp.update(zip(part, map(float, lps)))

            def rank(k: int, prefixes: list[str] | None, rows: list[int] | None, ctxs=ctxs) -> Ranking:
                chosen = ctxs if rows is None else [ctxs[i] for i in rows]
                return self.lm.top_words(chosen, k, bos, prefixes)
            yield TargetBatch(part, rank)

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True) -> list[list[str]]:
        return [[w for w, _ in row] for row in self.lm.top_words(contexts, k, bos=bos)]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        out = []
        for c, cs in zip(contexts, candidates):
            toks = clean_text(c).split()
            out.append(self.lm.log_prob([toks] * len(cs), cs).tolist())
        return out
