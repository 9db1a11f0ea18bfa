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

θ and W are chosen on the validation split by grid, the λ of each class by EM on the validation words'
log-likelihood. The top k: every part's top K words (the network's exact beam, the n-gram's exact top K, the cache's
heaviest K) re-scored under the mixture, the network's probability of each computed exactly (`mixed_top`, the one
function the server and the evaluation both rank with). The network's K come from one beam of width K, not
widened until proven exact (see mixed_top). Completing a typed prefix, every part proposes only words
that start with it and the mixture's probabilities are renormalised over the candidates.
"""
from __future__ import annotations

import bisect
import dataclasses
import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.evaluation.ngram import KneserNey, context_tail, read_arpa, write_arpa
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


# ------------------------------------------------------------------------------------------------------ fitting

def em_weights(probs: np.ndarray, iterations: int = 100) -> np.ndarray:
    """λ maximising Σ_t log Σ_c λ_c P_c(w_t) over rows (T, C) of component probabilities (EM: each step sets λ_c to
    the mean responsibility of part c). A part that never gives mass gets λ = 0."""
    lam = np.full(probs.shape[1], 1.0 / probs.shape[1])
    for _ in range(iterations):
        mix = probs @ lam
        ok = mix > 0
        if not ok.any():
            break
        lam = (probs[ok] * lam / mix[ok, None]).mean(axis=0)
        lam = lam / lam.sum()
    return lam


MIN_CLASS_WORDS = 50


def fit_weights(parts: tuple[str, ...], probs: dict[float, dict[int, np.ndarray]], classes,
                context_dependent: bool, iterations: int) -> tuple[MixtureWeights, float]:
    """Choose (θ, W) and the λ per class on validation rows; probs[θ][W] is (T, len(parts)); classes[θ][W] (or one
    list for all) holds each row's (matched order, cache history) or class name: the history is capped at W, so the
    classes depend on W. Returns the weights
    and the mean validation log-likelihood per word they reach. A class seen fewer than MIN_CLASS_WORDS times keeps
    the pooled λ ("all"): a handful of words would fit weights of 1 and 0 that no test text supports."""
    best: tuple[float, MixtureWeights] | None = None
    for theta, by_window in probs.items():
        for key, p in by_window.items():
            window, skip = key if isinstance(key, tuple) else (key, 0)
            w = MixtureWeights(parts, theta=theta, window=window, context_dependent=context_dependent,
                               history_edges=HISTORY_EDGES, skip=skip)
            rows = classes[theta][key] if isinstance(classes, dict) else classes
            cls = np.array([w.context_class(*c) if isinstance(c, tuple) else c for c in rows])
            w.weights["all"] = em_weights(p, iterations).round(6).tolist()  # also the fallback of an unseen class
            for c in sorted(set(cls)):
                if (cls == c).sum() >= MIN_CLASS_WORDS:
                    w.weights[str(c)] = em_weights(p[cls == c], iterations).round(6).tolist()
            ll = float(np.mean(np.log(np.maximum(mixture_prob(w, p, cls), 1e-300))))
            if best is None or ll > best[0]:
                best = (ll, w)
    return best[1], best[0]


def mixture_prob(w: MixtureWeights, probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    lam = np.stack([w.lam(c) for c in classes])
    return (probs * lam).sum(axis=1)


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


def heaviest(cache: dict[str, float], n: int, prefix: str = "") -> list[str]:
    """The cache's n heaviest words (that start with `prefix`)."""
    got = [(p, w) for w, p in cache.items() if p > 0 and w.startswith(prefix)]
    return [w for _, w in heapq.nlargest(n, got)]


def mixed_top(w: MixtureWeights, lm: KneserNey | None, pred, candidates: int, state, next_lp: torch.Tensor,
              contexts: list[list[str]], feats: list[dict], prefixes: list[str], k: int, bos: bool = True,
              score: list[str] | None = None) -> list[list[tuple[str, float]]] | tuple[list, list[float]]:
    """The mixture's top k after each of N contexts (rows of state/next_lp, the network's state after each
    context), completing prefixes[i] when it is not "": the network's best K (one unwidened beam), the n-gram's
    exact top K and the cache's K heaviest words, all under the prefix; the network's exact probability of every
    candidate it did not rank; the λ-weighted sum. A completion's probabilities are renormalised over its
    candidates. The server and the evaluation both rank with this function: what is measured is what is served.
    `score[i]`: a word whose mixture probability is also wanted (the evaluation's target, ranked only if a part
    proposed it); then (top lists, probabilities of the scored words) is returned."""
    n = len(contexts)
    # The network's shortlist is its best K from one beam of width K, not proven exact: proving an exact top 20
    # widens the beam to 80-128 on almost every row and costs ~10× more search time (`bench --only mixture_shortlist`),
    # while every candidate's probability below is exact whichever way it was found.
    net_top = pred.top_words(state, next_lp, max(k, candidates), prefixes, prove=False)
    kn_top = lm.top_words(contexts, candidates, bos, prefixes) if "kn" in w.parts else [[] for _ in range(n)]
    cands, asked, scored = [], [], []
    for i in range(n):
        cache_top = heaviest(feats[i]["cache"], candidates, prefixes[i]) if "cache" in w.parts else []
        cands.append(list(dict.fromkeys([x for x, _ in net_top[i]] + [x for x, _ in kn_top[i]] + cache_top)))
        ranked = dict(net_top[i])
        extra = cands[-1] + ([score[i]] if score and score[i] not in cands[-1] else [])
        scored.append(extra)
        asked += [(i, x) for x in extra if x not in ranked]
    net_lp = [dict(t) for t in net_top]
    if asked:
        rows = torch.tensor([i for i, _ in asked], device=next_lp.device)
        got = pred.word_log_prob(select_state(state, rows), next_lp.index_select(0, rows),
                                 [x for _, x in asked]).tolist()
        for (i, x), v in zip(asked, got):
            net_lp[i][x] = v
    kn_all: list[list[float]] = [[0.0] * len(ws) for ws in scored]
    if "kn" in w.parts:  # one vectorised n-gram call for every (row, word)
        pairs = [(i, x) for i, ws in enumerate(scored) for x in ws]
        lp = lm.log_prob([contexts[i] for i, _ in pairs], [x for _, x in pairs], bos)
        pos = 0
        for i, ws in enumerate(scored):
            kn_all[i] = [math.exp(v) if x in lm.index else 0.0 for x, v in zip(ws, lp[pos:pos + len(ws)])]
            pos += len(ws)
    out, target_p = [], []
    for i in range(n):
        probs = mix_probs(w, lm, feats[i], contexts[i], scored[i], net_lp[i], bos, kn_all[i])
        words = cands[i]
        total = sum(probs[:len(words)]) if prefixes[i] else 1.0
        best = sorted(range(len(words)), key=lambda j: -probs[j])[:k]
        out.append([(words[j], probs[j] / total if total > 0 else 0.0) for j in best])
        if score:
            target_p.append(probs[scored[i].index(score[i])])
    return (out, target_p) if score else out


# ----------------------------------------------------------------------------------------------------- the scorer

class MixtureScorer:
    """A NeuralScorer, a KneserNey and a cache behind the evaluator's calls (evaluate_docs, keystrokes, top_words,
    score). `parts` picks the mixed parts; the weights come from `fit` on validation."""

    def __init__(self, net, lm: KneserNey | None, weights: MixtureWeights, candidates: int = 20, name: str = ""):
        self.net, self.lm, self.w, self.K = net, lm, weights, candidates
        self.name = name or " + ".join({"net": net.name, "kn": "4-gram", "cache": "cache"}[p] for p in weights.parts)
        self.pred = net.pred

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

    def mix(self, feat: dict, ctx: list[str], words: list[str], net_lp: dict[str, float], bos: bool) -> list[float]:
        return mix_probs(self.w, self.lm, feat, ctx, words, net_lp, bos)

    def evaluate_docs(self, docs: list[list[str]], targets: list[list[int]], k: int, progress, bos: bool = True
                      ) -> dict:
        logp, top = {}, {}
        if k == 0:
            first = self.net.evaluate_docs(docs, targets, 0, lambda n: None, bos=bos,
                                           vectors="cache" in self.w.parts)
            feats = self.features(docs, targets, first["vectors"], bos)
            for (d, j), f in feats.items():
                word = docs[d][j]
                p = self.mix(f, context_tail(docs[d], j), [word], {word: first["logp"][(d, j)]}, bos)[0]
                logp[(d, j)] = math.log(p) if p > 0 else -math.inf
            progress(len(feats))
            return {"top": top, "logp": logp}

        def on_rows(keys, state, lp, feats):
            # only the parts' candidates are ranked (the target joins them only when a part proposed it: ranking it
            # regardless would let the answer into the shortlist); the target is scored in any case
            rows, target_p = mixed_top(self.w, self.lm, self.pred, self.K, state, lp,
                                       [context_tail(docs[d], j) for d, j in keys], feats, [""] * len(keys), k, bos,
                                       score=[docs[d][j] for d, j in keys])
            for key, row, p in zip(keys, rows, target_p):
                top[key] = [w for w, _ in row]
                logp[key] = math.log(p) if p > 0 else -math.inf
            progress(len(keys))
        self._pass(docs, targets, bos, on_rows)
        return {"top": top, "logp": logp}

    def keystrokes(self, docs: list[list[str]], targets: list[list[int]], slots: int, progress, bos: bool = True
                   ) -> dict[tuple[int, int], tuple[int, list[str]]]:
        """The typist of pipeline/evaluation/keystrokes.py at every target, the bar filled by `mixed_top`."""
        from pipeline.evaluation.keystrokes import simulate

        out = {}

        def on_rows(keys, state, lp, feats):
            ctxs = [context_tail(docs[d], j) for d, j in keys]

            def suggest(rows: list[int], prefixes: list[str]) -> list[list[str]]:
                idx = torch.tensor(rows, device=lp.device)
                got = mixed_top(self.w, self.lm, self.pred, self.K, select_state(state, idx), lp.index_select(0, idx),
                                [ctxs[i] for i in rows], [feats[i] for i in rows], prefixes, slots, bos)
                return [[w for w, _ in r] for r in got]
            for key, res in zip(keys, zip(*simulate([docs[d][j] for d, j in keys], suggest, slots))):
                out[key] = res
            progress(len(keys))
        self._pass(docs, targets, bos, on_rows)
        return out

    def _pass(self, docs, targets, bos: bool, on_rows) -> None:
        """One teacher-forced pass of the network; each batch of targets goes to on_rows(keys, state, next_lp,
        feats) with the state before the targets and their features (the cache in full, keyed by the vectors
        read so far)."""
        def on_batch(keys, state, lp, vectors):
            by_doc: list[list[int]] = [[] for _ in docs]
            for d, j in keys:
                by_doc[d].append(j)
            feats = self.features(docs, by_doc, vectors, bos, full=True)
            on_rows(keys, state, lp, [feats[key] for key in keys])
        self.net.evaluate_docs(docs, targets, 0, lambda n: None, bos=bos, vectors="cache" in self.w.parts,
                               on_batch=on_batch, need_lp=False)

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True, prefixes: list[str] | None = None
                  ) -> list[list[str]]:
        """Top-k after each context (the cache reads the context itself), completing prefixes[i] when given: a
        stand-in word after each context is the target whose candidates are ranked; its own score is not used."""
        docs = [list(c) + ["क"] for c in contexts]
        prefixes = prefixes or [""] * len(contexts)
        top: dict[tuple[int, int], list[str]] = {}

        def on_rows(keys, state, lp, feats):
            got = mixed_top(self.w, self.lm, self.pred, self.K, state, lp, [context_tail(docs[d], j) for d, j in keys],
                            feats, [prefixes[d] for d, _ in keys], k, bos)
            top.update({key: [w for w, _ in row] for key, row in zip(keys, got)})
        self._pass(docs, [[len(c)] for c in contexts], bos, on_rows)
        return [top[(d, len(c))] for d, c in enumerate(contexts)]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log P_mix(candidate | context) as the next whole word: the network's exact scores (one read per context),
        and the cache's keys and query from one teacher-forced pass over the contexts."""
        toks = [clean_text(c).split() for c in contexts]
        net = self.net.score(contexts, candidates)
        docs, targets = [t + ["क"] for t in toks], [[len(t)] for t in toks]  # a stand-in: its state is the query
        vectors = self.net.evaluate_docs(docs, targets, 0, lambda n: None, vectors=True)["vectors"] \
            if "cache" in self.w.parts else None
        feats = self.features(docs, targets, vectors, asked={(d, len(t)): list(cs)
                                                             for d, (t, cs) in enumerate(zip(toks, candidates))})
        out = []
        for d, (t, cs, lps) in enumerate(zip(toks, candidates, net)):
            probs = self.mix(feats[(d, len(t))], t, list(cs), dict(zip(cs, lps)), True)
            out.append([math.log(p) if p > 0 else -math.inf for p in probs])
        return out


# ------------------------------------------------------------------------------------------------- fit on validation

def fit(net, lm: KneserNey | None, parts: tuple[str, ...], docs: list[str], mc, ec, context_dependent: bool = True
        ) -> tuple[MixtureWeights, dict[str, Any]]:
    """θ, W and λ per class on a seeded, word-weighted sample of `docs` (mixture.fit_words validation words)."""
    from pipeline.evaluation.evaluate import sampled_targets

    tokens, targets, chosen, info = sampled_targets(docs, dataclasses.replace(ec, max_words=mc.fit_words))
    keep = [d for d, c in enumerate(chosen) if c]
    want = [[targets[d][i] for i in chosen[d]] for d in keep]
    cut = [tokens[d][:w[-1] + 1] for d, w in zip(keep, want)]
    first = net.evaluate_docs(cut, want, 0, lambda n: None, vectors="cache" in parts)
    probe = MixtureScorer(net, lm, MixtureWeights(parts), mc.candidates)
    thetas = mc.thetas if "cache" in parts else (0.0,)
    windows = mc.windows if "cache" in parts else (0,)
    kn_p = {(d, j): kn_probs(lm, context_tail(cut[d], j), [cut[d][j]], True)[0] for d, ts in enumerate(want) for j in ts} \
        if "kn" in parts else {}
    probs: dict[float, dict[tuple[int, int], np.ndarray]] = {}
    classes: dict[float, dict[tuple[int, int], list[tuple[int, int]]]] = {}

    def measure(theta: float, window: int, skip: int) -> None:
        feats = probe.features(cut, want, first["vectors"], True, theta, window, skip=skip)
        rows, cls = [], []
        for (d, j), f in feats.items():
            word = cut[d][j]
            kn = kn_p[(d, j)] if "kn" in parts else 0.0
            part = {"net": math.exp(first["logp"][(d, j)]), "kn": kn, "cache": f["cache"].get(word, 0.0)}
            rows.append([part[p] for p in parts])
            cls.append((f["order"], f["history"]))
        probs.setdefault(theta, {})[(window, skip)] = np.asarray(rows)
        classes.setdefault(theta, {})[(window, skip)] = cls

    for theta in thetas:
        for window in windows:
            measure(theta, window, 0)
    weights, ll = fit_weights(parts, probs, classes, context_dependent, mc.em_iterations)
    n = len(next(iter(next(iter(classes.values())).values())))
    about: dict[str, Any] = {"validation_words": n, "validation_word_ppl": math.exp(-ll), **info}
    if "cache" in parts and any(mc.cache_skips):
        weights, ll, about["skips"] = choose_skip(net, lm, parts, docs, mc, ec, context_dependent, weights, measure,
                                                  probs, classes)
        about["validation_word_ppl"] = math.exp(-ll)
    return weights, about


def choose_skip(net, lm, parts, docs, mc, ec, context_dependent, best: MixtureWeights, measure, probs, classes):
    """The cache's skip for the best (θ, W) (a third grid axis would triple the fit for a parameter that hardly
    interacts with them). Likelihood does not see echo — a cache that gives the last word high mass costs little
    log-likelihood on the 99 % of words that do not repeat it and gains much on the 1 % that do — but the bar does:
    each skip's λ are fitted by EM, then the skip whose mixture puts the next word in its top 3 most often on
    mixture.rank_words validation words (a seeded sample) is kept; ties go to the lower echo rate (a bar that repeats
    what was just typed is not better for it), then to the higher likelihood."""
    from pipeline.evaluation.evaluate import sampled_targets

    for skip in mc.cache_skips:
        if (best.window, skip) not in probs[best.theta]:
            measure(best.theta, best.window, skip)
    tokens, targets, chosen, _ = sampled_targets(docs, dataclasses.replace(ec, max_words=mc.rank_words))
    keep = [d for d, c in enumerate(chosen) if c]
    want = [[targets[d][i] for i in chosen[d]] for d in keep]
    cut = [tokens[d][:w[-1] + 1] for d, w in zip(keep, want)]
    report, candidates = {}, []
    for skip in mc.cache_skips:
        key = (best.window, skip)
        w, ll = fit_weights(parts, {best.theta: {key: probs[best.theta][key]}}, {best.theta: classes[best.theta]},
                            context_dependent, mc.em_iterations)
        top = MixtureScorer(net, lm, w, mc.candidates).evaluate_docs(cut, want, 3, lambda n: None)["top"]
        hits = echo = 0
        for d, ts in enumerate(want):
            positions = [j for j, t in enumerate(cut[d]) if is_word(t)]
            index = {j: i for i, j in enumerate(positions)}
            for j in ts:
                bar, i = top[(d, j)][:3], index[j]
                hits += cut[d][j] in bar
                echo += sum(x in {cut[d][p] for p in positions[max(0, i - 3):i]} for x in bar)  # what was just typed
        total = sum(map(len, want))
        report[str(skip)] = {"validation_word_ppl": math.exp(-ll), "top3": hits / total,
                             "echo_rate": echo / (3 * total), "rank_words": total}
        candidates.append((hits, -echo, ll, w))
    *_, ll, w = max(candidates, key=lambda c: c[:3])
    return w, ll, report


# ---------------------------------------------------------------------------------------------------- the command

MIXES = {"net + cache": ("net", "cache"), "net + 4-gram": ("net", "kn"), "net + 4-gram + cache": ("net", "kn", "cache")}
SERVED = "net + 4-gram + cache"  # the mix a model carries and its server suggests from


def saveable(ref: str) -> None:
    if Path(ref).suffix != ".ckpt" or not Path(ref).is_file():
        raise MixtureError(f"--save stores the mixture beside a local checkpoint (runs/<run>/checkpoints/*.ckpt); "
                           f"{ref} is not one: pass the checkpoint's path, or retrain with `make run`, which "
                           "registers every model with its mixture")


def save_served(ref: str, cfg, lm: KneserNey, weights: MixtureWeights, about: dict) -> Path:
    """Store `weights` as the mixture of the checkpoint `ref` (runs/<run>/mixture/, where `serve`, `evaluate` and
    `keystrokes` find it). A registered or exported model's files are not rewritten: `make run` registers a new
    version with its mixture instead."""
    from pipeline.evaluation.evaluate import load_model

    saveable(ref)
    bundle, _ = load_model(ref, cfg)
    return save_mixture(mixture_dir(bundle), lm, weights, cfg.mixture.candidates, about)


def fit_all(net, lm: KneserNey, validation: list[str], cfg, log=print, served_only: bool = False
            ) -> tuple[dict[str, MixtureWeights], dict]:
    """Every mix of MIXES fitted on validation, context-dependent; the three-way mix also with one fixed λ, to say
    what the context classes buy. `served_only`: the served mix alone."""
    weights, report = {}, {}
    for name, parts in MIXES.items() if not served_only else [(SERVED, MIXES[SERVED])]:
        weights[name], info = fit(net, lm, parts, validation, cfg.mixture, cfg.eval)
        report[name] = {"validation_word_ppl": info["validation_word_ppl"], "theta": weights[name].theta,
                        "window": weights[name].window, "skip": weights[name].skip, "weights": weights[name].weights,
                        **({"skips": info["skips"]} if "skips" in info else {})}
        for skip, v in info.get("skips", {}).items():
            log(f"    skip {skip}: top-3 {100 * v['top3']:.2f} %, echo {100 * v['echo_rate']:.2f} % of the bar, "
                f"validation word ppl {v['validation_word_ppl']:.1f} ({v['rank_words']:,} ranking words)")
        log(f"fitted {name}: validation word ppl {info['validation_word_ppl']:.1f} on {info['validation_words']:,} "
            f"words; θ={weights[name].theta}, W={weights[name].window}, skip={weights[name].skip}")
    if served_only:
        return weights, report
    fixed, info = fit(net, lm, MIXES["net + 4-gram + cache"], validation, cfg.mixture, cfg.eval,
                      context_dependent=False)
    report["net + 4-gram + cache, one fixed λ"] = {"validation_word_ppl": info["validation_word_ppl"],
                                                    "weights": fixed.weights}
    log(f"one fixed λ for all contexts: validation word ppl {info['validation_word_ppl']:.1f}")
    return weights, report


def cli(args, cfg) -> int:
    """`python -m pipeline mix --model REF [--data FILE]`: fit the mixtures on validation, then evaluate the network
    alone, each mix and the 4-gram on the test split, or FILE (eval.max_words), with the usual tables."""
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation.evaluate import (
        NgramScorer,
        build_baseline,
        build_scorers,
        eval_documents,
        evaluate,
        print_table,
        write_outputs,
    )

    torch.set_grad_enabled(False)
    net = build_scorers(cfg, [args.model], False)[0]
    lm = build_baseline(cfg)
    if getattr(args, "save", False):
        saveable(args.model)  # before the fit, not after it
    weights, report = fit_all(net, lm, documents(cfg, "validation"), cfg,
                              served_only=getattr(args, "served_only", False))
    if getattr(args, "save", False):
        saved = save_served(args.model, cfg, lm, weights[SERVED], report[SERVED])
        print(f"stored the {SERVED} mix as the model's mixture: {saved} (what `serve`, `evaluate` and "
              "`keystrokes` use with it)")
    scorers = [net, *(MixtureScorer(net, lm, w, cfg.mixture.candidates, name) for name, w in weights.items()),
               NgramScorer(lm, "4-gram")]
    docs, sources, split = eval_documents(cfg, args.data)
    # each mix's gain over the network alone, paired on the same words
    paired = cfg.replace(eval=dataclasses.replace(cfg.eval, paired_reference=net.name))
    results = evaluate(scorers, docs, paired, split, sources=sources)
    results["mixture_fit"] = report
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "eval" / \
        (f"{cfg.name}-mixture" if split == cfg.eval.split else f"{cfg.name}-mixture-{split}")
    print_table(results)  # the tables first: a figure that fails to draw must not take them with it
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixture_weights.json").write_text(json.dumps({n: w.to_dict() for n, w in weights.items()}, indent=1))
    files = write_outputs(results, out)
    print(f"wrote {len(files) + 1} files to {out}")

    return 0
