"""Fitting the mixture (mixture.py) on validation text: θ and W of the cache by grid, the λ of each context class
by EM on the validation words' log-likelihood, and the cache's recency skip by the suggestion bar's hits."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.corpus.cleaning import is_word
from pipeline.evaluation.distance import ECHO_WINDOW
from pipeline.evaluation.mixture import HISTORY_EDGES, MixtureWeights, kn_probs, mix_label
from pipeline.evaluation.mixture_scorer import MixtureScorer
from pipeline.evaluation.ngram import KneserNey, context_tail
from pipeline.evaluation.sampling import sample_of, sampled_documents
from pipeline.evaluation.scorer import read_all

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



# ------------------------------------------------------------------------------------------------- fit on validation

def fit(net, lm: KneserNey | None, parts: tuple[str, ...], docs: list[str], mc, ec, context_dependent: bool = True
        ) -> tuple[MixtureWeights, dict[str, Any]]:
    """θ, W and λ per class on a seeded, word-weighted sample of `docs` (mixture.fit_words validation words)."""
    tokens, targets, chosen, info = sample_of(docs, mc.fit_words, ec.sample_seed)
    _, cut, want = sampled_documents(tokens, targets, chosen)
    first = net.read(cut, want, vectors="cache" in parts)
    for _ in first:  # the network's log-probabilities and vectors: the parts are mixed below, for every (θ, W)
        pass
    probe = MixtureScorer(net, lm, MixtureWeights(parts), mc.candidates)
    thetas = mc.thetas if "cache" in parts else (0.0,)
    windows = mc.windows if "cache" in parts else (0,)
    kn_p = {(d, j): kn_probs(lm, context_tail(cut[d], j), [cut[d][j]], True)[0] for d, ts in enumerate(want) for j in ts} \
        if "kn" in parts else {}
    probs: dict[float, dict[tuple[int, int], np.ndarray]] = {}
    classes: dict[float, dict[tuple[int, int], list[tuple[int, int]]]] = {}

    def measure(theta: float, window: int, skip: int) -> None:
        feats = probe.features(cut, want, first.vectors, True, theta, window, skip=skip)
        rows, cls = [], []
        for (d, j), f in feats.items():
            word = cut[d][j]
            kn = kn_p[(d, j)] if "kn" in parts else 0.0
            part = {"net": math.exp(first.logp[(d, j)]), "kn": kn, "cache": f["cache"].get(word, 0.0)}
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
        weights, ll, about["skips"], about["skip_choice"] = choose_skip(net, lm, parts, docs, mc, ec,
                                                                        context_dependent, weights, measure, probs,
                                                                        classes)
        about["validation_word_ppl"] = math.exp(-ll)
    return weights, about


def choose_skip(net, lm, parts, docs, mc, ec, context_dependent, best: MixtureWeights, measure, probs, classes):
    """The cache's skip for the best (θ, W) (a third grid axis would triple the fit for a parameter that hardly
    interacts with them). Likelihood does not see echo — a cache that gives the last word high mass costs little
    log-likelihood on the 99 % of words that do not repeat it and gains much on the 1 % that do — but the bar does:
    each skip's λ are fitted by EM, then among the skips whose bar repeats one of the last 3 words at most
    mixture.echo_limit times as often as the text itself does (the goal the keystroke table reports against), the
    one whose mixture puts the next word in its top 3 most often on mixture.rank_words validation words (a seeded
    sample) is kept; ties go to the lower echo rate, then to the higher likelihood; when no skip qualifies, the one
    that echoes least. The bar is eval.keystroke_slots wide, the one the typist measures."""
    slots = ec.keystroke_slots
    for skip in mc.cache_skips:
        if (best.window, skip) not in probs[best.theta]:
            measure(best.theta, best.window, skip)
    tokens, targets, chosen, _ = sample_of(docs, mc.rank_words, ec.sample_seed)
    _, cut, want = sampled_documents(tokens, targets, chosen)
    report, candidates = {}, []
    for skip in mc.cache_skips:
        key = (best.window, skip)
        w, ll = fit_weights(parts, {best.theta: {key: probs[best.theta][key]}}, {best.theta: classes[best.theta]},
                            context_dependent, mc.em_iterations)
        top, _ = read_all(MixtureScorer(net, lm, w, mc.candidates), cut, want, slots)
        hits = echo = repeats = 0
        for d, ts in enumerate(want):
            positions = [j for j, t in enumerate(cut[d]) if is_word(t)]
            index = {j: i for i, j in enumerate(positions)}
            for j in ts:
                bar, i = top[(d, j)][:slots], index[j]
                recent = {cut[d][p] for p in positions[max(0, i - ECHO_WINDOW):i]}
                hits += cut[d][j] in bar
                echo += sum(x in recent for x in bar)
                repeats += cut[d][j] in recent
        total = sum(map(len, want))
        report[str(skip)] = {"validation_word_ppl": math.exp(-ll), f"top{slots}": hits / total,
                             "echo_rate": echo / (slots * total), "text_repeat_rate": repeats / total,
                             "rank_words": total}
        candidates.append((echo / (slots * total) <= mc.echo_limit * repeats / total, hits, -echo, ll, w))
    qualified = [c for c in candidates if c[0]]
    *_, ll, w = max(qualified, key=lambda c: c[1:4]) if qualified else max(candidates, key=lambda c: (c[2], c[1], c[3]))
    return w, ll, report, {"skip": w.skip, "echo_limit": mc.echo_limit, "within_limit": bool(qualified)}


# ---------------------------------------------------------------------------------------------------- the command

SERVED = ("net", "kn", "cache")  # the mix a model carries and its server suggests from
MIXES = (("net", "cache"), ("net", "kn"), SERVED)  # what `mix` compares


def fit_all(net, lm: KneserNey, validation: list[str], cfg, log=print, served_only: bool = False
            ) -> tuple[dict[str, MixtureWeights], dict]:
    """Every mix of MIXES fitted on validation, context-dependent, by name ("net + 4-gram + cache"); the three-way
    mix also with one fixed λ, to say what the context classes buy. `served_only`: the served mix alone."""
    weights, report = {}, {}
    for parts in MIXES if not served_only else [SERVED]:
        name = mix_label("net", parts, lm.order)
        weights[name], info = fit(net, lm, parts, validation, cfg.mixture, cfg.eval)
        report[name] = {"validation_word_ppl": info["validation_word_ppl"], "theta": weights[name].theta,
                        "window": weights[name].window, "skip": weights[name].skip, "weights": weights[name].weights,
                        **({"skips": info["skips"]} if "skips" in info else {})}
        for skip, v in info.get("skips", {}).items():
            slots = cfg.eval.keystroke_slots
            log(f"    skip {skip}: top-{slots} {100 * v[f'top{slots}']:.2f} %, "
                f"echo {100 * v['echo_rate']:.2f} % of the bar (the text repeats {100 * v['text_repeat_rate']:.2f} %), "
                f"validation word ppl {v['validation_word_ppl']:.1f} ({v['rank_words']:,} ranking words)")
        log(f"fitted {name}: validation word ppl {info['validation_word_ppl']:.1f} on {info['validation_words']:,} "
            f"words; θ={weights[name].theta}, W={weights[name].window}, skip={weights[name].skip}")
    if served_only:
        return weights, report
    fixed, info = fit(net, lm, SERVED, validation, cfg.mixture, cfg.eval,
                      context_dependent=False)
    report[f"{mix_label('net', SERVED, lm.order)}, one fixed λ"] = {"validation_word_ppl": info["validation_word_ppl"],
                                                    "weights": fixed.weights}
    log(f"one fixed λ for all contexts: validation word ppl {info['validation_word_ppl']:.1f}")
    return weights, report

