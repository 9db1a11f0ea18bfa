"""The mixture of the network, the n-gram and the cache (mixture.py) as a `Scorer` (scorer.py).

It reads through the network's own reading (network_scorer.py) with the top-layer vectors that the cache keys on;
each batch's ranking and every target's probability come from `mixture_search.mixed_search`, what the server ranks with
(`mixed_top`), so what is evaluated is what is served. The typist's question under each typed prefix is answered
from the row's search with nothing typed (an exact list and a bound on every word outside it) wherever that settles
it, and by a search under the prefix only where it does not (settle_stats counts how often).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.evaluation.mixture import MixtureWeights, cache_distributions, cache_history, mix_label, mix_probs
from pipeline.evaluation.mixture_search import MixedRow, mixed_search, ranked, settle_rows, word_probs
from pipeline.evaluation.network_scorer import NeuralScorer
from pipeline.evaluation.ngram import KneserNey, context_tail
from pipeline.evaluation.predict import select_state
from pipeline.evaluation.scorer import Ranking, Reading, TargetBatch
from pipeline.evaluation.warm import Warm

STAND_IN = "क"  # a word after a free-standing context: its position is the one ranked; its own score is not used


class MixtureScorer:
    """A NeuralScorer, a KneserNey and a cache behind the `Scorer` calls. `weights.parts` picks the mixed parts; the
    weights come from mixture_fit.fit on validation."""

    def __init__(self, net: NeuralScorer, lm: KneserNey | None, weights: MixtureWeights, candidates: int = 20,
                 name: str = ""):
        self.net, self.lm, self.w, self.K = net, lm, weights, candidates
        self.name = name or mix_label(net.name, weights.parts, lm.order if lm is not None else 0)
        self.pred = net.pred
        # rows searched (mixture_search.mixed_search), searched again wider, left unproven at the widest
        self.search_stats = {"rows": 0, "widened": 0, "not_exact": 0}
        # typist rows asked whether their word is in the bar, and those neither the row's search with nothing typed
        # nor settle_rows could settle (searched again in full under the prefix)
        self.settle_stats = {"rows": 0, "searched": 0}

    # -------------------------------------------------------------------------------------------- per target
    def features(self, docs, targets, vectors, bos: bool = True, theta: float | None = None,
                 window: int | None = None, asked: dict | None = None, full: bool = False, skip: int | None = None
                 ) -> dict[tuple[int, int], dict]:
        """Per target (d, j): the n-gram's matched order, the cache's history (words in its window) and P_cache
        of the words `asked[(d, j)]` (default: the target itself) and of its K heaviest words ("cache_top"); with
        `full`, P_cache of every word the cache holds."""
        theta = self.w.theta if theta is None else theta
        window = self.w.window if window is None else window
        skip = self.w.skip if skip is None else skip
        out = {}
        for d, (tokens, ts) in enumerate(zip(docs, targets)):
            if not ts:
                continue
            word_pos = [j for j, t in enumerate(tokens) if is_word(t)]
            vocab: dict[str, int] = {}
            ids = [vocab.setdefault(tokens[j], len(vocab)) for j in word_pos]
            rows = [bisect.bisect_left(word_pos, j) for j in ts]  # words before each target: its cache's end
            first_key = 0 if bos else 1  # a truncated context has no state before its first word
            order = self.lm.matched_order([context_tail(tokens, j) for j in ts], bos) if self.lm else np.zeros(len(ts), int)
            use_cache = "cache" in self.w.parts
            for r, j in enumerate(ts):
                history = cache_history(rows[r], window, first_key, skip) if use_cache else 0
                out[(d, j)] = {"order": int(order[r]), "history": history, "cache": {}, "cache_top": []}
            if not use_cache:
                continue
            keys = vectors[d][torch.tensor(word_pos)]
            words = list(vocab)
            for lo in range(0, len(ts), 512):  # a chunk at a time: a long document's full table would not fit
                part = ts[lo:lo + 512]
                queries = vectors[d][torch.tensor(part)]  # the state before each target token
                dist = cache_distributions(queries, keys, ids, rows[lo:lo + 512], theta, window, first_key, len(vocab),
                                           skip)
                top = dist.topk(min(self.K, len(vocab)), dim=1)
                for r, j in enumerate(part):
                    f = out[(d, j)]
                    f["cache_top"] = [words[i] for v, i in zip(top.values[r].tolist(), top.indices[r].tolist())
                                      if v > 0]
                    if full:
                        nz = dist[r].nonzero().flatten().tolist()
                        f["cache"] = dict(zip([words[i] for i in nz], dist[r, nz].tolist()))
                        continue
                    for w in (asked or {}).get((d, j), [tokens[j]]):
                        f["cache"][w] = float(dist[r, vocab[w]]) if w in vocab else 0.0
        return out

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True,
             warm: list[Warm | None] | None = None, rank: bool = True) -> Reading:
        """A warm start reaches the network only: the cache keeps the document's own words, and the n-gram starts
        at the document (a mixture's probabilities come with its ranking, so rank=False saves nothing)."""
        return Reading.of(lambda reading: self._read(docs, targets, bos, logp, warm, reading))

    def _read(self, docs, targets, bos: bool, logp: bool, warm, reading: Reading) -> Iterator[TargetBatch]:
        for nb in self.net.read(docs, targets, bos, logp=False, warm=warm, vectors="cache" in self.w.parts):
            by_doc: list[list[int]] = [[] for _ in docs]
            for d, j in nb.keys:
                by_doc[d].append(j)
            every = self.features(docs, by_doc, nb.vectors, bos, full=True)
            feats = [every[key] for key in nb.keys]
            ctxs = [context_tail(docs[d], j) for d, j in nb.keys]
            words = [docs[d][j] for d, j in nb.keys]
            known: list[dict[str, float]] = [{} for _ in nb.keys]  # the network's log-probs per row, kept
            first: dict[int, MixedRow] = {}  # each row's search with nothing typed: the typist filters it
            own: dict[int, float] = {}       # the typed word's own mixture probability per row
            beaten: dict[int, list[tuple[str, float]]] = {}  # words found to beat it, per row

            def at(rows: list[int], nb=nb, feats=feats, ctxs=ctxs) -> tuple:
                """The network's states, next-piece log-probs, contexts and features of these rows of the batch."""
                idx = torch.tensor(rows, dtype=torch.long, device=nb.next_lp.device)
                return (select_state(nb.state, idx), nb.next_lp.index_select(0, idx), [ctxs[i] for i in rows],
                        [feats[i] for i in rows])

            def search(k: int, prefixes: list[str], rows: list[int], score: list[str] | None = None,
                       known=known, first=first, at=at) -> list[MixedRow]:
                got = mixed_search(self.w, self.lm, self.pred, self.K, *at(rows), prefixes, k, bos,
                                   [known[i] for i in rows], score, self.search_stats)
                first.update((i, r) for i, p, r in zip(rows, prefixes, got) if not p)
                return got

            def rank(k: int, prefixes: list[str] | None, rows: list[int] | None, words=words, nb=nb,
                     search=search) -> Ranking:
                whole = rows is None and not any(prefixes or ())
                rows = list(range(len(words))) if rows is None else rows
                prefixes = prefixes or [""] * len(rows)
                got = search(k, prefixes, rows, [words[i] for i in rows] if whole and logp else None)
                if whole and logp:  # the batch's next words: the targets' probabilities come with the ranking
                    reading.logp.update((nb.keys[i], r.scored) for i, r in zip(rows, got))
                return [ranked(r, k, p) for r, p in zip(got, prefixes)]

            def settling(k: int, prefixes: list[str] | None, rows: list[int] | None, settle: list[str],
                         nb=nb, known=known, first=first, own=own, beaten=beaten, search=search, at=at) -> Ranking:
                # the typist's question, answered from the row's search with nothing typed where its exact list
                # and bound settle it; a search under the prefix only where they do not
                rows = list(range(len(nb.keys))) if rows is None else rows
                prefixes = prefixes or [""] * len(rows)
                fresh = [i for i in dict.fromkeys(rows) if i not in first]
                if fresh:
                    search(k, [""] * len(fresh), fresh)
                fresh = [j for j, i in enumerate(rows) if i not in own]
                if fresh:
                    some = [rows[j] for j in fresh]
                    own.update(zip(some, word_probs(self.w, self.lm, self.pred, *at(some), [settle[j] for j in fresh],
                                                    bos, [known[i] for i in some])))
                out: Ranking = []
                open_rows = []
                for j, (i, prefix, word) in enumerate(zip(rows, prefixes, settle)):
                    p, row = own[i], first[i]
                    beat = sorted({x: v for x, v in row.words + beaten.get(i, []) if v > p and x.startswith(prefix)}
                                  .items(), key=lambda t: -t[1])
                    if len(beat) >= k:  # k words it provably cannot pass (found under a shorter prefix, or listed)
                        out.append(beat[:k])
                    elif row.bound < p and any(x == word for x, _ in row.words):  # nothing unlisted beats it
                        out.append(beat + [(word, p)])
                    else:
                        out.append([])
                        open_rows.append(j)
                self.settle_stats["rows"] += len(rows)
                if open_rows:
                    some = [rows[j] for j in open_rows]
                    got = settle_rows(self.w, self.lm, self.pred, self.K, *at(some), [prefixes[j] for j in open_rows],
                                      k, [settle[j] for j in open_rows], [own[i] for i in some],
                                      [first[i].net_bound for i in some], bos, [known[i] for i in some])
                    for j, answer in zip(open_rows, got):
                        out[j] = (answer or [])[:k]
                        if answer and len(answer) >= k and answer[-1][0] != settle[j]:
                            beaten[rows[j]] = answer  # they still beat it under a longer prefix that they match
                    open_rows = [j for j, answer in zip(open_rows, got) if answer is None]
                self.settle_stats["searched"] += len(open_rows)
                if open_rows:
                    got = search(k, [prefixes[j] for j in open_rows], [rows[j] for j in open_rows])
                    for j, r in zip(open_rows, got):
                        out[j] = ranked(r, k, prefixes[j])
                return out
            yield TargetBatch(nb.keys, rank, settling)
            if logp and not all(key in reading.logp for key in nb.keys):  # nobody asked for the ranking
                rank(1, None, None)

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True, warm: list[Warm | None] | None = None,
                  prefixes: list[str] | None = None) -> list[list[str]]:
        """Top-k after each context (the cache reads the context itself), completing prefixes[i] when given."""
        docs = [list(c) + [STAND_IN] for c in contexts]
        prefixes = prefixes or [""] * len(contexts)
        top: dict[tuple[int, int], list[str]] = {}
        for batch in self.read(docs, [[len(c)] for c in contexts], bos, logp=False, warm=warm):
            top.update(zip(batch.keys, batch.words(k, [prefixes[d] for d, _ in batch.keys])))
        return [top[(d, len(c))] for d, c in enumerate(contexts)]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log P_mix(candidate | context) as the next whole word: the network's exact scores (one read per context),
        and the cache's keys and query from one teacher-forced pass over the contexts."""
        toks = [clean_text(c).split() for c in contexts]
        net = self.net.score(contexts, candidates)
        docs, targets = [t + [STAND_IN] for t in toks], [[len(t)] for t in toks]  # the stand-in's state is the query
        vectors = None
        if "cache" in self.w.parts:
            reading = self.net.read(docs, targets, logp=False, vectors=True)
            for _ in reading:
                pass
            vectors = reading.vectors
        feats = self.features(docs, targets, vectors, asked={(d, len(t)): list(cs)
                                                             for d, (t, cs) in enumerate(zip(toks, candidates))})
        out = []
        for d, (t, cs, lps) in enumerate(zip(toks, candidates, net)):
            probs = mix_probs(self.w, self.lm, feats[(d, len(t))], t, list(cs), dict(zip(cs, lps)), True)
            out.append([math.log(p) if p > 0 else -math.inf for p in probs])
        return out
