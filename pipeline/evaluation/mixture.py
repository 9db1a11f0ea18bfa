"""The network mixed with the Kneser-Ney n-gram and a continuous cache (DESIGN §7 "Mixture"), at the word level:

    P(w | h) = λ_net(c)·P_net(w | h) + λ_kn(c)·P_kn(w | h) + λ_cache(c)·P_cache(w | h)

    P_net    the network's whole-word probability from pieces (predict.py), exact
    P_kn     the interpolated Kneser-Ney n-gram; 0 for a word outside its vocabulary (its <unk> mass belongs to no
             one word, so counting it for every unseen word would let the mixture sum past 1)
    P_cache  Σ_{i < t, t - i <= W, w_i = w} softmax_i(θ · q_t·q_i): q_i is the network's top-layer state that
             predicted word i, so a word recurs where the state looks like the one that once preceded it
             (Grave et al. 2017)
    c        the context's class: how many words of context the n-gram matched (0 … order-1) and whether the cache
             is empty (a document's first word); with `context_dependent=False` one class holds every word

θ and W are chosen on the validation split by grid, the λ of each class by EM on the validation words'
log-likelihood. The top k: every part's top K words (the network's exact beam, the n-gram's exact top K, the cache's
heaviest K) re-scored under the mixture, the network's probability of each computed exactly.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.evaluation.ngram import KneserNey, read_arpa, write_arpa

PARTS = ("net", "kn", "cache")


@dataclass
class MixtureWeights:
    parts: tuple[str, ...]                       # the parts mixed, a subset of PARTS
    weights: dict[str, list[float]] = field(default_factory=dict)  # class -> λ per part (same order), sum 1
    theta: float = 0.0
    window: int = 0
    context_dependent: bool = True

    def __post_init__(self):
        if not self.parts or set(self.parts) - set(PARTS):
            raise ValueError(f"mixture parts {list(self.parts)}: give one or more of {list(PARTS)}")

    def context_class(self, order: int, cache_empty: bool) -> str:
        if not self.context_dependent:
            return "all"
        return f"o{order}" + ("-nocache" if cache_empty and "cache" in self.parts else "")

    def lam(self, cls: str) -> np.ndarray:
        default = self.weights.get("all") or [1.0 / len(self.parts)] * len(self.parts)
        return np.asarray(self.weights.get(cls, default), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parts": list(self.parts)}



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
                                 float(w["theta"]), int(w["window"]), bool(w["context_dependent"]))
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


# ------------------------------------------------------------------------------------------------------ the cache

def cache_distributions(queries: torch.Tensor, keys: torch.Tensor, key_words: Sequence[int], positions: Sequence[int],
                        theta: float, window: int, first_key: int = 0, vocab: int | None = None) -> torch.Tensor:
    """P_cache over a document's word ids for targets at word positions `positions` (rows of the result):
    queries (N, H), the document's keys (n, H) with their word ids, each target reading keys
    [max(first_key, t - window), t). Returns (N, vocab); an empty window gives a zero row."""
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
        visible = (span.unsqueeze(0) < pos.unsqueeze(1)) & (span.unsqueeze(0) >= (pos.unsqueeze(1) - window)) & \
            (span.unsqueeze(0) >= first_key)
        scores = scores.masked_fill(~visible, -math.inf)
        alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a row with nothing visible: all zero
        out[lo:lo + len(pos)].scatter_add_(1, ids[start:end].expand(len(pos), -1), alpha)
    return out


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


def fit_weights(parts: tuple[str, ...], probs: dict[float, dict[int, np.ndarray]], classes: list[str],
                context_dependent: bool, iterations: int) -> tuple[MixtureWeights, float]:
    """Choose (θ, W) and the λ per class on validation rows; probs[θ][W] is (T, len(parts)). Returns the weights
    and the mean validation log-likelihood per word they reach. A class seen fewer than MIN_CLASS_WORDS times keeps
    the pooled λ ("all"): a handful of words would fit weights of 1 and 0 that no test text supports."""
    best: tuple[float, MixtureWeights] | None = None
    for theta, by_window in probs.items():
        for window, p in by_window.items():
            w = MixtureWeights(parts, theta=theta, window=window, context_dependent=context_dependent)
            cls = np.array([w.context_class(*c) if isinstance(c, tuple) else c for c in classes])
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
              net_lp: dict[str, float], bos: bool) -> list[float]:
    """Mixture probabilities of `words` at one target: feat holds the n-gram's matched order, whether the cache is
    empty and P_cache per word; net_lp the network's log-probability per word."""
    kn = kn_probs(lm, ctx, words, bos) if "kn" in w.parts else [0.0] * len(words)
    lam = w.lam(w.context_class(feat["order"], feat["cache_empty"]))
    out = []
    for word, k in zip(words, kn):
        part = {"net": math.exp(net_lp[word]), "kn": k, "cache": feat["cache"].get(word, 0.0)}
        out.append(float(sum(l * part[x] for l, x in zip(lam, w.parts))))
    return out


# ----------------------------------------------------------------------------------------------------- the scorer

class MixtureScorer:
    """A NeuralScorer, a KneserNey and a cache behind the evaluator's three calls (evaluate_docs, top_words,
    score). `parts` picks the mixed parts; the weights come from `fit` on validation."""

    def __init__(self, net, lm: KneserNey | None, weights: MixtureWeights, candidates: int = 20, name: str = ""):
        self.net, self.lm, self.w, self.K = net, lm, weights, candidates
        self.name = name or " + ".join({"net": net.name, "kn": "4-gram", "cache": "cache"}[p] for p in weights.parts)
        self.pred = net.pred

    # -------------------------------------------------------------------------------------------- per target
    def features(self, docs, targets, vectors, bos: bool = True, theta: float | None = None,
                 window: int | None = None, asked: dict | None = None) -> dict[tuple[int, int], dict]:
        """Per target (d, j): the n-gram's matched order, whether the cache is empty, the cache's K heaviest words
        and P_cache of the words `asked[(d, j)]` (default: the target itself)."""
        theta = self.w.theta if theta is None else theta
        window = self.w.window if window is None else window
        out = {}
        for d, (tokens, ts) in enumerate(zip(docs, targets)):
            if not ts:
                continue
            word_pos = [j for j, t in enumerate(tokens) if is_word(t)]
            vocab: dict[str, int] = {}
            ids = [vocab.setdefault(tokens[j], len(vocab)) for j in word_pos]
            rows = [bisect.bisect_left(word_pos, j) for j in ts]  # words before each target: its cache's end
            first_key = 0 if bos else 1  # a truncated context has no state before its first word
            order = self.lm.matched_order([tokens[:j] for j in ts], bos) if self.lm else np.zeros(len(ts), int)
            for r, j in enumerate(ts):
                out[(d, j)] = {"order": int(order[r]), "cache_empty": rows[r] <= first_key, "cache": {},
                               "cache_top": []}
            if "cache" not in self.w.parts:
                continue
            keys = vectors[d][torch.tensor(word_pos)]
            words = list(vocab)
            for lo in range(0, len(ts), 512):  # a chunk at a time: a long document's full table would not fit
                part = ts[lo:lo + 512]
                queries = vectors[d][torch.tensor(part)]  # the state before each target token
                dist = cache_distributions(queries, keys, ids, rows[lo:lo + 512], theta, window, first_key, len(vocab))
                top = dist.topk(min(self.K, len(vocab)), dim=1)
                for r, j in enumerate(part):
                    f = out[(d, j)]
                    f["cache_top"] = [words[i] for v, i in zip(top.values[r].tolist(), top.indices[r].tolist())
                                      if v > 0]
                    for w in (asked or {}).get((d, j), [tokens[j]]):
                        f["cache"][w] = float(dist[r, vocab[w]]) if w in vocab else 0.0
        return out

    def mix(self, feat: dict, ctx: list[str], words: list[str], net_lp: dict[str, float], bos: bool) -> list[float]:
        return mix_probs(self.w, self.lm, feat, ctx, words, net_lp, bos)

    def evaluate_docs(self, docs: list[list[str]], targets: list[list[int]], k: int, progress, bos: bool = True
                      ) -> dict:
        first = self.net.evaluate_docs(docs, targets, 0, lambda n: None, bos=bos, vectors="cache" in self.w.parts)
        logp, top = {}, {}
        if k == 0:
            feats = self.features(docs, targets, first["vectors"], bos)
            for (d, j), f in feats.items():
                p = self.mix(f, docs[d][:j], [docs[d][j]], {docs[d][j]: first["logp"][(d, j)]}, bos)[0]
                logp[(d, j)] = math.log(p) if p > 0 else -math.inf
            progress(len(feats))
            return {"top": top, "logp": logp}
        # the candidates: the n-gram's and the cache's top K here, the network's exact top K in the second pass
        feats = self.features(docs, targets, first["vectors"], bos)
        extra = {}
        keys = list(feats)
        kn_top = self.lm.top_words([docs[d][:j] for d, j in keys], self.K, bos) if "kn" in self.w.parts else \
            [[] for _ in keys]
        for key, row in zip(keys, kn_top):
            extra[key] = list(dict.fromkeys([w for w, _ in row] + feats[key]["cache_top"]))
        second = self.net.evaluate_docs(docs, targets, self.K, progress, bos=bos, extra=extra)
        # only the parts' candidates are ranked (the target joins them only when a part proposed it: ranking it
        # regardless would let the answer into the shortlist); the target is scored in any case
        cands = {key: list(dict.fromkeys([w for w, _ in second["scored"][key]] + extra[key])) for key in keys}
        feats = self.features(docs, targets, first["vectors"], bos,
                              asked={key: c + [docs[key[0]][key[1]]] for key, c in cands.items()})
        for (d, j) in keys:
            word = docs[d][j]
            net_lp = {**dict(second["scored"][(d, j)]), **second["extra"].get((d, j), {}), word: first["logp"][(d, j)]}
            words = [w for w in cands[(d, j)] if w in net_lp]
            probs = self.mix(feats[(d, j)], docs[d][:j], words + [word], net_lp, bos)
            best = sorted(range(len(words)), key=lambda i: -probs[i])
            top[(d, j)] = [words[i] for i in best[:k]]
            logp[(d, j)] = math.log(probs[-1]) if probs[-1] > 0 else -math.inf
        return {"top": top, "logp": logp}

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True) -> list[list[str]]:
        """Top-k after each context (the cache reads the context itself): a stand-in word after each context is
        the target whose candidates are ranked; its own score is not used."""
        docs = [list(c) + ["क"] for c in contexts]
        top = self.evaluate_docs(docs, [[len(c)] for c in contexts], k, lambda n: None, bos=bos)["top"]
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
    kn_p = {(d, j): kn_probs(lm, cut[d][:j], [cut[d][j]], True)[0] for d, ts in enumerate(want) for j in ts} \
        if "kn" in parts else {}
    probs: dict[float, dict[int, np.ndarray]] = {}
    classes: list[tuple[int, bool]] = []
    for theta in thetas:
        probs[theta] = {}
        for window in windows:
            feats = probe.features(cut, want, first["vectors"], True, theta, window)
            rows, classes = [], []
            for (d, j), f in feats.items():
                word = cut[d][j]
                kn = kn_p[(d, j)] if "kn" in parts else 0.0
                part = {"net": math.exp(first["logp"][(d, j)]), "kn": kn, "cache": f["cache"].get(word, 0.0)}
                rows.append([part[p] for p in parts])
                classes.append((f["order"], f["cache_empty"]))
            probs[theta][window] = np.asarray(rows)
    weights, ll = fit_weights(parts, probs, classes, context_dependent, mc.em_iterations)
    return weights, {"validation_words": len(classes), "validation_word_ppl": math.exp(-ll), **info}


# ---------------------------------------------------------------------------------------------------- the command

MIXES = {"net + cache": ("net", "cache"), "net + 4-gram": ("net", "kn"), "net + 4-gram + cache": ("net", "kn", "cache")}


def fit_all(net, lm: KneserNey, validation: list[str], cfg, log=print) -> tuple[dict[str, MixtureWeights], dict]:
    """Every mix of MIXES fitted on validation, context-dependent; the three-way mix also with one fixed λ, to say
    what the context classes buy."""
    weights, report = {}, {}
    for name, parts in MIXES.items():
        weights[name], info = fit(net, lm, parts, validation, cfg.mixture, cfg.eval)
        report[name] = {"validation_word_ppl": info["validation_word_ppl"], "theta": weights[name].theta,
                        "window": weights[name].window, "weights": weights[name].weights}
        log(f"fitted {name}: validation word ppl {info['validation_word_ppl']:.1f} on {info['validation_words']:,} "
            f"words; θ={weights[name].theta}, W={weights[name].window}")
    fixed, info = fit(net, lm, MIXES["net + 4-gram + cache"], validation, cfg.mixture, cfg.eval,
                      context_dependent=False)
    report["net + 4-gram + cache, one fixed λ"] = {"validation_word_ppl": info["validation_word_ppl"],
                                                    "weights": fixed.weights}
    log(f"one fixed λ for all contexts: validation word ppl {info['validation_word_ppl']:.1f}")
    return weights, report


def cli(args, cfg) -> int:
    """`python -m pipeline mix --model REF`: fit the mixtures on validation, then evaluate the network alone, each
    mix and the 4-gram on the test split (eval.max_words) with the usual tables."""
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
    weights, report = fit_all(net, lm, documents(cfg, "validation"), cfg)
    scorers = [net, *(MixtureScorer(net, lm, w, cfg.mixture.candidates, name) for name, w in weights.items()),
               NgramScorer(lm, "4-gram")]
    docs, sources, split = eval_documents(cfg, None)
    # each mix's gain over the network alone, paired on the same words
    paired = cfg.replace(eval=dataclasses.replace(cfg.eval, paired_reference=net.name))
    results = evaluate(scorers, docs, paired, split, sources=sources)
    results["mixture_fit"] = report
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "eval" / f"{cfg.name}-mixture"
    files = write_outputs(results, out)
    (out / "mixture_weights.json").write_text(json.dumps({n: w.to_dict() for n, w in weights.items()}, indent=1))
    print_table(results)
    print(f"wrote {len(files) + 1} files to {out}")

    return 0
