"""Interpolated modified Kneser-Ney word n-gram (Chen & Goodman 1998): the count baseline of DESIGN §7.

Trained on the cleaned train split's whitespace tokens (punctuation included, as the neural models see it); every
document is `<s> tokens </s>` with one `<s>`, and an n-gram never reaches back past it: the first word of a document
is predicted from `<s>` alone (a bigram), the second from `<s> w1`, and so on. That is how the ARPA format's readers
(KenLM, SRILM) read a sentence, so the ARPA file written below means exactly what this class computes. Everything
is numpy over integer keys, no Python loop per n-gram:

    context key of order n   ck = w[t-1] | w[t-2] << B | … | w[t-n+1] << B(n-2)      (nearest word in the low bits)
    dropping the oldest word ck & (2^(B(n-2)) - 1)  ->  the context of order n-1
    table of order n         rows sorted by (ck, w); contexts are runs; lookup key = context index << B | w

    P_n(w | h) = max(a(hw) - D_n(a), 0) / Σ_v a(hv)  +  γ_n(h) · P_{n-1}(w | h')      (γ = discounted mass)
    P_1(w)     = max(a(w) - D_1(a), 0) / Σ_v a(v)    +  γ_1 / |V|                       (V includes <unk> and </s>)

`a` is the raw count at the highest order and for n-grams that start with `<s>` (nothing precedes them), else the
continuation count N1+(• hw). An unseen context backs off with γ = 1, so every distribution sums to 1 over V and
<unk> keeps a mass; a context shorter than order-1 words (a document's start, after its `<s>`) has no key at the
orders it cannot fill, so it reads as unseen there, exactly as the ARPA back-off does.
"""
from __future__ import annotations

import bisect
import gzip
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.corpus.cleaning import is_word

UNK, BOS, EOS = 0, 1, 2
SPECIALS = ("<unk>", "<s>", "</s>")


def _unique_pairs(ck: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique (ck, w) pairs and how often each occurs."""
    order = np.lexsort((w, ck))
    ck, w = ck[order], w[order]
    new = np.ones(len(ck), bool)
    new[1:] = (ck[1:] != ck[:-1]) | (w[1:] != w[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(ck)))
    return ck[starts], w[starts], counts


def _discounts(a: np.ndarray) -> np.ndarray:
    """Modified KN discounts D(1), D(2), D(3+) from the counts-of-counts (Chen & Goodman eq. 26)."""
    n = [int((a == i).sum()) for i in (1, 2, 3, 4)]
    if min(n) == 0:  # too little data for the estimate: plain absolute discounting
        return np.array([0.0, 0.5, 0.75, 0.9])
    y = n[0] / (n[0] + 2 * n[1])
    d = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
    # kept inside (0, count): every seen n-gram keeps some mass and every context leaves some to back off to
    return np.array([0.0] + [min(max(x, 0.05), i + 0.95) for i, x in enumerate(d)])


def context_tail(tokens: Sequence[str], j: int) -> Sequence[str]:
    """The tokens before index j that any n-gram of eval.ngram_order (≤ 10) can read: slicing a long document's
    whole history for each of its words would cost O(words²)."""
    return tokens[max(0, j - 16):j]


class KneserNey:
    def __init__(self, order: int = 4):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        self.vocab: list[str] = list(SPECIALS)
        self.index: dict[str, int] = {}
        self.tables: dict[int, dict[str, np.ndarray]] = {}
        self.build_seconds = 0.0

    # -------------------------------------------------------------------------------------------------- training
    def fit(self, docs: Iterable[str]) -> "KneserNey":
        t0 = time.perf_counter()
        token_docs = [d.split() for d in docs]
        freq = Counter(t for d in token_docs for t in d)
        self.vocab = list(SPECIALS) + [t for t, _ in freq.most_common()]
        self.index = {t: i for i, t in enumerate(self.vocab)}
        v = len(self.vocab)
        self.bits = max(1, (v - 1).bit_length())
        if self.bits * (self.order - 1) > 62:
            raise ValueError(f"vocabulary of {v} words is too large for a {self.order}-gram with 64-bit keys; "
                             "lower eval.ngram_order")
        stream = np.fromiter((i for d in token_docs for i in [BOS] + [self.index[t] for t in d] + [EOS]), np.int64)
        targets = np.flatnonzero(stream != BOS)
        # how many tokens before each target are its document's (its <s> included): the longest context it has
        starts = np.flatnonzero(stream == BOS)
        reach = targets - starts[np.searchsorted(starts, targets, side="right") - 1]
        w = stream[targets]
        cks = {1: np.zeros(len(targets), np.int64)}
        for n in range(2, self.order + 1):
            cks[n] = cks[n - 1] | (stream[np.maximum(targets - (n - 1), 0)] << (self.bits * (n - 2)))
        self.tables = {}
        upper = None  # the unique (ck, w) table of order n+1
        for n in range(self.order, 0, -1):
            inside = reach >= n - 1  # the order-n n-grams: those whose context stays inside the document
            uck, uw, raw = _unique_pairs(cks[n][inside], w[inside])
            a = raw.astype(np.float64)
            if upper is not None:  # continuation counts N1+(• h w) from the order-(n+1) table
                _, _, cont = _unique_pairs(upper[0] & ((1 << (self.bits * (n - 1))) - 1), upper[1])
                # every n-gram but those starting with <s> has a word before it inside its document, so the
                # extensions' suffixes are exactly the other n-grams, in the same sorted order
                first = (uck >> (self.bits * (n - 2))) & ((1 << self.bits) - 1) if n > 1 else np.full(len(uck), -1)
                extended = first != BOS
                if extended.sum() != len(cont):
                    raise RuntimeError(f"order {n}: {len(cont)} continuation counts for {extended.sum()} n-grams")
                a[extended] = cont
            upper = (uck, uw)
            self.tables[n] = self._table(uck, uw, a, _discounts(a))
        self.p1 = np.full(v, self.tables[1]["gamma"][0] / (v - 1))  # uniform share over V (all but <s>)
        self.p1[BOS] = 0.0
        np.add.at(self.p1, self.tables[1]["w"], self.tables[1]["alpha"])
        self.word_ok = np.array([False] * len(SPECIALS) + [is_word(t) for t in self.vocab[len(SPECIALS):]])
        ranked = np.argsort(-self.p1, kind="stable")
        self.ranked_words = ranked[self.word_ok[ranked]]
        self.build_seconds = time.perf_counter() - t0
        self.n_tokens = len(targets)
        return self

    def _table(self, uck: np.ndarray, uw: np.ndarray, a: np.ndarray, disc: np.ndarray) -> dict[str, np.ndarray]:
        new = np.ones(len(uck), bool)
        new[1:] = uck[1:] != uck[:-1]
        starts = np.flatnonzero(new)
        ctx_index = np.cumsum(new) - 1
        total = np.add.reduceat(a, starts)
        d = np.minimum(disc[np.minimum(a, 3).astype(int)], a)
        return {"ctx": uck[starts], "start": np.append(starts, len(uck)), "w": uw,
                "key": (ctx_index << self.bits) | uw, "a": a, "alpha": (a - d) / total[ctx_index],
                "gamma": np.add.reduceat(d, starts) / total, "discounts": disc}

    # -------------------------------------------------------------------------------------------------- queries
    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, UNK) for t in tokens]

    def _context_keys(self, contexts: Sequence[Sequence[str]], bos: bool = True) -> np.ndarray:
        """(N, order) context keys per order (column n-1 for order n): the last order-1 tokens; a context that
        starts its document (bos) begins with its one <s>. Orders the context is too short to fill are padded with
        <unk>: no training context holds <unk>, so those orders are unseen and the estimate backs off to what the
        context really shows (for a truncated context, bos=False, to its words alone)."""
        m = self.order - 1
        start = [BOS] if bos else []
        ctx = np.array([([UNK] * m + start + self.ids(c[-m:]))[-m:] if m else [] for c in contexts],
                       np.int64).reshape(len(contexts), m)
        keys = np.zeros((len(contexts), self.order), np.int64)
        for n in range(2, self.order + 1):
            keys[:, n - 1] = keys[:, n - 2] | (ctx[:, m - (n - 1)] << (self.bits * (n - 2)))
        return keys

    def _prob(self, keys: np.ndarray, w: np.ndarray) -> np.ndarray:
        p = self.p1[w]
        for n in range(2, self.order + 1):
            t = self.tables[n]
            if not len(t["ctx"]):  # no document is long enough for this order: every context backs off (γ = 1)
                continue
            ck = keys[:, n - 1]
            ci = np.minimum(np.searchsorted(t["ctx"], ck), len(t["ctx"]) - 1)
            found = t["ctx"][ci] == ck
            full = (ci << self.bits) | w
            pos = np.minimum(np.searchsorted(t["key"], full), len(t["key"]) - 1)
            hit = found & (t["key"][pos] == full)
            p = np.where(hit, t["alpha"][pos], 0.0) + np.where(found, t["gamma"][ci], 1.0) * p
        return p

    def log_prob(self, contexts: Sequence[Sequence[str]], words: Sequence[str], bos: bool = True) -> np.ndarray:
        """log P(word | preceding tokens) for N pairs; an unknown word gets P(<unk>)."""
        w = np.array(self.ids(words), np.int64)
        return np.log(self._prob(self._context_keys(contexts, bos), w))

    def matched_order(self, contexts: Sequence[Sequence[str]], bos: bool = True) -> np.ndarray:
        """(N,) how many context words the estimate rests on: the longest context (0 … order-1 words, a document's
        <s> counting as one) seen in training; 0 when even the last word was never seen as a context."""
        keys = self._context_keys(contexts, bos)
        out = np.zeros(len(contexts), np.int64)
        for n in range(2, self.order + 1):
            t = self.tables[n]
            if not len(t["ctx"]):
                continue
            ci = np.minimum(np.searchsorted(t["ctx"], keys[:, n - 1]), len(t["ctx"]) - 1)
            out = np.where(t["ctx"][ci] == keys[:, n - 1], n - 1, out)
        return out

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """P(· | context) over the whole vocabulary (ids), for checks."""
        keys = np.repeat(self._context_keys([context]), len(self.vocab), axis=0)
        return self._prob(keys, np.arange(len(self.vocab), dtype=np.int64))

    def _prefix_range(self, prefix: str) -> tuple[np.ndarray, int, int]:
        """Ids of the words (word_ok) that start with `prefix`: one contiguous run [lo, hi) of the vocabulary sorted
        by code point, found by bisection (built on first use); `_alpha_pos[id]` is a word's place in that order."""
        if not hasattr(self, "_alpha"):
            ok = np.flatnonzero(self.word_ok)
            order = sorted(ok.tolist(), key=lambda i: self.vocab[i])
            self._alpha = np.array(order, np.int64)
            self._alpha_words = [self.vocab[i] for i in order]
            self._alpha_pos = np.full(len(self.vocab), -1, np.int64)
            self._alpha_pos[self._alpha] = np.arange(len(self._alpha))
        lo = bisect.bisect_left(self._alpha_words, prefix)
        hi = bisect.bisect_left(self._alpha_words, prefix + "\U0010ffff", lo)
        return self._alpha[lo:hi], lo, hi

    def top_words(self, contexts: Sequence[Sequence[str]], k: int, bos: bool = True,
                  prefixes: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """The k most probable next *words* (punctuation, </s> and <unk> skipped) with log-probabilities, exactly.
        With `prefixes`, row i ranks only the words that start with prefixes[i].

        Below its one-word context a word's probability is a product of γ times P(w | previous word) when the
        previous word was seen before it, else times P_1(w): among the words that are no longer context's followers,
        the ranking is the one-word context's own (kept per previous word, `_below`) and among the rest the unigram
        ranking. So the candidates are the longer contexts' followers, the head of that kept ranking and the head of
        the unigram ranking, all scored exactly at the end."""
        all_keys = self._context_keys(contexts, bos)
        out = []
        for i, keys in enumerate(all_keys):
            prefix = prefixes[i] if prefixes else ""
            upper = [self._followers_at(n, keys[n - 1]) for n in range(3, self.order + 1)]
            upper = np.concatenate(upper) if upper else np.zeros(0, np.int64)
            upper = upper[self.word_ok[upper]]
            below, rest = self._below(int(keys[1])) if self.order > 1 else (np.zeros(0, np.int64), self.ranked_words)
            if prefix:
                _, lo, hi = self._prefix_range(prefix)
                inside = lambda ids: ids[(self._alpha_pos[ids] >= lo) & (self._alpha_pos[ids] < hi)]  # noqa: E731
                upper, below = inside(upper), inside(below)
                rest = self._unigram_head(prefix, k, below)
            if len(rest) < k and not prefix and len(rest) < len(self.ranked_words) - len(below):
                rest = self._unigram_head("", k, below)
            # k of each ranking suffice: a longer context's follower scores at least what its place in them says
            # (α ≥ 0), so one ahead of a word of the top k is in the top k too
            cand = np.unique(np.concatenate([upper, below[:k], rest[:k]]))
            p = self._prob(np.broadcast_to(keys, (len(cand), self.order)), cand)
            best = np.argsort(-p, kind="stable")[:k]
            out.append([(self.vocab[cand[i]], math.log(p[i])) for i in best])
        return out

    def _followers_at(self, n: int, ck: int) -> np.ndarray:
        """The words seen after the order-n context key ck (none when it was never seen)."""
        t = self.tables[n]
        ci = np.searchsorted(t["ctx"], ck)
        return t["w"][t["start"][ci]:t["start"][ci + 1]] if ci < len(t["ctx"]) and t["ctx"][ci] == ck \
            else np.zeros(0, np.int64)

    _REST = 256  # how much of the unigram ranking beyond a previous word's followers `_below` keeps

    def _below(self, ck: int) -> tuple[np.ndarray, np.ndarray]:
        """For a one-word context key: the words seen after it, best first by P(w | it), and the head of the unigram
        ranking without them. Kept per key (a server or an evaluation asks after the same words again and again)."""
        memo = self.__dict__.setdefault("_below_memo", {})
        got = memo.get(ck)
        if got is None:
            seen = self._followers_at(2, ck)
            seen = seen[self.word_ok[seen]]
            keys = np.full((len(seen), self.order), -1, np.int64)  # orders above 2 unseen: P(w | this word)
            keys[:, 0], keys[:, 1] = 0, ck
            below = seen[np.argsort(-self._prob(keys, seen), kind="stable")]
            got = (below, self._unigram_head("", self._REST, below))
            if len(memo) > 100_000:
                memo.clear()
            memo[ck] = got
        return got

    def _unigram_head(self, prefix: str, n: int, skip: np.ndarray) -> np.ndarray:
        """The n best words by P_1 (that start with `prefix`) that are not in `skip`."""
        if not prefix:
            head = self.ranked_words[:n + len(skip)]
        else:
            match, _, _ = self._prefix_range(prefix)
            m = n + len(skip)
            head = match if len(match) <= m else match[np.argpartition(-self.p1[match], m - 1)[:m]]
            head = head[np.argsort(-self.p1[head], kind="stable")]
        return head[~np.isin(head, skip)][:n]


# ------------------------------------------------------------------------------------------------------- ARPA files
# The model in the field's standard text format, so it can travel with a registered model without pickle:
# each seen n-gram hw carries log10 P(w | h) (the full interpolated probability) and each context h the log10 of its
# back-off weight γ(h), on h's own entry (`<s>` is listed with log10 p = -99: it is never predicted). Reading it back
# gives the same probabilities: P = P*(hw) when hw is listed, else γ(h)·P(w | h'). A document starts with one `<s>`,
# as in the format's readers (KenLM, SRILM): a loaded file scores every word as KneserNey.log_prob does.

def _digits(ck: int, n: int, bits: int) -> list[int]:
    """The n-1 context ids of an order-n key, oldest first."""
    return [(ck >> (bits * i)) & ((1 << bits) - 1) for i in range(n - 1)][::-1]


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else -99.0


def _open_text(path, mode: str):
    """ARPA text, gzip-compressed when the name ends in .gz (as KenLM and SRILM read it)."""
    return gzip.open(path, mode + "t", encoding="utf-8") if str(path).endswith(".gz") else \
        open(path, mode, encoding="utf-8")


def write_arpa(lm: KneserNey, path) -> None:
    """The model as an ARPA back-off file (`.arpa`, or `.arpa.gz`), the field's standard text format."""
    entries: dict[int, dict[tuple[int, ...], list]] = {n: {} for n in range(1, lm.order + 1)}
    for i in range(len(lm.vocab)):
        entries[1][(i,)] = [_log10(lm.p1[i]), None]
    for n in range(2, lm.order + 1):
        t = lm.tables[n]
        ci = np.repeat(np.arange(len(t["ctx"])), np.diff(t["start"]))
        ck = t["ctx"][ci]
        keys = np.full((len(ck), lm.order), -1, np.int64)  # orders above n: a key no table holds, so γ = 1 there
        for m in range(1, n + 1):
            keys[:, m - 1] = ck & ((1 << (lm.bits * (m - 1))) - 1)
        p = lm._prob(keys, t["w"])
        for c, w, pw in zip(ck.tolist(), t["w"].tolist(), p.tolist()):
            entries[n][(*_digits(c, n, lm.bits), w)] = [_log10(pw), None]
        for c, g in zip(t["ctx"].tolist(), t["gamma"].tolist()):
            entries[n - 1].setdefault(tuple(_digits(c, n, lm.bits)), [-99.0, None])[1] = _log10(g)
    with _open_text(path, "w") as f:
        f.write("\\data\\\n" + "".join(f"ngram {n}={len(entries[n])}\n" for n in entries) + "\n")
        for n, rows in entries.items():
            f.write(f"\\{n}-grams:\n")
            for ids, (lp, bo) in rows.items():
                f.write(f"{lp:.10g}\t{' '.join(lm.vocab[i] for i in ids)}" + (f"\t{bo:.10g}" if bo is not None else "")
                        + "\n")
            f.write("\n")
        f.write("\\end\\\n")


def read_arpa(path) -> KneserNey:
    """A KneserNey from write_arpa's file: the same vocabulary ids, tables and probabilities."""
    sections: dict[int, list[tuple[float, list[str], float]]] = {}
    n = 0
    with _open_text(path, "r") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("\\") and line.endswith("-grams:"):
                n = int(line[1:line.index("-")])
                sections[n] = []
            elif n and line and not line.startswith("\\"):
                parts = line.split("\t")
                sections[n].append((float(parts[0]), parts[1].split(" "), float(parts[2]) if len(parts) > 2 else 0.0))
    if 1 not in sections or [w for _, (w,), _ in sections[1][:3]] != list(SPECIALS):
        raise ValueError(f"{path}: not an ARPA file written by write_arpa (no \\1-grams: section starting with "
                         f"{', '.join(SPECIALS)}); rebuild the n-gram and write it again")
    lm = KneserNey(max(sections))
    lm.vocab = [w for _, (w,), _ in sections[1]]
    lm.index = {w: i for i, w in enumerate(lm.vocab)}
    lm.bits = max(1, (len(lm.vocab) - 1).bit_length())
    lm.p1 = np.array([10 ** lp if lp > -99 else 0.0 for lp, _, _ in sections[1]])
    backoff = {1: {(i,): 10 ** bo for i, (_, _, bo) in enumerate(sections[1])}}
    for n in range(2, lm.order + 1):
        rows = [(tuple(lm.index[w] for w in ws), lp, bo) for lp, ws, bo in sections[n]]
        backoff[n] = {ids: 10 ** bo for ids, _, bo in rows}
        seen = [(ids, lp) for ids, lp, _ in rows if lp > -99]
        ck = np.array([sum(i << (lm.bits * k) for k, i in enumerate(reversed(ids[:-1]))) for ids, _ in seen], np.int64)
        w = np.array([ids[-1] for ids, _ in seen], np.int64)
        order = np.lexsort((w, ck))
        ck, w = ck[order], w[order]
        p = np.array([10 ** lp for _, lp in seen])[order]
        new = np.ones(len(ck), bool)
        new[1:] = ck[1:] != ck[:-1]
        starts = np.flatnonzero(new)
        ctx_index = np.cumsum(new) - 1
        gamma = np.array([backoff[n - 1].get(tuple(_digits(c, n, lm.bits)), 1.0) for c in ck[starts].tolist()])
        lm.order = n - 1  # P_{n-1}(w | h') from the tables read so far
        keys = np.full((len(ck), n - 1), 0, np.int64)
        for m in range(2, n):
            keys[:, m - 1] = ck & ((1 << (lm.bits * (m - 1))) - 1)
        lower = lm._prob(keys, w) if len(ck) else np.zeros(0)
        lm.order = n
        lm.tables[n] = {"ctx": ck[starts], "start": np.append(starts, len(ck)), "w": w,
                        "key": (ctx_index << lm.bits) | w, "alpha": p - gamma[ctx_index] * lower, "gamma": gamma}
    lm.word_ok = np.array([False] * len(SPECIALS) + [is_word(t) for t in lm.vocab[len(SPECIALS):]])
    ranked = np.argsort(-lm.p1, kind="stable")
    lm.ranked_words = ranked[lm.word_ok[ranked]]
    return lm
