"""The recurrent network as a `Scorer` (scorer.py): whole words from pieces through WordPredictor (predict.py).

How a reading is batched (the state must be the one after the *whole* preceding document):

    documents sorted by length, B at a time, right-padded:  x (B, T) = bos pieces… pad…
    fused from one target's step to the next:  state_t = model(x[:, s:t+1], state_s-1);  lp_t = log p(· | x[:, ≤t])
        tok_lp[:, t] = lp_t[x[:, t+1]]      bnd[:, t] = log Σ_{b ∈ boundary} lp_t[b]
        rows whose next piece opens a target word: (state_t, lp_t) → pending
    pending ≥ eval.batch_size  →  yield a batch; its `top` is WordPredictor.top_words (beam search over pieces)
    log P(word) = Σ tok_lp over its pieces' predecessors + bnd after its last piece      (exact, teacher-forced)

Padding only ever follows a row's real pieces, so it cannot change any state that is read.

A reading that needs no ranking (`rank=False`: losses only, the context ablation and copy test) needs no state per
target: wide batches of rows through the fused recurrence, chunk by chunk, and the output layer only where a
target's pieces are.
A warm start (warm.py) is read once per stream, keeping the state at every cut some row starts from.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from models.build import int8_copy
from models.recurrent import State
from pipeline.checkpoints import ModelBundle
from pipeline.config import EvalConfig
from pipeline.evaluation.predict import WordPredictor, cat_states, select_state
from pipeline.evaluation.scorer import Key, Ranking, Reading, TargetBatch
from pipeline.evaluation.warm import Stream, Warm

# A reading that keeps every step's log-probabilities computes them for at most this many pieces at a time
READ_TOKENS = 2048
STEP_TOKENS = 16384  # documents per teacher-forcing batch: B * T at most this many pieces (one doc at least)
# A loss-only batch: at most LOSS_ROWS rows and LOSS_TOKENS pieces (B * longest), read LOSS_CHUNK pieces at a time
LOSS_ROWS, LOSS_TOKENS, LOSS_CHUNK = 512, 8_000_000, 256


def _unranked(k, prefixes, rows) -> Ranking:
    raise RuntimeError("this reading was asked for losses only (rank=False): read again with rank=True to rank")


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
        model = int8_copy(bundle.model) if ec.int8 else bundle.model
        self.pred = WordPredictor(model, bundle.tokenizer, ec.beam_width, ec.max_word_pieces, ec.max_beam_width)
        self.model, self.tok = self.pred.model, self.pred.tok
        self.device = self.pred.device
        self.search_stats = self.pred.search_stats  # the predictor's own counters, shared
        self._pieces: dict[str, list[int]] = {}  # token -> pieces: the ablation encodes each word hundreds of times

    def _encode(self, tokens: list[str], bos: bool = True) -> tuple[list[int], list[int]]:
        """(`bos` +) pieces of the tokens, and the index in ids where each token's first piece sits."""
        new = [t for t in dict.fromkeys(tokens) if t not in self._pieces]
        if new:
            self._pieces.update(zip(new, self.tok.encode_batch(new)))
        pieces = [self._pieces[t] for t in tokens]
        ids, starts = [self.tok.bos_id] if bos else [], []
        for p in pieces:
            starts.append(len(ids))
            ids += p
        return ids, starts

    def _warm_states(self, warms: list[Warm | None]) -> tuple[State, torch.Tensor | None]:
        """The state each row starts from (zeros, or the state after its warm start) and the network's last output
        there (B, H), which predicts a row's first piece (None when some row has read nothing). Each stream is read
        once, in one row, cut at every point some row starts from (a chunk of the stream per call)."""
        zero = self.model.init_state(1, self.device)
        cuts: dict[Stream, set[int]] = {}
        for w in warms:
            if w is not None:
                cuts.setdefault(w.stream, set()).add(w.tokens)
        at_cut: dict[tuple[Stream, int], tuple[State, torch.Tensor | None]] = {}
        for stream, wanted in cuts.items():
            ids, bounds = [], [0]  # bounds[n]: the index in ids just after the stream's first n tokens
            for seg in stream.segments:
                seg_ids, starts = self._encode(list(seg), bos=True)
                bounds.extend(len(ids) + e for e in starts[1:] + [len(seg_ids)])
                ids += seg_ids
            state, out, done = zero, None, 0
            for n in sorted(wanted):
                if n > len(bounds) - 1:
                    raise ValueError(f"a warm start of {n} tokens in a stream of {len(bounds) - 1}")
                cut = bounds[n]
                if cut > done:
                    feats, state = self.model(torch.tensor([ids[done:cut]], device=self.device), state)
                    out, done = feats[:, -1], cut
                at_cut[(stream, n)] = (state, out)
        got = [(zero, None) if w is None else at_cut[(w.stream, w.tokens)] for w in warms]
        outs = [o for _, o in got]
        return cat_states([st for st, _ in got]), None if any(o is None for o in outs) else torch.cat(outs)

    @staticmethod
    def _batches(lengths: list[int], per_batch: int = STEP_TOKENS, max_rows: int | None = None) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur = [], []
        for i in order:
            if cur and ((len(cur) + 1) * lengths[i] > per_batch or max_rows and len(cur) >= max_rows):
                out.append(cur)
                cur = []
            cur.append(i)
        return out + ([cur] if cur else [])

    def _batch(self, pending: list, reading: NetworkReading) -> NetworkBatch:
        keys = [key for key, _, _ in pending]
        state, lp = cat_states([s for _, s, _ in pending]), torch.cat([l for _, _, l in pending])

        beaten: dict[tuple[int, str], list[tuple[str, float]]] = {}  # (row, word): the words found to beat it

        def settling(k: int, prefixes: list[str] | None, rows: list[int] | None, settle: list[str] | None
                     ) -> Ranking:
            rows = list(range(len(keys))) if rows is None else rows
            known = None if settle is None else [beaten.get((r, w), []) for r, w in zip(rows, settle)]
            idx = torch.tensor(rows, device=self.device)
            got = self.pred.top_words(select_state(state, idx), lp.index_select(0, idx), k, prefixes, settle=settle,
                                      beaten=known)
            for r, w, b in zip(rows, settle or (), known or ()):
                beaten[(r, w)] = b
            return got
        return NetworkBatch(keys, lambda k, prefixes, rows: settling(k, prefixes, rows, None), settling, state, lp,
                            reading.vectors)

    def read(self, docs: list[list[str]], targets: list[list[int]], bos: bool = True, logp: bool = True,
             warm: list[Warm | None] | None = None, rank: bool = True, vectors: bool = False) -> NetworkReading:
        if not rank and not vectors:
            return NetworkReading.of(lambda reading: self._read_losses(docs, targets, bos, warm, reading))
        return NetworkReading.of(lambda reading: self._read(docs, targets, bos, logp, warm, vectors, reading))

    def _read_losses(self, docs, targets, bos: bool, warm, reading: NetworkReading) -> Iterator[TargetBatch]:
        """Losses only: rows sorted by length, LOSS_ROWS at a time, read in chunks of LOSS_CHUNK pieces from their
        warm states (a wide batch keeps the recurrence's matrix products full, and only a chunk's outputs are held);
        the output layer only where a target needs it: each inner piece's own log-probability, and the whole
        distribution after its last piece."""
        encoded = [self._encode(d, bos) for d in docs]
        with torch.no_grad():
            # every row's start once: a stream's reading is shared by all of its rows, whichever batch they fall in
            start_all, before_all = self._warm_states(warm) if warm else (None, None)
            lengths = [len(ids) for ids, _ in encoded]
            for batch in self._batches(lengths, LOSS_TOKENS, LOSS_ROWS):
                keys, tok_r, tok_t, owner, last_r, last_t = [], [], [], [], [], []
                for r, d in enumerate(batch):
                    ids, starts = encoded[d]
                    for j in targets[d]:
                        s = starts[j]
                        e = (starts[j + 1] if j + 1 < len(starts) else len(ids)) - 1  # the word's last piece
                        if s == 0 and before_all is None:
                            raise ValueError("a target at a row's first piece has no context: read it with bos=True "
                                             "or after a warm start")
                        tok_r += [r] * (e - s + 1)
                        tok_t += range(s - 1, e)  # the output at t predicts piece t + 1; t = -1: the warm start's
                        owner += [len(keys)] * (e - s + 1)
                        last_r.append(r)
                        last_t.append(e)
                        keys.append((d, j))
                if not keys:
                    continue
                longest = max(lengths[d] for d in batch)
                x = torch.full((len(batch), longest), self.tok.pad_id, dtype=torch.long, device=self.device)
                for r, d in enumerate(batch):
                    x[r, :lengths[d]] = torch.tensor(encoded[d][0])
                idx = torch.tensor(batch, device=self.device)
                state = select_state(start_all, idx) if warm else None
                rows = torch.tensor(tok_r + last_r, device=self.device)
                at = torch.tensor(tok_t + last_t, device=self.device)
                out = torch.empty(len(rows), self.model.hidden_dim, device=self.device)
                first = at < 0
                if first.any():
                    out[first] = before_all.index_select(0, idx)[rows[first]]
                for a in range(0, int(at.max()) + 1, LOSS_CHUNK):
                    feats, state = self.model(x[:, a:a + LOSS_CHUNK], state)  # (B, chunk, H)
                    here = (at >= a) & (at < a + LOSS_CHUNK)
                    if here.any():
                        out[here] = feats[rows[here], at[here] - a]
                n_tok = len(tok_r)
                piece_lp = self.model.target_log_probs(out[:n_tok], x[rows[:n_tok], at[:n_tok] + 1])
                total = torch.zeros(len(keys), device=self.device).index_add(
                    0, torch.tensor(owner, device=self.device), piece_lp.to(torch.float32))
                after = self.model.log_probs(out[n_tok:].unsqueeze(1), in_rank_order=True).squeeze(1)  # (N, V)
                total = total + self.pred.boundary_log_mass(after)
                reading.logp.update(zip(keys, total.tolist()))
                yield TargetBatch(keys, _unranked)

    def _read(self, docs, targets, bos: bool, logp: bool, warm, vectors: bool, reading: NetworkReading
              ) -> Iterator[NetworkBatch]:
        encoded = [self._encode(d, bos) for d in docs]
        start_all = self._warm_states(warm)[0] if warm else None
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
                state = select_state(start_all, torch.tensor(batch, device=self.device)) if warm \
                    else self.model.init_state(n, self.device)
                tok_lp = torch.zeros(n, longest, device=self.device)
                bnd = torch.zeros(n, longest, device=self.device)
                neg = torch.tensor(-math.inf, device=self.device)
                # The recurrence runs fused from one step some target is read after to the next (a state is kept
                # only there), in chunks of at most READ_TOKENS pieces when every step's log-probabilities are
                # needed; with neither those nor the vectors it stops after the last target.
                stops = sorted(at)
                end_all = longest if logp or vectors else (stops[-1] + 1 if stops else 0)
                chunk = max(1, READ_TOKENS // n) if logp else longest
                t = 0
                while t < end_all:
                    nxt = stops[bisect.bisect_left(stops, t)] + 1 if stops and stops[-1] >= t else end_all
                    end = min(nxt, t + chunk, end_all)
                    f, state = self.model(x[:, t:end], state)  # (B, end - t, H)
                    if vectors:
                        feats[:, t:end].copy_(f)
                    if logp:
                        lp = self.model.log_probs(f)  # (B, end - t, V)
                        known = min(end, longest - 1) - t  # steps whose next piece is in x
                        if known > 0:
                            tok_lp[:, t:t + known] = lp[:, :known].gather(2, x[:, t + 1:t + 1 + known, None])[..., 0]
                        bnd[:, t:end] = torch.logsumexp(torch.where(self.pred.masks.boundary, lp, neg), dim=2)
                        lp = lp[:, -1]
                    t = end
                    if t - 1 not in at:
                        continue
                    if not logp:
                        lp = self.model.log_probs(f[:, -1:]).squeeze(1)  # (B, V)
                    idx = torch.tensor([r for r, _ in at[t - 1]], device=self.device)
                    st, lps = select_state(state, idx), lp.index_select(0, idx)
                    for m, (_, key) in enumerate(at[t - 1]):
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

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True, warm: list[Warm | None] | None = None
                  ) -> list[list[str]]:
        """Top-k words after each context, read from a fresh state (after `bos` when the context is a document's
        start; without it for a truncated context, which starts mid-document). Contexts of the same length in pieces
        are read together in one call of the recurrence, so no row is padded and the state after the last piece is
        each row's own (the context-length curves read thousands of contexts of a few hundred pieces). With `warm`,
        row i starts from the state after warm[i] (warm.py) instead of zeros."""
        rows = [self._encode(c, bos)[0] for c in contexts]
        start_all = self._warm_states(warm)[0] if warm else None
        by_len: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_len.setdefault(len(r), []).append(i)
        out: dict[int, list[str]] = {}
        for n, idx in sorted(by_len.items()):
            per = max(1, min(self.ec.batch_size * 4, STEP_TOKENS * 4 // max(n, 1)))
            for a in range(0, len(idx), per):
                part = idx[a:a + per]
                x = torch.tensor([rows[i] for i in part], device=self.device)  # (B, n)
                start = select_state(start_all, torch.tensor(part, device=self.device)) if warm else None
                feats, state = self.model(x, start)  # (B, n, H): the whole context in one call
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

