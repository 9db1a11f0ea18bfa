"""Intervals on natural text: a seeded, document-clustered bootstrap (DESIGN §7).

Words of one document are not independent (a verse's refrain, a paragraph's topic), so resampling words would make
intervals far too narrow. The unit of resampling is a cluster: a document, or a block of `block_words` consecutive
words of a long one.

    words  w1 … wn  with cluster c(i), hit h_m(i) ∈ {0, 1} for every model m          (all models: the same words)
    per cluster:  n_c = #words,  s_mc = Σ hits
    replicate r:  draw C clusters with replacement (counts W_rc)
                  acc_m(r) = Σ_c W_rc s_mc / Σ_c W_rc n_c          paired: Δ(r) = acc_a(r) − acc_b(r)
    interval:     the 2.5 % and 97.5 % quantiles over the replicates (percentile bootstrap)

Every model of a cell is resampled with the same draws, so a difference is paired on the same words. The draws are
seeded by (seed, cell key): a cell's interval does not depend on which other cells were computed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_CHUNK = 4_000_000  # replicate × cluster draws held in memory at once


def cell_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def replicates(clusters: Sequence[int], values: dict[str, Sequence[float]], n_replicates: int,
               seed: int, weights: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The bootstrap distribution of each model's mean: {name: (n_replicates,)}, all from the same cluster draws.
    With `weights`, of the ratio Σ values / Σ weights instead (keystrokes saved over keystrokes typed)."""
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    n_c = np.bincount(inverse, weights=None if weights is None else np.asarray(weights, dtype=np.float64),
                      minlength=len(ids)).astype(np.float64)
    sums = {name: np.bincount(inverse, weights=np.asarray(v, dtype=np.float64), minlength=len(ids))
            for name, v in values.items()}
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n_replicates) for name in values}
    step = max(1, _CHUNK // max(len(ids), 1))
    for a in range(0, n_replicates, step):
        draw = rng.integers(0, len(ids), size=(min(step, n_replicates - a), len(ids)))  # (R', C) cluster indices
        denom = n_c[draw].sum(axis=1)
        for name, s in sums.items():
            out[name][a:a + len(draw)] = s[draw].sum(axis=1) / denom
    return out


def interval(reps: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(lo), float(hi)


def clustered_cell(clusters: Sequence[int], hits: dict[str, Sequence[bool]], n_replicates: int, seed: int, key: str,
                   reference: str | None = None) -> dict:
    """Accuracy with its clustered 95 % interval per model, and each model's paired difference from `reference`:
    {"n", "clusters", "models": {m: {"acc", "low", "high"}}, "paired": {m: {"diff", "low", "high"}}}."""
    n = len(clusters)
    cell: dict = {"n": n, "clusters": len(set(clusters)), "models": {}, "paired": {}}
    if n == 0:
        return cell
    reps = replicates(clusters, hits, n_replicates, cell_seed(seed, key))
    for name, h in hits.items():
        lo, hi = interval(reps[name])
        cell["models"][name] = {"acc": float(np.mean(np.asarray(h, dtype=np.float64))), "low": lo, "high": hi}
    if reference in hits:
        ref = cell["models"][reference]["acc"]
        for name in hits:
            if name != reference:
                lo, hi = interval(reps[name] - reps[reference])
                cell["paired"][name] = {"diff": cell["models"][name]["acc"] - ref, "low": lo, "high": hi}
    return cell
