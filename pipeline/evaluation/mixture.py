"""The network mixed with the Kneser-Ney n-gram and a continuous cache (DESIGN §7 "Mixture"), at the word level:

    P(w | h) = λ_net(c)·P_net(w | h) + λ_kn(c)·P_kn(w | h) + λ_cache(c)·P_cache(w | h)

    P_net    the network's whole-word probability from pieces (predict.py), exact
    P_kn     the interpolated Kneser-Ney n-gram; 0 for a word outside its vocabulary (its <unk> mass belongs to no
             one word, so counting it for every unseen word would let the mixture sum past 1)
    P_cache  Σ_{i < t, t - i <= W, w_i = w} softmax_i(θ · q_t·q_i): q_i is the network's top-layer state that
             predicted word i, so a word recurs where the state looks like the one that once preceded it
             (Grave et al. 2017)
    c        the context's class: how many words of context the n-gram matched (0 … order-1) and how many words
             the cache holds (0, 1–3, 4–15, 16–63, 64+: `history_edges`): a cache over three words is peaky and
             mostly wrong (the next word repeats one of the last three under 1 % of the time in the test text), one
             over a paragraph is often right, so each gets its own λ; with `context_dependent=False` one class holds
             every word

This module is the served model alone — its weights, how it is stored, the cache, the mixing and `mixed_top`, the
one ranking function the server, the pyfunc and the evaluation all use; the server imports nothing else of the
evaluation. θ and W are chosen on the validation split by grid, the λ of each class by EM on the validation words'
log-likelihood (mixture_fit.py); mixture_scorer.py puts the mixture behind the `Scorer` protocol.

The top k is exact: the k words of highest mixture probability, proven by a threshold search over the parts' sorted
lists (`mixed_search`): each part's top K under the typed prefix with a bound on everything it did not list, the
network's exact probability computed only for words that could still reach the top k, K widened where the bound is
not beaten. `mixed_top` is the one function the server and the evaluation both rank with; a completion's
probabilities are renormalised over the words listed.
"""
from __future__ import annotations

import bisect
import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.evaluation.ngram import KneserNey, read_arpa, write_arpa
from pipeline.evaluation.predict import select_state

PARTS = ("net", "kn", "cache")
HISTORY_EDGES = (1, 4, 16, 64)  # cache classes by words of history: 0, 1-3, 4-15, 16-63, 64+


@dataclass
class MixtureWeights:
    parts: tuple[str, ...]                       # the parts mixed, a subset of PARTS
    weights: dict[str, list[float]] = field(default_factory=dict)  # class -> λ per part (same order), sum 1
    theta: float = 0.0
    window: int = 0
    context_dependent: bool = True
    history_edges: tuple[int, ...] = ()  # () : the classes of fits before issue 22, "cache empty or not"
    skip: int = 0  # the cache leaves out the last `skip` words: they are what was just typed (see cache_distributions)

    def __post_init__(self):
        if not self.parts or set(self.parts) - set(PARTS):
            raise ValueError(f"mixture parts {list(self.parts)}: give one or more of {list(PARTS)}")

    def context_class(self, order: int, history: int) -> str:
        """The class of a context whose n-gram matched `order` words and whose cache holds `history` words."""
        if not self.context_dependent:
            return "all"
        if "cache" not in self.parts:
            return f"o{order}"
        if not self.history_edges:
            return f"o{order}" + ("-nocache" if not history else "")
        b = bisect.bisect_right(self.history_edges, history)
        lo = self.history_edges[b - 1] if b else 0
        if b == len(self.history_edges):
            return f"o{order}-h{lo}+"
        hi = self.history_edges[b] - 1
        return f"o{order}-h{lo}" + (f"-{hi}" if hi > lo else "")

    def lam(self, cls: str) -> np.ndarray:
        default = self.weights.get("all") or [1.0 / len(self.parts)] * len(self.parts)
        return np.asarray(self.weights.get(cls, default), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parts": list(self.parts), "history_edges": list(self.history_edges)}



# ------------------------------------------------------------------------------------------- stored with a model
# A fitted mixture travels with the network (the registered model's artifacts, or runs/<run>/mixture/) as two
# documented text files, nothing pickled: mixture.json (MixtureWeights + K + how it was fitted) and the n-gram as
# ARPA text (gzip), the format KenLM, SRILM and every n-gram toolkit read.
WEIGHTS_FILE, ARPA_FILE = "mixture.json", "ngram.arpa.gz"


class MixtureError(ValueError):
    """A stored mixture cannot be read; the message names the file and the fix."""


@dataclass
class Mixture:
    lm: KneserNey | None
    weights: MixtureWeights
    candidates: int
    about: dict[str, Any] = field(default_factory=dict)  # the fit: validation words, word ppl, ...


def save_mixture(directory, lm: KneserNey | None, weights: MixtureWeights, candidates: int,
                 about: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if "kn" in weights.parts:
        write_arpa(lm, directory / ARPA_FILE)
    blob = {"weights": weights.to_dict(), "candidates": candidates, "about": about or {}}
    (directory / WEIGHTS_FILE).write_text(json.dumps(blob, indent=1, ensure_ascii=False, default=str),
                                          encoding="utf-8")
    return directory


def load_mixture(directory) -> Mixture | None:
    """The mixture stored in `directory`, or None when it holds none (a model trained before mixtures existed)."""
    directory = Path(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
        w = blob["weights"]
        weights = MixtureWeights(tuple(w["parts"]), {str(c): [float(x) for x in v] for c, v in w["weights"].items()},
                                 float(w["theta"]), int(w["window"]), bool(w["context_dependent"]),
                                 tuple(int(e) for e in w.get("history_edges", ())), int(w.get("skip", 0)))
        if any(len(v) != len(weights.parts) for v in weights.weights.values()):
            raise ValueError("a class's weights do not match the parts")
        candidates = int(blob["candidates"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MixtureError(f"{path} is not a mixture written by marathi-nwp ({type(e).__name__}: {e}); refit it "
                           "with `make mix` or retrain with `make run`") from None
    lm = None
    if "kn" in weights.parts:
        try:
            lm = read_arpa(directory / ARPA_FILE)
        except FileNotFoundError:
            raise MixtureError(f"{directory} has {WEIGHTS_FILE} but not the n-gram it mixes ({ARPA_FILE}); copy "
                               "both files together, or refit with `make mix`") from None
        except (ValueError, KeyError, IndexError, EOFError, OSError) as e:
            raise MixtureError(f"{directory / ARPA_FILE} is truncated or not an ARPA file written by marathi-nwp "
                               f"({type(e).__name__}); refit with `make mix` or retrain with `make run`") from None
    return Mixture(lm, weights, candidates, blob.get("about") or {})


def mixture_dir(bundle) -> Path:
    """Where a model's mixture lives: inside an export directory (what the registry stores), or runs/<run>/mixture/
    beside a training checkpoint (runs/<run>/checkpoints/*.ckpt)."""
    source = Path(str(bundle.meta.get("source", "")))
    return source if source.is_dir() else source.parent.parent / "mixture"


def mixture_of(bundle) -> Mixture | None:
    """A loaded model's fitted mixture, the one its server suggests from; None when it carries none."""
    return load_mixture(mixture_dir(bundle))


# ------------------------------------------------------------------------------------------------------ the cache

def cache_distributions(queries: torch.Tensor, keys: torch.Tensor, key_words: Sequence[int], positions: Sequence[int],
                        theta: float, window: int, first_key: int = 0, vocab: int | None = None, skip: int = 0
                        ) -> torch.Tensor:
    """P_cache over a document's word ids for targets at word positions `positions` (rows of the result):
    queries (N, H), the document's keys (n, H) with their word ids, each target reading keys
    [max(first_key, t - window), t - skip). Returns (N, vocab); an empty window gives a zero row. `skip`: the last
    words are left out — the state before a word resembles the states just before it, so a cache that reads them
    suggests what was just typed, which the next word repeats about 1 % of the time."""
    ids = torch.as_tensor(list(key_words), dtype=torch.long)
    vocab = vocab or (int(ids.max()) + 1 if len(ids) else 1)
    out = torch.zeros(len(positions), vocab, dtype=torch.float64)
    for lo in range(0, len(positions), 256):  # a chunk of targets against the span of keys they can see
        pos = torch.as_tensor(list(positions[lo:lo + 256]))
        start, end = max(first_key, int(pos.min()) - window), int(pos.max())
        if end <= start:
            continue
        span = torch.arange(start, end)
        scores = theta * (queries[lo:lo + len(pos)].double() @ keys[start:end].double().T)  # (n, span)
        visible = (span.unsqueeze(0) < pos.unsqueeze(1) - skip) & (span.unsqueeze(0) >= (pos.unsqueeze(1) - window)) & \
            (span.unsqueeze(0) >= first_key)
        scores = scores.masked_fill(~visible, -math.inf)
        alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a row with nothing visible: all zero
        out[lo:lo + len(pos)].scatter_add_(1, ids[start:end].expand(len(pos), -1), alpha)
    return out


def cache_history(words_before: int, window: int, first_key: int = 0, skip: int = 0) -> int:
    """How many words the cache reads for a target with `words_before` words before it (its class's history)."""
    return max(0, words_before - skip - max(first_key, words_before - window))


def kn_probs(lm: KneserNey, ctx: list[str], words: list[str], bos: bool) -> list[float]:
    """P_kn of each word after ctx; 0 for a word outside the n-gram's vocabulary (see the module docstring)."""
    lp = lm.log_prob([ctx] * len(words), words, bos)
    return [math.exp(v) if w in lm.index else 0.0 for v, w in zip(lp, words)]


def mix_probs(w: MixtureWeights, lm: KneserNey | None, feat: dict, ctx: list[str], words: list[str],
              net_lp: dict[str, float], bos: bool, kn: list[float] | None = None) -> list[float]:
    """Mixture probabilities of `words` at one target: feat holds the n-gram's matched order, the cache's history
    (words it holds) and P_cache per word; net_lp the network's log-probability per word; `kn`, when given, the
    n-gram's probabilities of the words (else computed here)."""
    if kn is None:
        kn = kn_probs(lm, ctx, words, bos) if "kn" in w.parts else [0.0] * len(words)
    lam = w.lam(w.context_class(feat["order"], feat["history"]))
    cache = feat["cache"]
    out = []
    for word, k in zip(words, kn):
        part = {"net": math.exp(net_lp[word]), "kn": k, "cache": cache.get(word, 0.0)}
        out.append(float(sum(l * part[x] for l, x in zip(lam, w.parts))))
    return out


def mix_label(net: str, parts: tuple[str, ...], order: int) -> str:
    """A mixture's name in tables: "lstm + 4-gram + cache" (the n-gram named by its order)."""
    return " + ".join([net] + [{"kn": f"{order}-gram", "cache": "cache"}[p] for p in parts if p != "net"])


def heaviest(cache: dict[str, float], n: int, prefix: str = "") -> tuple[list[str], float]:
    """The cache's n heaviest words (that start with `prefix`) and a bound on every other word's weight (the n-th
    weight when more words match, else 0)."""
    got = heapq.nlargest(n + 1, ((p, x) for x, p in cache.items() if p > 0 and x.startswith(prefix)))
    return [x for _, x in got[:n]], (got[n][0] if len(got) > n else 0.0)


def _weights(w: MixtureWeights, feat: dict) -> tuple[float, float, float]:
    """(λ_net, λ_kn, λ_cache) of a context's class; 0 for a part not mixed."""
    lam = w.lam(w.context_class(feat["order"], feat["history"]))
    return tuple(float(lam[w.parts.index(x)]) if x in w.parts else 0.0 for x in PARTS)


@dataclass
class MixedRow:
    """One context's search: words with their exact mixture probabilities, best first, and a bound that no word
    outside the list exceeds. Its top k are proven when the k-th probability is at least the bound. `scored`: the
    natural log of the mixture probability of the word the caller asked to score (listed or not)."""
    words: list[tuple[str, float]]
    bound: float
    scored: float | None = None
    net_bound: float = 1.0  # no word the network's search left out has P_net above this

    def proven(self, k: int) -> bool:
        return self.bound <= 0 or (len(self.words) >= k and self.words[k - 1][1] >= self.bound)


def mixed_search(w: MixtureWeights, lm: KneserNey | None, pred, candidates: int, state, next_lp: torch.Tensor,
                 contexts: list[list[str]], feats: list[dict], prefixes: list[str], k: int, bos: bool = True,
                 known: list[dict[str, float]] | None = None, score: list[str] | None = None,
                 stats: dict[str, int] | None = None) -> list[MixedRow]:
    """The mixture's exact top k after each of N contexts (rows of state/next_lp), under prefixes[i] when not "".

    A threshold search over the three parts' sorted lists (Fagin's TA): the network's beam of width K with the bound
    on every word it missed (WordPredictor.search_words), the n-gram's exact top K and the cache's K heaviest, all
    under the prefix. A word none of them lists has P_mix ≤ λ_net·u_net + λ_kn·u_kn + λ_cache·u_cache (each u its
    part's bound); the network's exact probability is computed only for listed words that could still reach the top
    k. A row whose k-th word falls below the bound is searched again with K four times wider, up to the network's
    max_beam_width (then counted in stats["not_exact"]). "Every word" means every word the network's search can spell
    (DESIGN §7), the n-gram's vocabulary and the cache's words.

    `known[i]`: the network's log-probabilities already computed for row i (kept by a caller that asks again under
    longer prefixes of the same context); `score[i]`: a word whose exact log-probability is wanted (MixedRow.scored);
    it is ranked only where a part lists it, as any other word."""
    n = len(contexts)
    known = known if known is not None else [{} for _ in range(n)]
    lams = [_weights(w, f) for f in feats]
    out: list[MixedRow] = [MixedRow([], math.inf) for _ in range(n)]
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + n
    todo, width = list(range(n)), max(k, candidates)
    while todo:
        idx = torch.tensor(todo, dtype=torch.long, device=next_lp.device)
        sub_prefixes = [prefixes[i] for i in todo]
        if lams and "net" in w.parts:
            found, net_bound = pred.search_words(select_state(state, idx), next_lp.index_select(0, idx), width,
                                                 sub_prefixes)
        else:
            found, net_bound = [[] for _ in todo], [-math.inf] * len(todo)
        kn_top = lm.top_words([contexts[i] for i in todo], width, bos, sub_prefixes) if "kn" in w.parts \
            else [[] for _ in todo]
        unlisted: set[int] = set()  # rows whose scored word no part lists
        rows = []  # (row, listed words, their parts' sum without the network, P_mix bound off the lists, u_net)
        for j, i in enumerate(todo):
            known[i].update(found[j])
            ln, lk, lc = lams[i]
            cache_top, u_cache = heaviest(feats[i]["cache"], width, prefixes[i]) if lc else ([], 0.0)
            u_kn = math.exp(kn_top[j][-1][1]) if len(kn_top[j]) >= width else 0.0
            u_net = math.exp(net_bound[j]) if ln else 0.0
            words = list(dict.fromkeys([x for x, _ in found[j]] + [x for x, _ in kn_top[j]] + cache_top))
            extra = [score[i]] if score and score[i] not in words else []
            if extra:
                unlisted.add(i)
            rows.append((i, words + extra, ln * u_net + lk * u_kn + lc * u_cache, u_net))
        kn_p = _kn_of(w, lm, [(contexts[i], words) for i, words, _, _ in rows], bos)
        asked, bases = [], []
        for (i, words, _, u_net), kp in zip(rows, kn_p):
            ln, lk, lc = lams[i]
            cache = feats[i]["cache"]
            base = {x: lk * p + lc * cache.get(x, 0.0) for x, p in zip(words, kp)}
            low = sorted((base[x] + (ln * math.exp(known[i][x]) if x in known[i] else 0.0) for x in words),
                         reverse=True)
            floor = low[k - 1] if len(low) >= k else 0.0
            # the network's exact probability where the word could still reach the top k, or must be scored
            asked += [(i, x) for x in words if ln and x not in known[i]
                      and (base[x] + ln * u_net > floor or (score and x == score[i]))]
            bases.append(base)
        if asked:
            at = torch.tensor([i for i, _ in asked], dtype=torch.long, device=next_lp.device)
            got = pred.word_log_prob(select_state(state, at), next_lp.index_select(0, at), [x for _, x in asked])
            for (i, x), v in zip(asked, got.tolist()):
                known[i][x] = v
        again = []
        for (i, words, bound, u_net), base in zip(rows, bases):
            ln = lams[i][0]
            listed = []
            for x in words:
                if x in known[i] or not ln:
                    listed.append((x, base[x] + (ln * math.exp(known[i][x]) if ln else 0.0)))
                else:  # left unscored: it cannot reach the top k, and the bound covers it
                    bound = max(bound, base[x] + ln * u_net)
            scored = None
            if score:  # in logs: a long unseen word's network probability underflows a float
                x = score[i]
                scored = _log_sum(base[x], ln, known[i].get(x, -math.inf) if ln else -math.inf)
                if i in unlisted:
                    listed = [t for t in listed if t[0] != score[i]]  # no part lists it: scored, not ranked
            listed.sort(key=lambda t: -t[1])
            out[i] = MixedRow(listed, bound, scored, u_net if ln else 1.0)
            if not out[i].proven(k):
                again.append(i)
        if not again or width >= pred.max_beam_width:
            if stats is not None:
                stats["not_exact"] = stats.get("not_exact", 0) + len(again)
            break
        if stats is not None:
            stats["widened"] = stats.get("widened", 0) + len(again)
        todo, width = again, min(width * 4, pred.max_beam_width)
    return out


def _log_sum(base: float, lam: float, log_p: float) -> float:
    """log(base + lam·exp(log_p)), without underflow when log_p is very negative."""
    terms = [math.log(base)] if base > 0 else []
    if lam > 0 and log_p > -math.inf:
        terms.append(math.log(lam) + log_p)
    if not terms:
        return -math.inf
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def settle_rows(w: MixtureWeights, lm: KneserNey | None, pred, candidates: int, state, next_lp: torch.Tensor,
                contexts: list[list[str]], feats: list[dict], prefixes: list[str], k: int, targets: list[str],
                own: list[float], net_bound: list[float], bos: bool = True,
                known: list[dict[str, float]] | None = None) -> list[list[tuple[str, float]] | None]:
    """The typist's question under each row's prefix: is targets[i], of mixture probability own[i], in the top k?
    Per row every word found to beat it when k or more do (out), the words that beat it and the word itself when
    fewer do and no unlisted word can (in), or None where this cannot say (then mixed_search under the prefix
    decides).

    First the n-gram's top K and the cache's K heaviest under the prefix, each word bounded by its parts outside the
    network plus net_bound[i] (no word the row's search with nothing typed missed has P_net above it): the network's
    exact probability only where that bound passes the target. Then, for rows not yet out, one network search under
    the prefix that extends only beams that could reach a word beating the target: a word no list names beats it only
    with P_net > (own − λ_kn·u_kn − λ_cache·u_cache) / λ_net."""
    n = len(contexts)
    known = known if known is not None else [{} for _ in range(n)]
    lams = [_weights(w, f) for f in feats]
    width = max(k, candidates)
    kn_top = lm.top_words(contexts, width, bos, prefixes) if "kn" in w.parts else [[] for _ in range(n)]
    listed, floors = [], []
    for i in range(n):
        ln, lk, lc = lams[i]
        cache_top, u_cache = heaviest(feats[i]["cache"], width, prefixes[i]) if lc else ([], 0.0)
        u_kn = math.exp(kn_top[i][-1][1]) if len(kn_top[i]) >= width else 0.0
        listed.append(list(dict.fromkeys([x for x, _ in kn_top[i]] + cache_top)))
        rest = own[i] - lk * u_kn - lc * u_cache
        floors.append(math.log(rest / ln) if ln and rest > 0 else -math.inf)

    def beaters(rows: list[int], words: list[list[str]], cap: list[float]) -> list[list[tuple[str, float]]]:
        """Per row, the words that beat its target: the network computed where base + λ_net·cap could pass it."""
        bases = []
        asked = []
        for i, ws, kp in zip(rows, words, _kn_of(w, lm, [(contexts[i], ws) for i, ws in zip(rows, words)], bos)):
            ln, lk, lc = lams[i]
            base = {x: lk * p + lc * feats[i]["cache"].get(x, 0.0) for x, p in zip(ws, kp)}
            asked += [(i, x) for x in ws if ln and x not in known[i] and base[x] <= own[i] < base[x] + ln * cap[i]]
            bases.append(base)
        if asked:
            at = torch.tensor([i for i, _ in asked], dtype=torch.long, device=next_lp.device)
            got = pred.word_log_prob(select_state(state, at), next_lp.index_select(0, at), [x for _, x in asked])
            for (i, x), v in zip(asked, got.tolist()):
                known[i][x] = v
        out = []
        for i, base in zip(rows, bases):
            ln = lams[i][0]
            value = {x: b + (ln * math.exp(known[i][x]) if ln and x in known[i] else 0.0) for x, b in base.items()}
            out.append(sorted(((x, v) for x, v in value.items() if v > own[i] and x != targets[i]),
                              key=lambda t: -t[1]))
        return out

    beat = dict(zip(range(n), beaters(list(range(n)), listed, net_bound)))
    answer: list[list[tuple[str, float]] | None] = [beat[i] if len(beat[i]) >= k else None for i in range(n)]
    todo = [i for i in range(n) if answer[i] is None and floors[i] > -math.inf]
    if todo:
        idx = torch.tensor(todo, dtype=torch.long, device=next_lp.device)
        found, bounds = pred.search_words(select_state(state, idx), next_lp.index_select(0, idx), width,
                                          [prefixes[i] for i in todo], [floors[i] for i in todo])
        for i, row in zip(todo, found):
            known[i].update(row)
        more = beaters(todo, [[x for x, _ in row] for row in found], [0.0] * len(todo))
        for i, row, b, extra in zip(todo, found, bounds, more):
            got = dict(beat[i])
            got.update(extra)
            every = sorted(got.items(), key=lambda t: -t[1])
            if len(every) >= k:
                answer[i] = every
            elif b <= floors[i] and (targets[i] in listed[i] or any(x == targets[i] for x, _ in row)):
                answer[i] = every + [(targets[i], own[i])]  # nothing unlisted reaches the target
    return answer


def _kn_of(w: MixtureWeights, lm: KneserNey | None, asked: list[tuple[list[str], list[str]]], bos: bool
           ) -> list[list[float]]:
    """P_kn of each row's words after its context, in one vectorised call (0 outside the n-gram's vocabulary)."""
    if "kn" not in w.parts:
        return [[0.0] * len(ws) for _, ws in asked]
    pairs = [(ctx, x) for ctx, ws in asked for x in ws]
    lp = lm.log_prob([c for c, _ in pairs], [x for _, x in pairs], bos) if pairs else []
    out, pos = [], 0
    for _, ws in asked:
        out.append([math.exp(v) if x in lm.index else 0.0 for x, v in zip(ws, lp[pos:pos + len(ws)])])
        pos += len(ws)
    return out


def word_probs(w: MixtureWeights, lm: KneserNey | None, pred, state, next_lp: torch.Tensor,
               contexts: list[list[str]], feats: list[dict], words: list[str], bos: bool = True,
               known: list[dict[str, float]] | None = None) -> list[float]:
    """The mixture's exact probability of words[i] after context i (the network's from known[i] when there)."""
    known = known if known is not None else [{} for _ in words]
    lams = [_weights(w, f) for f in feats]
    asked = [i for i, x in enumerate(words) if lams[i][0] and x not in known[i]]
    if asked:
        at = torch.tensor(asked, dtype=torch.long, device=next_lp.device)
        got = pred.word_log_prob(select_state(state, at), next_lp.index_select(0, at), [words[i] for i in asked])
        for i, v in zip(asked, got.tolist()):
            known[i][words[i]] = v
    kn = _kn_of(w, lm, [(c, [x]) for c, x in zip(contexts, words)], bos)
    return [ln * (math.exp(known[i][x]) if ln else 0.0) + lk * kn[i][0] + lc * feats[i]["cache"].get(x, 0.0)
            for i, (x, (ln, lk, lc)) in enumerate(zip(words, lams))]


def mixed_top(w: MixtureWeights, lm: KneserNey | None, pred, candidates: int, state, next_lp: torch.Tensor,
              contexts: list[list[str]], feats: list[dict], prefixes: list[str], k: int, bos: bool = True,
              stats: dict[str, int] | None = None) -> list[list[tuple[str, float]]]:
    """The mixture's top k after each context (`mixed_search`), completing prefixes[i] when it is not "": a
    completion's probabilities are renormalised over the words the search listed, all of which match the prefix.
    The server and the evaluation both rank with `mixed_search`: what is measured is what is served."""
    rows = mixed_search(w, lm, pred, candidates, state, next_lp, contexts, feats, prefixes, k, bos, stats=stats)
    return [ranked(row, k, prefix) for row, prefix in zip(rows, prefixes)]


def ranked(row: MixedRow, k: int, prefix: str = "") -> list[tuple[str, float]]:
    """A row's top k; under a typed prefix the probabilities renormalised over the words listed."""
    total = sum(p for _, p in row.words) if prefix else 1.0
    return [(x, p / total if total > 0 else 0.0) for x, p in row.words[:k]]
