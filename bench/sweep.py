"""Training throughput of the config's model across threads, batch size, bptt, output layer and vocabulary
(issue 7), so the defaults are chosen by measurement. Tokens/s only: what each setting does to quality at equal wall
time is `time_to_quality`'s job.

    python -m pipeline bench --only sweep --config configs/full.yaml

Every point is the bare training loop (`pipeline.bench.bare_tokens_per_s`) over a seeded random piece stream, with
the config's model; the reference point (the config's own settings) is measured first and again last, and each
figure is also given as a ratio to the mean of the two, since this machine is noisy.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from models.build import build_model, model_args
from pipeline.bench import bare_tokens_per_s
from pipeline.corpus.windows import BPTTWindows, batchify


def _scaled_cutoffs(cutoffs: tuple[int, ...], vocab: int, base_vocab: int) -> tuple[int, ...]:
    """Keep the adaptive clusters the same share of the vocabulary when its size changes."""
    return tuple(max(1, round(c * vocab / base_vocab)) for c in cutoffs)


def point(cfg, threads: int, batch: int, bptt: int, vocab: int, output: str, steps: int, warmup: int = 3) -> float:
    torch.set_num_threads(threads)
    model_cfg = replace(cfg.model, output=output, tie_weights=False if output == "adaptive" else cfg.model.tie_weights,
                        cutoffs=_scaled_cutoffs(cfg.model.cutoffs, vocab, cfg.tokenizer.vocab_size)
                        if output == "adaptive" else ())
    torch.manual_seed(0)
    model = build_model(model_args(model_cfg, vocab))
    # Zipf-like ids, frequent pieces first as the adaptive softmax expects; uniform ids would put most targets
    # in the tail clusters and overstate its cost.
    rng = np.random.default_rng(0)
    ids = np.minimum(rng.zipf(1.1, size=batch * (bptt * (warmup + steps) + 1)), vocab - 1).astype(np.int64)
    windows = BPTTWindows(batchify(ids, batch), bptt)
    return bare_tokens_per_s(model, windows, warmup, steps, cfg.train.lr, cfg.train.weight_decay,
                             cfg.train.gradient_clip_val)


def run(cfg) -> dict:
    steps = int(os.environ.get("BENCH_SWEEP_STEPS", "12"))
    d, m = cfg.data, cfg.model
    ref = dict(threads=2, batch=d.batch_size, bptt=d.bptt, vocab=cfg.tokenizer.vocab_size, output=m.output)
    tokens_per_batch = d.batch_size * d.bptt
    grid = ([{"threads": 1}]
            + [{"batch": b} for b in (16, 64, 128) if b != d.batch_size]
            + [{"bptt": t} for t in (32, 128) if t != d.bptt]
            + [{"output": o} for o in ("softmax", "adaptive") if o != m.output]
            + [{"vocab": v, "output": o} for v in (4000, 16000) for o in ("adaptive", "softmax")])
    first = point(cfg, **ref, steps=steps)
    points = []
    for change in grid:
        p = {**ref, **change}
        # Equal tokens per point: fewer steps for bigger batches or windows.
        n = max(3, round(steps * tokens_per_batch / (p["batch"] * p["bptt"])))
        points.append({**p, "steps": n, "tokens_per_s": round(point(cfg, **p, steps=n))})
    last = point(cfg, **ref, steps=steps)
    mean = (first + last) / 2
    for p in points:
        p["ratio_to_reference"] = round(p["tokens_per_s"] / mean, 3)
    return {"model": {"cell": m.cell, "embedding": m.embedding_dim, "hidden": m.hidden_dim, "layers": m.num_layers},
            "reference": {**ref, "tokens_per_s": [round(first), round(last)]}, "points": points}
