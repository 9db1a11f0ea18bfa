"""Whole-split passes on several CPU cores: the documents split over forked worker processes (eval.workers).

A scorer's reading and the typist are sequential per document, and most of their time is Python and small matrix
products that one torch thread runs about as fast as two (bench time_to_quality's notes: 2 threads give ~1.6x on a
training step, far less on a search step). Documents are independent (each is read from its own warm start), so
the whole-split passes (the evaluation's top-k and log-probabilities, the typist) split the documents into
`workers` shards of about equal cost, run each in a forked process with one torch thread, and merge the results by
document: the same keys and values as one process gives. Forking shares the loaded scorer (model, n-gram, memos)
with the workers copy-on-write, so nothing is pickled but the shard's results.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch

Job = Callable[[list[int], Callable[[int], object]], tuple[dict, ...]]

_JOB: tuple[Job, list[list[int]], Any, Any] | None = None  # what the forked workers run; set just before forking
STAT_ATTRS = ("search_stats", "settle_stats")  # a scorer's counters, summed over the workers


def balanced(weights: Sequence[float], n: int) -> list[list[int]]:
    """n shards of the indices, heaviest first onto the lightest shard (LPT); each shard in index order, none empty."""
    loads, shards = [0.0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        j = min(range(n), key=loads.__getitem__)
        loads[j] += weights[i]
        shards[j].append(i)
    return [sorted(s) for s in shards if s]


def _counters(scorer) -> dict[str, dict[str, int]]:
    return {a: d for a in STAT_ATTRS if isinstance(d := getattr(scorer, a, None), dict)}


def _run_shard(i: int) -> tuple[tuple[dict, ...], dict[str, dict[str, int]]]:
    job, shards, counter, scorer = _JOB
    torch.set_num_threads(1)  # one thread per worker: the workers are the parallelism
    for d in _counters(scorer).values():  # this worker's counts only; the parent adds them to its own
        d.update(dict.fromkeys(d, 0))

    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n
    return job(shards[i], progress), {a: dict(d) for a, d in _counters(scorer).items()}


def sharded(job: Job, weights: Sequence[float], workers: int, progress: Callable[[int], object],
            scorer=None) -> tuple[dict, ...]:
    """job(doc_indices, progress) -> dicts keyed by (position in doc_indices, token index). Run over every document,
    in `workers` forked processes when more than one: the dicts merged and keyed by (document index, token index),
    the scorer's counters (STAT_ATTRS) summed into its own."""
    global _JOB
    if workers <= 1 or len(weights) < 2:
        return job(list(range(len(weights))), progress)
    shards = balanced(weights, workers)
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    _JOB = (job, shards, counter, scorer)
    try:
        with ctx.Pool(len(shards)) as pool:
            pending = pool.map_async(_run_shard, range(len(shards)))
            shown = 0
            while not pending.ready():
                pending.wait(0.5)
                now = counter.value
                progress(now - shown)
                shown = now
            parts = pending.get()
    finally:
        _JOB = None
    merged: tuple[dict, ...] | None = None
    for shard, (dicts, counts) in zip(shards, parts):
        if merged is None:
            merged = tuple({} for _ in dicts)
        for out, part in zip(merged, dicts):
            out.update({(shard[r], t): v for (r, t), v in part.items()})
        for attr, d in _counters(scorer).items():
            for key, v in counts.get(attr, {}).items():
                d[key] = d.get(key, 0) + v
    return merged
