"""The mixture's ranking (mixture.py's weights, cache and mixing): its exact top k under a typed prefix
(`mixed_search`, Fagin's threshold search over the parts' lists) and the typist's cheaper question, whether one word is
in the top k (`settle_rows`). `mixed_top` is what the server and the evaluation both rank with.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from pipeline.evaluation.mixture import PARTS, MixtureWeights
from pipeline.evaluation.ngram import KneserNey
from pipeline.evaluation.predict import select_state


def heaviest(cache: dict[str, float], n: int, prefix: str = "") -> tuple[list[str], float]:
    """The cache's n heaviest words (that start with `prefix`) and a bound on every other word's weight (the n-th
    weight when more words match, else 0)."""
    got = heapq.nlargest(n + 1, ((p, x) for x, p in cache.items() if p > 0 and x.startswith(prefix)))
    return [x for _, x in got[:n]], (got[n][0] if len(got) > n else 0.0)


def _net_log_probs(pred, state, next_lp: torch.Tensor, asked: list[tuple[int, str]],
                   known: list[dict[str, float]]) -> None:
    """The network's exact log-probability of each (row, word) asked, into known[row] (one batched call)."""
    if asked:
        at = torch.tensor([i for i, _ in asked], dtype=torch.long, device=next_lp.device)
        got = pred.word_log_prob(select_state(state, at), next_lp.index_select(0, at), [x for _, x in asked])
        for (i, x), v in zip(asked, got.tolist()):
            known[i][x] = v


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
            ranked_words = words[:-1] if i in unlisted else words  # an unlisted scored word takes no place
            low = sorted((base[x] + (ln * math.exp(known[i][x]) if x in known[i] else 0.0) for x in ranked_words),
                         reverse=True)
            floor = low[k - 1] if len(low) >= k else 0.0
            # the network's exact probability where the word could still reach the top k, or must be scored
            asked += [(i, x) for x in words if ln and x not in known[i]
                      and (base[x] + ln * u_net > floor or (score and x == score[i]))]
            bases.append(base)
        _net_log_probs(pred, state, next_lp, asked, known)
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
        _net_log_probs(pred, state, next_lp, asked, known)
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
    _net_log_probs(pred, state, next_lp, [(i, x) for i, x in enumerate(words) if lams[i][0] and x not in known[i]],
                   known)
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
