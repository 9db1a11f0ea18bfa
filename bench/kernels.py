"""Recurrence vs the machine's GEMM limit, and where a training step's time goes (issue 7).

    python -m pipeline bench --only kernels --config configs/full.yaml

1. sgemm GFLOP/s (square fp32 matmuls) and, in the same run, the fused recurrent layers (2 layers, hidden 512,
   input 256, batch 32, bptt 64, forward + backward). FLOPs are counted for the GEMMs only:
   forward = 2·B·T·G·H·(in + H) per layer (G = 4 LSTM, 3 GRU, 1 RNN), backward = 2 × forward (input and weight
   gradients); the element-wise gate math is not counted, so the fraction is a lower bound on useful work. A second
   reference is the GEMM of one time step's shape, (B × H) @ (H × G·H): with B = 32 rows it runs well below the
   square sgemm, and no recurrence can batch across time steps, since each needs the previous step's output.
2. A torch.profiler trace of the Lightning pipeline training the config's model (B, T from the config) on a seeded
   random piece stream: self CPU time by category (recurrence, output layer, embedding, optimizer, clipping, other
   ops) and what is left outside any op (Python, Lightning, data loading).
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from models.build import model_args
from pipeline.corpus.windows import BPTTWindows, batchify
from pipeline.training.train import LanguageModelModule, make_trainer

THREADS, B, T, IN, H, LAYERS = 2, 32, 64, 256, 512, 2
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, oneDNN primitive creation
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def sgemm_gflops(n: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / _timed(lambda: a @ b, max(3, int(4e10 / (2 * n ** 3)))) / 1e9


def step_gemm_gflops(gates: int) -> float:
    """The recurrence's own GEMM shape, one time step: (B × H) @ (H × G·H), the best a fused cell can hope for."""
    a, b = torch.randn(B, H), torch.randn(H, gates * H)
    return 2 * B * H * gates * H / _timed(lambda: a @ b, 2000) / 1e9


def recurrence_gflops(cell: str) -> tuple[float, float]:
    """(GFLOP/s, tokens/s) of a fused 2-layer recurrence, forward + backward."""
    torch.manual_seed(0)
    module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[cell](IN, H, LAYERS, batch_first=True)
    x = torch.randn(B, T, IN, requires_grad=True)

    def step():
        out, _ = module(x)
        out.sum().backward()

    seconds = _timed(step, 5)
    forward = sum(2 * B * T * GATES[cell] * H * ((IN if i == 0 else H) + H) for i in range(LAYERS))
    return 3 * forward / seconds / 1e9, B * T / seconds


CATEGORIES = [  # first match wins; op names as the profiler reports them on CPU
    ("recurrence", r"lstm|gru|rnn_tanh|mkldnn_rnn|_thnn_fused|rnn"),
    ("output layer", r"adaptive|log_softmax|cross_entropy|nll_loss|addmm|linear|mm|index_select|gather"),
    ("embedding", r"embedding"),
    ("optimizer", r"adam|_foreach|lerp|addcdiv"),
    ("clipping / grad norm", r"norm|clamp|_amp_foreach"),
]


def profile_pipeline(cfg, steps: int) -> dict:
    vocab = cfg.tokenizer.vocab_size
    c = cfg.replace(train=replace(cfg.train, max_steps=steps, max_epochs=1, limit_val_batches=0,
                                  early_stopping_patience=0, max_time_minutes=None, trainer={}, num_threads=THREADS))
    stream = np.random.default_rng(0).integers(4, vocab, size=cfg.data.batch_size * (cfg.data.bptt * steps + 1))
    windows = BPTTWindows(batchify(stream.astype(np.int64), cfg.data.batch_size), cfg.data.bptt)
    torch.manual_seed(0)
    module = LanguageModelModule(model_args(c.model, vocab), c.to_dict())
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as runs:
        trainer = make_trainer(c, Path(runs), logger=pl.loggers.CSVLogger(runs, name="bench"))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            trainer.fit(module, train_dataloaders=windows)
            wall = time.perf_counter() - t0
    # Self time of every op, so nested ops are not counted twice; the remainder is time outside any op.
    by_cat: dict[str, float] = {}
    other: dict[str, float] = {}
    for e in prof.key_averages():
        name = e.key.lower()
        cat = next((c for c, rx in CATEGORIES if re.search(rx, name)), "other ops")
        by_cat[cat] = by_cat.get(cat, 0.0) + e.self_cpu_time_total / 1e6
        if cat == "other ops":
            other[e.key] = e.self_cpu_time_total / 1e6
    # Self times of ops running on 2 intra-op threads are still summed per op call (the caller's thread), so they
    # add up to at most the wall time; the rest is Python, Lightning hooks and data loading.
    in_ops = sum(by_cat.values())
    shares = {k: round(v / wall, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])}
    shares["outside ops (python, lightning, data)"] = round(max(0.0, wall - in_ops) / wall, 3)
    return {"steps": steps, "wall_s": round(wall, 2), "tokens_per_s": round(steps * cfg.data.batch_size
                                                                           * cfg.data.bptt / wall),
            "model": {k: getattr(c.model, k) for k in ("cell", "embedding_dim", "hidden_dim", "num_layers",
                                                       "output")} | {"vocab": vocab},
            "share_of_wall": shares,
            "largest_other_ops": {k: round(v / wall, 3) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:6]}}


def run(cfg) -> dict:
    torch.set_num_threads(THREADS)
    sgemm = {n: sgemm_gflops(n) for n in (1024, 2048)}
    peak = max(sgemm.values())
    cells = {}
    for cell in os.environ.get("BENCH_KERNEL_CELLS", "lstm,gru,rnn_tanh").split(","):
        gflops, tps = recurrence_gflops(cell)
        shaped = step_gemm_gflops(GATES[cell])
        cells[cell] = {"gflops": round(gflops, 1), "tokens_per_s": round(tps),
                       "fraction_of_sgemm": round(gflops / peak, 3),
                       "step_gemm_gflops": round(shaped, 1), "fraction_of_step_gemm": round(gflops / shaped, 3)}
    sgemm_after = sgemm_gflops(1024)  # drift check: the machine is shared
    return {"threads": THREADS, "sizes": {"batch": B, "bptt": T, "input": IN, "hidden": H, "layers": LAYERS},
            "sgemm_gflops": {str(n): round(v, 1) for n, v in sgemm.items()} | {"1024_after": round(sgemm_after, 1)},
            "recurrence": cells, "goal": {"fraction_of_sgemm": 0.85},
            "profile": profile_pipeline(cfg, int(os.environ.get("BENCH_PROFILE_STEPS", "30")))}
