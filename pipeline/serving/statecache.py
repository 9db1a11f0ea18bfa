"""Incremental reading for the server (issue 9): an LRU cache of hidden states keyed by context piece-id prefixes.

Typing adds a word at a time, so most requests extend a context the server has just read. The reader advances the
model one *word chunk* at a time (bos, then each word's pieces: a chunk starts at every piece that opens a word):

    ids     [bos] [▁मी ] [▁घरी] [▁जा त] [▁आहे]        chunk boundaries 0 1 2 3 5 (and the end, 6)
    cached        ^state after ids[:3] ("मी घरी")
    request "मी घरी जात आहे": longest cached boundary prefix is ids[:3] -> run only [▁जा त] and [▁आहे]

Because the chunking depends only on the ids, a request reads exactly the same chunks with or without the cache; the
cache merely skips the ones it has seen, so the results are bit-for-bit identical either way (tested). After each
request two states are kept: at the start of the last word (the prefix a user extends while typing that word) and at
the end (same text again, or the next word). The cache is bounded both in entries and in bytes.

With `keep_ends` an entry also keeps the top-layer output at the end of every chunk it read (the mixture's neural
cache keys: the state that predicted each following word), so the cache component reads the whole typed text while
the network reads only what is new.
"""
from __future__ import annotations

import sys
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from models.recurrent import State
from pipeline.evaluation.predict import WordPredictor, cat_states, completions, stepwise
from pipeline.evaluation.typed import typed_word


def _state_bytes(state: State) -> int:
    parts = state if isinstance(state, tuple) else (state,)
    return sum(t.numel() * t.element_size() for t in parts)


def _clone(state: State) -> State:
    return tuple(t.clone() for t in state) if isinstance(state, tuple) else state.clone()


@dataclass
class Entry:
    ids: array       # array("i"): 4 bytes per piece id
    state: State             # (L, 1, H) or a pair of them: the state after reading `ids`
    next_lp: Tensor | None   # (1, V) log-probs of the next piece; None for states kept mid-request
    nbytes: int
    ends: Tensor | None = None  # (chunks, H) top-layer output at each chunk's end, when the predictor keeps them


def _prefix_keys(ids: list[int]) -> list[int]:
    """keys[m] identifies ids[:m] (a chained hash, O(len) for all prefixes); an entry also keeps its ids, so a
    collision is detected, never served."""
    keys, h = [0], 0
    for i in ids:
        h = hash((h, i))
        keys.append(h)
    return keys


class StateCache:
    """LRU of `Entry`s; `max_entries` and `max_bytes` both bound it (0 entries disables it)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "bytes": self.nbytes, "max_entries": self.max_entries,
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def longest(self, ids: list[int], keys: list[int], positions: list[int]) -> Entry | None:
        """The entry for the longest ids[:m], m in `positions` (descending), usable at m (next_lp needed at the end)."""
        for m in positions:
            e = self._entries.get(keys[m])
            if e is None or (m == len(ids) and e.next_lp is None) or len(e.ids) != m or list(e.ids) != ids[:m]:
                continue
            self._entries.move_to_end(keys[m])
            self.hits += 1
            return e
        self.misses += 1
        return None

    def put(self, key: int, ids: list[int], state: State, next_lp: Tensor | None, ends: Tensor | None = None
            ) -> None:
        if self.max_entries <= 0:
            return
        state = _clone(state)
        next_lp = None if next_lp is None else next_lp.clone()  # never a view that pins a whole batch's tensor
        ends = None if ends is None else ends.clone()
        ids = array("i", ids)  # 4 bytes per id; a tuple would cost ~36 (pointer + int object)
        # tensors + the ids array as Python counts it + the entry, dict slot and key (~250 bytes)
        nbytes = _state_bytes(state) + sum(_state_bytes(t) for t in (next_lp, ends) if t is not None) + \
            sys.getsizeof(ids) + 250
        if nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
            if next_lp is None and old.next_lp is not None and old.ids == ids:
                next_lp, nbytes = old.next_lp, old.nbytes  # keep the richer entry for the same prefix
        self._entries[key] = Entry(ids, state, next_lp, nbytes, ends)
        self.nbytes += nbytes
        while self._entries and (len(self._entries) > self.max_entries or self.nbytes > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes


class IncrementalPredictor:
    """`WordPredictor.predict` with the context read chunk by chunk through a `StateCache`. Thread-safe: one lock
    covers the cache and every model call (torch modules are not re-entrant for this)."""

    def __init__(self, predictor: WordPredictor, cache: StateCache | None, max_context_pieces: int | None = None,
                 keep_ends: bool = False):
        self.predictor, self.cache, self.max_context_pieces = predictor, cache, max_context_pieces
        self.keep_ends = keep_ends
        self.model = predictor.model
        self._opens = predictor.masks.boundary.tolist()  # pieces that open a new chunk (word starts, eos)
        self.lock = threading.Lock()
        self.pieces_read = 0  # model steps actually run for contexts (what the cache saves)

    def word_spans(self, ids: list[int]) -> list[tuple[int, int]]:
        """[start, end) of each word's pieces in `ids`: bos left out, a word's continuation pieces joined to it (a
        context cut by `tail` starts at a word start)."""
        bos = self.predictor.tok.bos_id
        starts = [m for m, p in enumerate(ids) if p != bos and (m == 0 or ids[m - 1] == bos or self._opens[p])]
        return list(zip(starts, starts[1:] + [len(ids)]))

    def boundaries(self, ids: list[int]) -> list[int]:
        """Chunk starts after bos: 1 and every m > 1 whose piece opens a word, then len(ids)."""
        cuts = [m for m in range(1, len(ids)) if m == 1 or self._opens[ids[m]]]
        return cuts + [len(ids)]

    @stepwise
    def _context(self, ids: list[int]) -> tuple[State, Tensor, Tensor | None]:
        """State after `ids`, the next-piece log-probs (1, V) and, with keep_ends, the top-layer output at the end of
        every chunk (chunks, H)."""
        n, cuts = len(ids), self.boundaries(ids)
        keys = _prefix_keys(ids) if self.cache is not None else []
        start, state, ends = 0, None, []
        hit = self.cache.longest(ids, keys, cuts[::-1]) if self.cache is not None else None
        if hit is not None:
            if hit.next_lp is not None and len(hit.ids) == n:
                return hit.state, hit.next_lp, hit.ends
            start, state = len(hit.ids), hit.state
            ends = [hit.ends] if self.keep_ends else []
        last_word = cuts[-2] if len(cuts) > 1 else 0  # where the last chunk begins
        dev = self.predictor.device
        for a, b in zip([0, *cuts[:-1]], cuts):
            if b <= start:
                continue
            x = torch.tensor([ids[a:b]], device=dev)  # (1, T): one word's pieces
            features, state = self.model(x, state)
            if self.keep_ends:
                ends.append(features[0, -1:])
            self.pieces_read += b - a
            if b == last_word and self.cache is not None and b > start:
                self.cache.put(keys[b], ids[:b], state, None, torch.cat(ends) if self.keep_ends else None)
        next_lp = self.model.log_probs(features[:, -1:]).squeeze(1)  # (1, V)
        out = torch.cat(ends) if self.keep_ends else None
        if self.cache is not None:
            self.cache.put(keys[n], ids, state, next_lp, out)
        return state, next_lp, out

    def tail(self, ids: list[int]) -> list[int]:
        """At most max_context_pieces pieces: a longer context is read from the first word start that leaves no
        more, without bos (it starts mid-document), so one long text costs a bounded read under the lock."""
        n = self.max_context_pieces
        if n is None or len(ids) - 1 <= n:
            return ids
        cut = next((m for m in self.boundaries(ids)[:-1] if len(ids) - m <= n and self._opens[ids[m]]), len(ids) - n)
        return ids[cut:]

    def ids(self, texts: list[str]) -> list[list[int]]:
        """What is read for each text: bos + its pieces, cut to the last max_context_pieces (see `tail`)."""
        return [self.tail(self.predictor.context_ids(t)) for t in texts]

    def read(self, ids: list[list[int]]) -> list[tuple[State, Tensor, Tensor | None]]:
        """(state, next-piece log-probs, chunk ends) per row of ids; call under `lock`."""
        return [self._context(r) for r in ids]

    def predict(self, texts: list[str], k: int = 5, mode: str = "auto") -> list[list[dict[str, float]]]:
        """`WordPredictor.predict` through the cache: the k most probable next words after each text, or completions
        of the word it ends in, as [{"word", "prob"}, ...]."""
        typed = [typed_word(t, mode) for t in texts]
        ids = self.ids([" ".join(c) for c, _ in typed])
        with self.lock:
            read = self.read(ids)
            state = cat_states([r[0] for r in read])
            rows = self.predictor.top_words(state, torch.cat([r[1] for r in read]), k, [p for _, p in typed])
        return [completions(row, p) for row, (_, p) in zip(rows, typed)]
