"""The evaluation loop (DESIGN §7), a consumer of the `Scorer` protocol (scorer.py): whole-word top-k accuracy,
exact word perplexity, accuracy by distance and by position, the context-length curves and the context ablation,
the same code for every scorer (network, n-gram, mixture). The tables over these results are tables.py.

Every document is read after its warm start and every truncated context after the same-length replacement of what
it drops (warm.py; eval.warm_start=false: zero states instead), the same text for every model."""
from __future__ import annotations

import math
from typing import Any

from tqdm import tqdm

from pipeline.config import EvalConfig
from pipeline.evaluation.distance import (
    DISTANCE_BUCKETS,
    POSITION_BUCKETS,
    accuracy_by,
    bucket,
    distances,
    position_bucket,
)
from pipeline.evaluation.ablation import context_ablation
from pipeline.evaluation.sampling import sampled_documents, sampled_targets
from pipeline.evaluation.scorer import Scorer, read_all
from pipeline.evaluation.shards import sharded
from pipeline.evaluation.text_kinds import ScoredWords, curve_lengths, curve_positions, hit_string, scored_words
from pipeline.evaluation.warm import Warm, WarmStarts


def warm_starts(tokens: list[list[str]], ec: EvalConfig) -> WarmStarts:
    """The split's warm starts: seeded by eval.sample_seed, so the same for every model."""
    return WarmStarts(tokens, ec.warm_words, ec.warm_pool, ec.sample_seed)


def _score(scorer: Scorer, docs: list[str], ec: EvalConfig, k: int, desc: str):
    """Run the scorer on the sampled words; each document is read from its start (after its warm start) up to its
    last sampled word."""
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    keep, cut, want = sampled_documents(tokens, targets, chosen)
    warm = None
    if ec.warm_start and len(tokens) > 1:
        ws = warm_starts(tokens, ec)
        warm = [ws.warm(d) for d in keep]
    elif ec.warm_start:  # one document: no other text of its split to warm up on (sample_line says so)
        info["zero_start"] = "one document: no other text to warm up on"
    info["warm_start"] = warm is not None
    with tqdm(total=info["words"], unit="word", desc=f"{desc} {scorer.name}", unit_scale=True, leave=False) as bar:
        def job(ds: list[int], progress) -> tuple[dict, dict]:
            return read_all(scorer, [cut[d] for d in ds], [want[d] for d in ds], k, progress,
                            warm=None if warm is None else [warm[d] for d in ds])
        top, logp = sharded(job, [len(c) + len(w) for c, w in zip(cut, want)], ec.workers, bar.update, scorer)
        elapsed = bar.format_dict.get("elapsed") or 0.0
        info["words_per_s"] = info["words"] / elapsed if elapsed > 0 else None  # over the whole pass, not the last
    return tokens, targets, chosen, keep, top, logp, info


def evaluate_scorer(scorer, docs: list[str], ec: EvalConfig, split: str = "test",
                    sources: list[str] | None = None) -> dict[str, Any]:
    """All natural-text measurements for one model on cleaned documents (every word, or eval.max_words of them):
    overall figures, per-word hits (for the tables by kind, pipeline/evaluation/text_kinds.py) and the hits of the
    context-length curves."""
    k = ec.k
    stats = scorer.search_stats
    before = dict(stats) if stats is not None else {}
    tokens, targets, chosen, keep, top_of, logp, info = _score(scorer, docs, ec, k, "evaluate")
    if stats is not None:  # how often the beam had to widen to prove its top k exact, and how often it could not
        info["beam"] = {key: v - before[key] for key, v in stats.items()}
    hit1, hitk, dist_b, pos_b, nll = [], [], [], [], 0.0
    for r, d in enumerate(keep):
        ws = [tokens[d][j] for j in targets[d]]
        dists = distances(ws)  # over the whole document, sampled or not
        for i in chosen[d]:
            j = targets[d][i]
            top = top_of[(r, j)]
            hit1.append(bool(top) and top[0] == ws[i])
            hitk.append(ws[i] in top[:k])
            dist_b.append(bucket(dists[i]))
            pos_b.append(position_bucket(i))
            nll -= logp[(r, j)]
    n = len(hit1)
    hits = {"top1": hit1, f"top{k}": hitk}
    out = {**info, "top1": sum(hit1) / n if n else None, f"top{k}": sum(hitk) / n if n else None,
           "word_ppl": math.exp(nll / n) if n else None,
           "by_distance": accuracy_by(dist_b, hits, DISTANCE_BUCKETS),
           "by_position": accuracy_by(pos_b, hits, POSITION_BUCKETS),
           "hits": {name: hit_string(h) for name, h in hits.items()}}
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    full = [top_of[(r, targets[d][i])] for r, d in enumerate(keep) for i in chosen[d]]
    out["context"] = context_curves(scorer, tokens, targets, words, full, ec)
    return out


def word_perplexity(scorer, docs: list[str], ec: EvalConfig) -> tuple[float, int]:
    """Word perplexity alone (no beam search): what ranks models for the registry's champion alias."""
    *_, logp, info = _score(scorer, docs, ec, 0, "perplexity")
    n = len(logp)
    return (math.exp(-sum(logp.values()) / n) if n else math.nan), n


def context_curves(scorer, tokens, targets, words: ScoredWords, full_top: list[list[str]], ec: EvalConfig
                   ) -> dict[str, Any]:
    """Per kind of eval.context_curves: top-1 hits when only the last c words may be read (Khandelwal et al. 2018),
    on every scored word of that kind with at least that many words before it, so every c really truncates; "all"
    is the full-context pass. A truncated context starts mid-document (no `bos`), after the same replacement of
    what it drops as the context ablation's (warm.py), or from zeros with eval.warm_start=false."""
    out: dict[str, Any] = {}
    positions = curve_positions(words, ec)
    ws = warm_starts(tokens, ec) if ec.warm_start and len(tokens) > 1 else None
    replacing: dict[int, Any] = {}

    def warm_of(d: int, first: int) -> Warm:
        if d not in replacing:
            replacing[d] = ws.replacing(d)
        return Warm(replacing[d][0], replacing[d][1] + first)
    # one progress line for the whole curve (a mixture's curves on a long file take minutes): contexts read
    total = sum(len(pos) * len(curve_lengths(ec, kind)) for kind, pos in positions.items())
    with tqdm(total=total, unit="context", desc=f"context curves {scorer.name}", unit_scale=True, leave=False) as bar:
        for kind, pos in positions.items():
            at = [(int(words.doc[p]), int(words.word[p])) for p in pos]
            gold = [tokens[d][targets[d][i]] for d, i in at]
            hits = {}
            for c in curve_lengths(ec, kind):
                ctxs = [tokens[d][targets[d][i - c]:targets[d][i]] for d, i in at]  # from the c-th word back
                warm = [warm_of(d, targets[d][i - c]) for d, i in at] if ws else None
                tops = scorer.top_words(ctxs, 1, bos=False, warm=warm) if ctxs else []  # top-1: k = 1 is cheaper
                hits[str(c)] = hit_string(bool(t) and t[0] == g for t, g in zip(tops, gold))
                bar.update(len(ctxs))
            hits["all"] = hit_string(bool(full_top[p]) and full_top[p][0] == g for p, g in zip(pos, gold))
            out[kind] = {"min_context_words": ec.context_curves[kind], "positions": len(at), "hits": hits}
    return out


def ablate_scorer(scorer: Scorer, docs: list[str], ec: EvalConfig, sources: list[str] | None, counts) -> dict:
    """The context ablation and copy test (ablation.py) on the evaluation's words, with a progress line."""
    tokens, targets, chosen, _ = sampled_targets(docs, ec)
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    with tqdm(unit="target", desc=f"context ablation {scorer.name}", unit_scale=True, leave=False) as bar:
        return context_ablation(scorer, tokens, targets, words, warm_starts(tokens, ec), ec, counts, bar.update)
