"""Whole-word prediction from a piece-level model (DESIGN §7): exact top-k whole words, exact word log-probability.

A word is one piece that starts with `▁` followed by continuation pieces; it ends where the next piece starts with
`▁` (or is eos). With `B` = the set of boundary pieces (word starts and eos) and w's pieces the tokenizer's own
segmentation of w (the one the model was trained on):

    log P(word | ctx) = Σ_j log p(piece_j | ctx, piece_<j) + log Σ_{b ∈ B} p(b | ctx, pieces)

Ranking and word perplexity use this same P(word): a piece sequence that decodes to w but is not w's own
segmentation is not a candidate (its mass is the model's error, not w's), so each word is one path in the search.

The search is a beam search over pieces that knows when it is exact: extending a prefix only lowers its score, so
every word under a dropped prefix scores at most the best dropped score. A row whose k-th word scores at least that
bound has its exact top k; any other row is searched again with a 4× wider beam (up to `max_beam_width`). Pieces that
cannot be part of a word (punctuation, pad, unk, bos, eos) never enter a beam.

Every function here is batched over many starting points at once (rows); nothing loops over words in Python except
the final bookkeeping of the top-k lists.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.recurrent import RecurrentLM, State
from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.corpus.tokenizer import Tokenizer
from pipeline.evaluation.typed import PrefixPieces, piece_bytes, typed_word, word_char


def stepwise(fn):
    """For loops that feed the model one piece at a time: no autograd, and PyTorch's native RNN kernels instead of
    oneDNN's, whose fixed cost per call dominates when T = 1 (measured: bench/evaluate.py)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            return fn(*args, **kwargs)
    return wrapper


def select_state(state: State, index: Tensor) -> State:
    """Rows of a state by index: (L, N, H) -> (L, len(index), H)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def cat_states(states: list[State]) -> State:
    if isinstance(states[0], tuple):
        return tuple(torch.cat([s[i] for s in states], 1) for i in range(len(states[0])))
    return torch.cat(states, 1)


@dataclass
class PieceMasks:
    starts: Tensor    # (V,) bool: pieces that can open a word
    inner: Tensor     # (V,) bool: pieces that can continue a word
    boundary: Tensor  # (V,) bool: pieces that end the current word when they come next (word starts + eos)

    @classmethod
    def of(cls, tok: Tokenizer, device=None) -> "PieceMasks":
        special = [tok.sp.is_control(i) or tok.sp.is_unknown(i) for i in range(tok.vocab_size)]
        start, inner = [], []
        for i, p in enumerate(tok.pieces):
            body = p[1:] if p.startswith("\u2581") else p
            ok = not special[i] and (tok.sp.is_byte(i) or all(map(word_char, body)))
            start.append(ok and p.startswith("\u2581") and not body[:1] in (".", ","))
            inner.append(ok and not p.startswith("\u2581"))
        boundary = torch.tensor([p.startswith("\u2581") for p in tok.pieces], device=device)
        boundary[tok.eos_id] = True
        return cls(torch.tensor(start, device=device), torch.tensor(inner, device=device), boundary)


class WordPredictor:
    """Next whole words for contexts; shared by evaluation, the MLflow pyfunc and the HTTP server."""

    def __init__(self, model: RecurrentLM, tokenizer: Tokenizer, beam_width: int = 8, max_word_pieces: int = 12,
                 max_beam_width: int = 128):
        self.model, self.tok = model.eval(), tokenizer
        self.beam_width, self.max_word_pieces = beam_width, max_word_pieces
        self.max_beam_width = max(max_beam_width, beam_width)
        self.device = next(model.parameters()).device
        self.masks = PieceMasks.of(tokenizer, self.device)
        # The search reads log-probabilities in the output layer's own column order (RecurrentLM.log_probs)
        order = model.rank_order()
        self._inner_cols = self.masks.inner[order].nonzero().flatten()  # columns of continuation pieces
        self._inner_ids = order[self._inner_cols]                        # ... and their piece ids
        self._boundary_ranked = self.masks.boundary[order].float()       # (V,) 1 at boundary columns
        self._word_cache: dict[tuple[int, ...], str | None] = {}
        self._piece_cache: dict[str, tuple[int, ...]] = {}
        self.spelled = piece_bytes(tokenizer)
        self.prefix_pieces = PrefixPieces(self.spelled)
        self._masks: dict[tuple, Tensor] = {}
        # piece id -> its column among the continuation columns (-1: not a continuation piece)
        self._inner_pos = torch.full((tokenizer.vocab_size,), -1, dtype=torch.long, device=self.device)
        self._inner_pos[self._inner_ids] = torch.arange(len(self._inner_ids), device=self.device)
        # rows searched, rows searched again wider, rows still not proven exact at max_beam_width, rows asked only
        # to settle one word (top_words' `settle`) and of those the ones answered by words known to beat it
        self.search_stats = {"rows": 0, "widened": 0, "not_exact": 0, "settled": 0, "known_out": 0}

    # --------------------------------------------------------------------------------------------- reading text
    def context_ids(self, text: str) -> list[int]:
        """`bos` + pieces of the cleaned text: what the model saw at the start of every training document."""
        cleaned = clean_text(text)
        return [self.tok.bos_id] + (self.tok.encode(cleaned) if cleaned else [])

    @torch.no_grad()
    def read(self, ids: list[list[int]], state: State | None = None) -> tuple[State, Tensor]:
        """Run the model over each row's pieces (rows may differ in length); return the state after each row's last
        piece and the log-probabilities of the next piece, (N, V). `state`, when given, is where each row starts."""
        n = len(ids)
        lengths = torch.tensor([len(r) for r in ids])
        if (lengths == 0).any():
            raise ValueError("every row needs at least one piece")
        out_states: list[State | None] = [None] * n
        out_lp = torch.empty(n, self.model.vocab_size, device=self.device)
        # Rows of equal length run together: one fused call per length group, no padding to get wrong.
        for length in lengths.unique():
            rows = (lengths == length).nonzero().flatten()
            x = torch.tensor([ids[i] for i in rows.tolist()], device=self.device)  # (n_rows, T)
            start = None if state is None else select_state(state, rows.to(self.device))
            features, new_state = self.model(x, start)
            out_lp[rows] = self.model.log_probs(features[:, -1:]).squeeze(1)
            for j, i in enumerate(rows.tolist()):
                out_states[i] = select_state(new_state, torch.tensor([j], device=self.device))
        return cat_states(out_states), out_lp

    # ---------------------------------------------------------------------------------------------- beam search
    def _word(self, pieces: tuple[int, ...]) -> str | None:
        """The word these pieces spell, when they are its own segmentation and it is a word cleaning could leave."""
        if len(self._word_cache) > 200_000:  # bounded: a long-running server sees endless piece sequences
            self._word_cache.clear()
        if pieces not in self._word_cache:
            text = self.tok.decode(list(pieces)).strip()
            ok = text and is_word(text) and clean_text(text) == text and tuple(self.tok.encode(text)) == pieces
            self._word_cache[pieces] = text if ok else None
        return self._word_cache[pieces]

    @stepwise
    def top_words(self, state: State, next_lp: Tensor, k: int, prefixes: list[str] | None = None,
                  prove: bool = True, settle: list[str] | None = None,
                  beaten: list[list[tuple[str, float]]] | None = None) -> list[list[tuple[str, float]]]:
        """For N starting points (state after the context, log-probs of the next piece), the k most probable whole
        words of at most max_word_pieces pieces with their log-probabilities, best first: exact (see the module
        docstring) unless a row stays unproven at max_beam_width (counted in search_stats["not_exact"]).
        `prefixes[i]` (cleaned, NFC; "" for none) keeps row i to words that start with it: pieces that cannot spell
        it never enter a beam, so the search stays exact among the words that match.

        `settle[i]` (the typist's question): row i only has to settle whether that word is in its top k. Its own
        score s is computed exactly, beams at or below s are not extended and the row stops once k words beat s: the
        word is out when k words beat it, in when fewer do and nothing dropped beats it (then its row is the words
        found above it and the word itself; else the words found that beat it). Same answer as the full search, much
        less search. `beaten[i]`, kept by the caller across calls on the same context: the words found to beat
        settle[i] so far; under a longer prefix, k of them that still match answer "out" without a search, and a
        search that finds more adds them.
        """
        n = next_lp.size(0)
        out: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        want = [b" " + p.encode("utf-8") if p else b"" for p in prefixes] if prefixes else [b""] * n
        self.search_stats["rows"] += n
        todo, floor = torch.arange(n), None
        if settle is not None:
            todo, floor = self._settling(state, next_lp, settle, want)
            if beaten is not None:  # k known to beat it under this prefix too: out, unsearched
                for i in todo.tolist():
                    still = [(w, v) for w, v in beaten[i] if w.startswith(prefixes[i] if prefixes else "")]
                    if len(still) >= k:
                        out[i] = still
                        self.search_stats["known_out"] += 1
                todo = torch.tensor([i for i in todo.tolist() if not out[i]], dtype=torch.long)
        width = max(self.beam_width, k)
        while len(todo):
            sub = todo.to(self.device)
            found, bounds = self._search(select_state(state, sub), next_lp.index_select(0, sub), k, width,
                                         [want[i] for i in todo.tolist()],
                                         None if floor is None else [floor[i] for i in todo.tolist()],
                                         every=floor is not None)
            again = []
            for j, (i, row, bound) in enumerate(zip(todo.tolist(), found, bounds)):
                out[i] = row
                if floor is not None:  # settle[i] scores floor[i]: is it beaten k times, or by nothing unfound?
                    above = [(w, v) for w, v in row if v > floor[i] and w != settle[i]]
                    if len(above) >= k:
                        out[i] = above
                        if beaten is not None:
                            beaten[i] = above
                        continue
                    out[i] = row[:k]
                    if bound <= floor[i]:
                        out[i] = above + [(settle[i], floor[i])]
                        continue
                # exact: the k-th word found beats everything dropped (fewer than k words: nothing may be dropped)
                elif (row[-1][1] if len(row) == k else -math.inf) >= bound:
                    continue
                again.append(j)
            if not again:
                break
            if not prove or width >= self.max_beam_width:
                self.search_stats["not_exact"] += len(again)
                break
            self.search_stats["widened"] += len(again)
            todo, width = todo[again], min(width * 4, self.max_beam_width)
        return out

    @stepwise
    def search_words(self, state: State, next_lp: Tensor, width: int, prefixes: list[str],
                     floors: list[float] | None = None) -> tuple[list[list[tuple[str, float]]], list[float]]:
        """One beam search of `width` per row (under prefixes[i]): every word it finds with its exact log-probability,
        best first, and a bound no word it did not find scores above (the best score it dropped, or its width-th
        word: beams below that were not extended). What a caller that mixes the network with other parts needs:
        whatever the beam missed is bounded, so the mixture's own top k can be proven (mixture_search.mixed_search).
        `floors[i]`: row i only wants words above it (beams at or below it are not extended, and the row stops
        once `width` words beat it); a word not found then scores at most max(bound, floor)."""
        want = [b" " + p.encode("utf-8") if p else b"" for p in prefixes]
        self.search_stats["rows"] += len(want)
        found, dropped = self._search(state, next_lp, width, width, want, floors, every=True)
        bounds = [max(b, row[width - 1][1] if len(row) >= width else -math.inf) for row, b in zip(found, dropped)]
        if floors is not None:  # a row that found `width` words above its floor stopped with beams unextended
            bounds = [0.0 if sum(v > f for _, v in row) >= width else b for row, b, f in zip(found, bounds, floors)]
        return found, bounds

    def _settling(self, state: State, next_lp: Tensor, settle: list[str], want: list[bytes]
                  ) -> tuple[Tensor, list[float]]:
        """For top_words' `settle`: the rows still to search and a floor per row, its word's own score (a word
        beats it only above that; the word's own path is told by its name). A word the search can never reach (not
        under the row's prefix, not its own segmentation, too many pieces, not a word) is never in a top k: its row
        is answered empty, unsearched."""
        reach = []
        for i, w in enumerate(settle):
            pieces = self._pieces_of(w)
            if pieces is not None and (b" " + w.encode("utf-8")).startswith(want[i]) \
                    and len(pieces) <= self.max_word_pieces and bool(self.masks.starts[pieces[0]]) \
                    and all(bool(self.masks.inner[p]) for p in pieces[1:]) and self._word(pieces) == w:
                reach.append(i)
        self.search_stats["settled"] += len(settle)
        if not reach:
            return torch.arange(0), []
        rows = torch.tensor(reach)
        own = self.word_log_prob(select_state(state, rows.to(self.device)), next_lp.index_select(0, rows.to(
            self.device)), [settle[i] for i in reach]).tolist()
        floor = [math.inf] * len(settle)
        for i, v in zip(reach, own):
            floor[i] = v
        return rows, floor

    def _pieces_of(self, word: str) -> tuple[int, ...] | None:
        if not word or word != word.strip():
            return None
        got = self._piece_cache.get(word)
        if got is None:
            if len(self._piece_cache) > 200_000:
                self._piece_cache.clear()
            got = self._piece_cache[word] = tuple(self.tok.encode(word))
        return got or None

    def _allowed(self, rests: list[bytes], columns: int, pos: Tensor | None = None) -> Tensor:
        """(len(rests), columns) bool: the pieces each row may take next with `rests[r]` of its prefix unspelled
        (all when nothing is left); `pos` maps piece ids to columns (-1: not a column). One mask per distinct rest
        (a row's beams mostly share theirs), memoised."""
        distinct = list(dict.fromkeys(rests))
        masks = torch.stack([self._mask(r, columns, pos) for r in distinct])
        index = {r: i for i, r in enumerate(distinct)}
        return masks.index_select(0, torch.tensor([index[r] for r in rests], device=self.device))

    def _mask(self, rest: bytes, columns: int, pos: Tensor | None) -> Tensor:
        key = (rest, columns, pos is None)
        got = self._masks.get(key)
        if got is None:
            got = torch.ones(columns, dtype=torch.bool, device=self.device)
            if rest:
                ids = torch.tensor(self.prefix_pieces(rest), dtype=torch.long, device=self.device)
                cols = ids if pos is None else pos[ids]
                got[:] = False
                got[cols[cols >= 0]] = True
            if len(self._masks) > 4096:  # bounded: ~8 kB each
                self._masks.clear()
            self._masks[key] = got
        return got

    def _search(self, state: State, next_lp: Tensor, k: int, width: int, want: list[bytes],
                floor: list[float] | None = None, every: bool = False
                ) -> tuple[list[list[tuple[str, float]]], list[float]]:
        """One beam search of `width`; per row the k best words found (`every`: all of them, best first) and the best
        score it dropped (no word it did not find scores higher, or the row's k words were found first and beat it).
        want[r]: the bytes row r's word must start with (b"" for any word); a beam that has spelled c bytes of it
        must spell want[r][c:] next, and only a beam that has spelled all of it can end in a word."""
        n = next_lp.size(0)
        neg = torch.tensor(-math.inf, device=self.device)
        starts = self.masks.starts.expand(n, -1)
        if any(want):
            starts = starts & self._allowed(want, next_lp.size(1))
        first = torch.where(starts, next_lp, neg)  # only word starts (that fit the prefix) can open the word
        width = min(width, int(self.masks.starts.sum()))
        top = first.topk(min(width + 1, first.size(1)), dim=1)
        score, piece = top.values[:, :width], top.indices[:, :width]  # (N, W)
        # bound[r]: the best score of anything this search dropped; no word under it can score higher
        bound = top.values[:, width] if top.values.size(1) > width else torch.full((n,), -math.inf)
        bound = bound.tolist()
        beams = [[(int(p),) for p in row] for row in piece.tolist()]
        # spelled[r][b]: how many bytes of want[r] beam b has spelled (all of them once it has gone past)
        spelled = [[min(len(self.spelled[p[0]]), len(want[r])) for p in row] for r, row in enumerate(beams)]
        rows = torch.arange(n, device=self.device).repeat_interleave(width)  # beam b of row r sits at r*W + b
        beam_state = select_state(state, rows)
        done: list[dict[str, float]] = [dict() for _ in range(n)]
        alive = list(range(n))  # the rows still searched; score/piece/beams/beam_state/kth hold only these
        kth = torch.full((n,), -math.inf, device=self.device)  # per alive row: its k-th best word so far
        # floor[r]: row r only asks which words score above it: a beam at or below it is not extended, and the row
        # is finished once k words beat it
        low = torch.tensor(floor, device=self.device) if floor is not None else None
        for step in range(self.max_word_pieces):
            # Extending only lowers a prefix's probability, so a beam at or below its row's k-th word can add
            # nothing: the model runs on live beams only, and a row without one is finished and leaves the batch.
            limit = kth if low is None else torch.where(kth > low, math.inf, torch.maximum(kth, low))
            live_mask = score > limit.unsqueeze(1)  # (A, W)
            keep = live_mask.any(dim=1).nonzero().flatten()
            if len(keep) == 0:
                break
            if len(keep) < len(alive):
                alive, beams = [alive[i] for i in keep.tolist()], [beams[i] for i in keep.tolist()]
                spelled = [spelled[i] for i in keep.tolist()]
                score, piece, kth, live_mask = (t.index_select(0, keep) for t in (score, piece, kth, live_mask))
                low = None if low is None else low.index_select(0, keep)
                beam_rows = (keep.unsqueeze(1) * width + torch.arange(width, device=self.device)).reshape(-1)
                beam_state = select_state(beam_state, beam_rows)
            a = len(alive)
            live = live_mask.reshape(-1).nonzero().flatten()  # (L,) flat beam indices r*W + b
            feats, live_state = self.model(piece.reshape(-1, 1).index_select(0, live), select_state(beam_state, live))
            lp = self.model.log_probs(feats, in_rank_order=True).squeeze(1)  # (L, V), columns = self._rank_order
            live_score = score.reshape(-1).index_select(0, live)
            end = live_score + self.boundary_log_mass(lp)
            live_list = live.tolist()
            for idx, e in zip(live_list, end.tolist()):
                r, b = idx // width, idx % width
                if spelled[r][b] < len(want[alive[r]]):
                    continue  # the prefix is not spelled yet: no word ends here
                word = self._word(beams[r][b])
                if word is not None:
                    done[alive[r]][word] = e  # one path per word: its own segmentation
            if step == self.max_word_pieces - 1:
                break  # longer words are not candidates
            kth = torch.tensor([sorted(done[r].values(), reverse=True)[k - 1] if len(done[r]) >= k else -math.inf
                                for r in alive], device=self.device)
            # The row's best width+1 extensions lie among each beam's best width+1: take those per beam, then
            # merge per row. The (width+1)-th of the merge is the best score this step drops.
            per_beam = min(width + 1, len(self._inner_cols))
            inner_lp = lp.index_select(1, self._inner_cols)
            rests = [want[alive[i // width]][spelled[i // width][i % width]:] for i in live_list]
            if any(rests):  # a beam still spelling its prefix may only take the pieces that continue it
                inner_lp = inner_lp.masked_fill(~self._allowed(rests, inner_lp.size(1), self._inner_pos), -math.inf)
            ext = inner_lp.topk(per_beam, dim=1)
            cand = torch.full((a * width, per_beam), -math.inf, device=self.device)
            cand[live] = live_score.unsqueeze(1) + ext.values
            cand_piece = torch.zeros(a * width, per_beam, dtype=torch.long, device=self.device)
            cand_piece[live] = self._inner_ids[ext.indices]
            top = cand.view(a, -1).topk(min(width + 1, width * per_beam), dim=1)
            if top.values.size(1) > width:
                for r, dropped in zip(alive, top.values[:, width].tolist()):
                    bound[r] = max(bound[r], dropped)
            score, flat = top.values[:, :width], top.indices[:, :width]
            parent, piece = flat // per_beam, cand_piece.view(a, -1).gather(1, flat)  # (A, W)
            beams = [[beams[r][p] + (c,) for p, c in zip(prow, crow)]
                     for r, (prow, crow) in enumerate(zip(parent.tolist(), piece.tolist()))]
            spelled = [[min(spelled[r][p] + len(self.spelled[c]), len(want[alive[r]])) for p, c in zip(prow, crow)]
                       for r, (prow, crow) in enumerate(zip(parent.tolist(), piece.tolist()))]
            # Each new beam's state is its parent's after this step; a parent that was not live only ever has
            # -inf children, which never run again, so any row serves them.
            slot = torch.zeros(a * width, dtype=torch.long, device=self.device)
            slot[live] = torch.arange(len(live), device=self.device)
            gather = (torch.arange(a, device=self.device).unsqueeze(1) * width + parent).reshape(-1)
            beam_state = select_state(live_state, slot.index_select(0, gather))
        return [sorted(d.items(), key=lambda kv: -kv[1])[:None if every else k] for d in done], bound

    # ----------------------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def word_log_prob(self, state: State, next_lp: Tensor, words: list[str]) -> Tensor:
        """Exact log P(word | context) for N (context, word) pairs, with the tokenizer's own segmentation. Only
        what the sum needs is computed: each inner piece's own log-probability, and the whole distribution once per
        word, after its last piece (the boundary mass)."""
        pieces = [self.tok.encode(w.strip()) for w in words]
        total = next_lp.gather(1, torch.tensor([[p[0]] for p in pieces], device=self.device)).squeeze(1)
        longest = max(len(p) for p in pieces)
        padded = torch.tensor([p + [p[-1]] * (longest - len(p)) for p in pieces], device=self.device)
        feats, _ = self.model(padded, state)  # feats[:, j] predicts piece j+1
        inner = [(i, j) for i, p in enumerate(pieces) for j in range(1, len(p))]
        if inner:
            rows = torch.tensor([i for i, _ in inner], device=self.device)
            cols = torch.tensor([j for _, j in inner], device=self.device)
            got = self.model.target_log_probs(feats[rows, cols - 1], padded[rows, cols])
            total = total.index_add(0, rows, got.to(total.dtype))
        lengths = torch.tensor([len(p) for p in pieces], device=self.device)
        last = self.model.log_probs(feats[torch.arange(len(pieces), device=self.device), lengths - 1].unsqueeze(1),
                                    in_rank_order=True).squeeze(1)  # (N, V) after each word's last piece
        return total + self.boundary_log_mass(last)

    def boundary_log_mass(self, ranked_lp: Tensor) -> Tensor:
        """log P(a word ends here): the mass of the pieces that start a new word or end the text, from log-probabilities
        in the adaptive softmax's rank order (N, V)."""
        return (ranked_lp.exp() @ self._boundary_ranked).log()

    # ----------------------------------------------------------------------------------------------- the API
    def predict(self, texts: list[str], k: int = 5, mode: str = "auto") -> list[list[dict[str, float]]]:
        """The k most probable next words after each text, or completions of the word it ends in (`typed_word`), as
        [{"word", "prob"}, ...]; a completion's prob is renormalised over the completions found (see `completions`)."""
        typed = [typed_word(t, mode) for t in texts]
        state, lp = self.read([self.context_ids(" ".join(c)) for c, _ in typed])
        rows = self.top_words(state, lp, k, [p for _, p in typed])
        return [completions(row, p) for row, (_, p) in zip(rows, typed)]


def completions(row: list[tuple[str, float]], prefix: str) -> list[dict[str, float]]:
    """[{"word", "prob"}] from (word, log-prob) pairs, best first. For a typed prefix the probabilities are
    renormalised over the words listed, all of which match it: P(word | context, the word starts with the prefix)
    among the candidates (the mass of matching words never ranked is not known exactly)."""
    probs = [math.exp(s) for _, s in row]
    total = sum(probs) if prefix else 1.0
    return [{"word": w, "prob": p / total if total > 0 else 0.0} for (w, _), p in zip(row, probs)]
