"""The Kneser-Ney n-gram (ngram.py) as a `Scorer` (scorer.py): the "what a user would pick instead" row.

A warm start matters to it only for a context read mid-document (bos=False): its first words are then preceded by
the warm text's last tokens instead of nothing."""
from __future__ import annotations

from collections.abc import Iterator

from pipeline.corpus.cleaning import clean_text
from pipeline.evaluation.ngram import KneserNey, context_tail
from pipeline.evaluation.scorer import Ranking, Reading, TargetBatch
from pipeline.evaluation.warm import Warm

BATCH_TARGETS = 512  # targets per batch: the n-gram's vectorised calls take them together


class NgramScorer:
    search_stats = None  # its top k are exact by construction: no search to count

    def __init__(self, lm: KneserNey, name: str | None = None):
        self.lm, self.name = lm, name or f"kn{lm.order}gram"

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True,
             warm: list[Warm | None] | None = None, rank: bool = True) -> Reading:
        return Reading.of(lambda reading: self._read(docs, targets, bos, logp, warm, reading))

    def _tails(self, warm: list[Warm | None] | None, n: int) -> list[list[str]]:
        need = self.lm.order - 1
        return [w.stream.tail(w.tokens, need) if w is not None else [] for w in warm] if warm else [[]] * n

    def _read(self, docs, targets, bos: bool, logp: bool, warm, reading: Reading) -> Iterator[TargetBatch]:
        keys = [(d, j) for d, ts in enumerate(targets) for j in ts]
        tails = [] if bos else self._tails(warm, len(docs))
        for a in range(0, len(keys), BATCH_TARGETS):
            part = keys[a:a + BATCH_TARGETS]
            ctxs = [context_tail(docs[d], j) for d, j in part]
            if tails:
                ctxs = [(tails[d] + list(c))[-16:] for (d, _), c in zip(part, ctxs)]
            if logp:
                lps = self.lm.log_prob(ctxs, [docs[d][j] for d, j in part], bos)
                reading.logp.update(zip(part, map(float, lps)))

            def rank(k: int, prefixes: list[str] | None, rows: list[int] | None, ctxs=ctxs) -> Ranking:
                chosen = ctxs if rows is None else [ctxs[i] for i in rows]
                return self.lm.top_words(chosen, k, bos, prefixes)
            yield TargetBatch(part, rank)

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True, warm: list[Warm | None] | None = None
                  ) -> list[list[str]]:
        if warm and not bos:
            contexts = [t + list(c) for t, c in zip(self._tails(warm, len(contexts)), contexts)]
        return [[w for w, _ in row] for row in self.lm.top_words(contexts, k, bos=bos)]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        out = []
        for c, cs in zip(contexts, candidates):
            toks = clean_text(c).split()
            out.append(self.lm.log_prob([toks] * len(cs), cs).tolist())
        return out
