"""The recurrent network as a `Scorer` (scorer.py): whole words from pieces through WordPredictor (predict.py).

How a reading is batched (the state must be the one after the *whole* preceding document):

    documents sorted by length, B at a time, right-padded:  x (B, T) = bos pieces… pad…
    step t = 0…T-1:  state_t = model(x[:, t], state_{t-1});  lp_t = log p(· | x[:, ≤t])   (B, V)
        tok_lp[:, t] = lp_t[x[:, t+1]]      bnd[:, t] = log Σ_{b ∈ boundary} lp_t[b]
        rows whose next piece opens a target word: (state_t, lp_t) → pending
    pending ≥ eval.batch_size  →  yield a batch; its `top` is WordPredictor.top_words (beam search over pieces)
    log P(word) = Σ tok_lp over its pieces' predecessors + bnd after its last piece      (exact, teacher-forced)

Padding only ever follows a row's real pieces, so it cannot change any state that is read.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from models.recurrent import State
from pipeline.checkpoints import ModelBundle
from pipeline.config import EvalConfig
from pipeline.evaluation.predict import WordPredictor, cat_states, select_state
from pipeline.evaluation.scorer import Key, Ranking, Reading, TargetBatch

STEP_TOKENS = 16384  # documents per teacher-forcing batch: B * T at most this many pieces (one doc at least)


@dataclass
class NetworkBatch(TargetBatch):
    """A batch of targets with the network's state before each (rows) and its next-piece log-probabilities, and the
    documents' top-layer vectors read so far (`vectors`, when asked): what the mixture's cache reads."""
    state: State = None
    next_lp: torch.Tensor = None
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class NetworkReading(Reading):
    """`vectors[d]` (tokens, H): the top-layer state before every token of document d, the state that predicts it
    (the mixture's cache keys); complete once the iteration is."""
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)


class NeuralScorer:
    """A recurrent LM read through WordPredictor (whole words from pieces)."""

    def __init__(self, bundle: ModelBundle, ec: EvalConfig, name: str):
        self.name, self.ec = name, ec
        self.pred = WordPredictor(bundle.model, bundle.tokenizer, ec.beam_width, ec.max_word_pieces, ec.max_beam_width)
        self.model, self.tok = self.pred.model, self.pred.tok
        self.device = self.pred.device
        self.search_stats = self.pred.search_stats  # the predictor's own counters, shared

    def _encode(self, tokens: list[str], bos: bool = True) -> tuple[list[int], list[int]]:
        """(`bos` +) pieces of the tokens, and the index in ids where each token's first piece sits."""
        pieces = self.tok.encode_batch(tokens) if tokens else []
        ids, starts = [self.tok.bos_id] if bos else [], []
        for p in pieces:
            starts.append(len(ids))
            ids += p
        return ids, starts

    @staticmethod
    def _batches(lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur = [], []
        for i in order:
            if cur and (len(cur) + 1) * lengths[i] > STEP_TOKENS:
                out.append(cur)
                cur = []
            cur.append(i)
        return out + ([cur] if cur else [])

    def _batch(self, pending: list, reading: NetworkReading) -> NetworkBatch:
        keys = [key for key, _, _ in pending]
        state, lp = cat_states([s for _, s, _ in pending]), torch.cat([l for _, _, l in pending])

        def rank(k: int, prefixes: list[str] | None, rows: list[int] | None) -> Ranking:
            if rows is None:
                return self.pred.top_words(state, lp, k, prefixes)
            idx = torch.tensor(rows, device=self.device)
            return self.pred.top_words(select_state(state, idx), lp.index_select(0, idx), k, prefixes)
        return NetworkBatch(keys, rank, state, lp, reading.vectors)

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True,
             vectors: bool = False) -> NetworkReading:
        return NetworkReading.of(lambda reading: self._read(docs, targets, bos, logp, vectors, reading))

    def _read(self, docs, targets, bos: bool, logp: bool, vectors: bool, reading: NetworkReading
              ) -> Iterator[NetworkBatch]:
        encoded = [self._encode(d, bos) for d in docs]
        pending: list = []
        # Consumers rank inside this context too (as they did when this loop called them back): no autograd, and
        # PyTorch's native RNN kernels for the one-piece steps (see predict.stepwise).
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            for batch in self._batches([len(ids) for ids, _ in encoded]):
                rows = [encoded[d][0] for d in batch]
                at: dict[int, list[tuple[int, Key]]] = {}  # step -> (row, key) of the targets read after it
                for r, d in enumerate(batch):
                    for j in targets[d]:
                        at.setdefault(encoded[d][1][j] - 1, []).append((r, (d, j)))
                n, longest = len(rows), max(len(r) for r in rows)
                x = torch.full((n, longest), self.tok.pad_id, dtype=torch.long, device=self.device)
                for i, r in enumerate(rows):
                    x[i, :len(r)] = torch.tensor(r)
                feats = torch.zeros(n, longest, self.model.hidden_dim) if vectors else None
                first_pieces = {d: torch.tensor(encoded[d][1], dtype=torch.long) - 1 for d in batch}
                row_of = {d: r for r, d in enumerate(batch)}
                state = self.model.init_state(n, self.device)
                tok_lp = torch.zeros(n, longest, device=self.device)
                bnd = torch.zeros(n, longest, device=self.device)
                neg = torch.tensor(-math.inf, device=self.device)
                for t in range(longest):
                    f, state = self.model(x[:, t:t + 1], state)  # (B, 1, H)
                    if vectors:
                        feats[:, t].copy_(f[:, 0])
                    if logp or t in at:
                        lp = self.model.log_probs(f).squeeze(1)  # (B, V)
                    if logp:
                        if t + 1 < longest:
                            tok_lp[:, t] = lp.gather(1, x[:, t + 1:t + 2]).squeeze(1)
                        bnd[:, t] = torch.logsumexp(torch.where(self.pred.masks.boundary, lp, neg), dim=1)
                    if t not in at:
                        continue
                    idx = torch.tensor([r for r, _ in at[t]], device=self.device)
                    st, lps = select_state(state, idx), lp.index_select(0, idx)
                    for m, (_, key) in enumerate(at[t]):
                        pending.append((key, select_state(st, torch.tensor([m])), lps[m:m + 1]))
                        if len(pending) >= self.ec.batch_size:
                            if vectors:  # the vectors read so far: a target's cache reads only earlier ones
                                for d in {k[0] for k, _, _ in pending} & row_of.keys():
                                    reading.vectors[d] = feats[row_of[d], first_pieces[d]]
                            yield self._batch(pending, reading)
                            pending = []
                for r, d in enumerate(batch):
                    ids, starts = encoded[d]
                    for j in targets[d] if logp else ():
                        s = starts[j]
                        e = (starts[j + 1] if j + 1 < len(starts) else len(ids)) - 1  # the word's last piece
                        reading.logp[(d, j)] = float(tok_lp[r, s - 1:e].sum() + bnd[r, e])
                    if vectors:
                        reading.vectors[d] = feats[r, first_pieces[d]]
            if pending:
                yield self._batch(pending, reading)

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True) -> list[list[str]]:
        """Top-k words after each context, read from a fresh state (after `bos` when the context is a document's
        start; without it for a truncated context, which starts mid-document). Contexts of the same length in pieces
        are read together in one call of the recurrence, so no row is padded and the state after the last piece is
        each row's own (the context-length curves read thousands of contexts of a few hundred pieces)."""
        rows = [self._encode(c, bos)[0] for c in contexts]
        by_len: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_len.setdefault(len(r), []).append(i)
        out: dict[int, list[str]] = {}
        for n, idx in sorted(by_len.items()):
            per = max(1, min(self.ec.batch_size * 4, STEP_TOKENS * 4 // max(n, 1)))
            for a in range(0, len(idx), per):
                part = idx[a:a + per]
                x = torch.tensor([rows[i] for i in part], device=self.device)  # (B, n)
                feats, state = self.model(x, None)  # (B, n, H): the whole context in one call
                lp = self.model.log_probs(feats[:, -1:]).squeeze(1)  # (B, V) after the last piece
                for start in range(0, len(part), self.ec.batch_size):
                    sl = torch.arange(start, min(start + self.ec.batch_size, len(part)))
                    res = self.pred.top_words(select_state(state, sl), lp.index_select(0, sl), k)
                    for i, row in zip(part[start:start + len(sl)], res):
                        out[i] = [w for w, _ in row]
        return [out[i] for i in range(len(contexts))]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log P(candidate | context) as the next whole word, for each candidate of each context."""
        state, lp = self.pred.read([self.pred.context_ids(c) for c in contexts])
        rows = torch.tensor([i for i, cs in enumerate(candidates) for _ in cs])
        flat = [c for cs in candidates for c in cs]
        scores = self.pred.word_log_prob(select_state(state, rows), lp.index_select(0, rows), flat).tolist()
        out, pos = [], 0
        for cs in candidates:
            out.append(scores[pos:pos + len(cs)])
            pos += len(cs)
        return out

