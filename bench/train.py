"""Training throughput (issue 4): the Lightning pipeline vs a bare PyTorch loop, same model and batches, one run.

    python -m pipeline bench --only train                                   # the figure the issue asks for
    BENCH_TRAIN_STEPS=3 BENCH_TRAIN_CELLS=rnn_tanh python -m pipeline bench --only train   # a quick check

Fixed sizes (not the config's): embedding 256, hidden 512, 2 layers, batch 32, bptt 64, vocabulary 8k, 2 threads.
Batches are contiguous BPTT windows over a seeded random stream of 8k ids (token identity does not change the cost).
The pipeline is `make_trainer` from the config (clipping, checkpoints, pre-clip grad-norm logging, progress bar) with
a CSV logger standing in for MLflow; validation is off. The bare loop does the same work per step: carried and detached
state, AdamW, `clip_grad_norm_`. Both time the same steps after the same warm-up; goal: pipeline >= 0.95 x bare.
"""
from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from models.build import build_model, model_args
from pipeline.bench import bare_tokens_per_s
from pipeline.corpus.windows import BPTTWindows, batchify
from pipeline.training.train import LanguageModelModule, make_trainer

VOCAB, EMB, HID, LAYERS, BATCH, BPTT, THREADS = 8000, 256, 512, 2, 32, 64, 2


def _config(cfg, cell: str, steps: int, runs: str):
    model = replace(cfg.model, cell=cell, embedding_dim=EMB, hidden_dim=HID, num_layers=LAYERS,
                    init="default", output="softmax", cutoffs=())
    train = replace(cfg.train, max_steps=steps, max_epochs=1, limit_val_batches=0, early_stopping_patience=0,
                    runs_dir=runs, trainer={}, num_threads=THREADS, max_time_minutes=None)
    return cfg.replace(model=model, train=train)


def _windows(steps: int) -> BPTTWindows:
    stream = np.random.default_rng(0).integers(4, VOCAB, size=BATCH * (BPTT * steps + 1), dtype=np.int64)
    return BPTTWindows(batchify(stream, BATCH), BPTT)


class _Timer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1 = time.perf_counter()


def _lightning(cfg, cell: str, warmup: int, steps: int, runs: str) -> float:
    c = _config(cfg, cell, warmup + steps, runs)
    torch.manual_seed(0)
    module = LanguageModelModule(model_args(c.model, VOCAB), c.to_dict())
    timer = _Timer(warmup)
    run_dir = Path(runs) / cell
    logger = pl.loggers.CSVLogger(str(run_dir), name="bench")
    trainer = make_trainer(c, run_dir, logger=logger, extra_callbacks=[timer])
    trainer.fit(module, train_dataloaders=_windows(warmup + steps))
    return steps * BATCH * BPTT / (timer.t1 - timer.t0)


def _bare(cfg, cell: str, warmup: int, steps: int) -> float:
    c = _config(cfg, cell, warmup + steps, "")
    torch.manual_seed(0)
    model = build_model(model_args(c.model, VOCAB))
    tc = c.train
    return bare_tokens_per_s(model, _windows(warmup + steps), warmup, steps, tc.lr, tc.weight_decay,
                             tc.gradient_clip_val)


def run(cfg) -> dict:
    torch.set_num_threads(THREADS)
    steps = int(os.environ.get("BENCH_TRAIN_STEPS", "20"))
    warmup = int(os.environ.get("BENCH_TRAIN_WARMUP", "3"))
    cells = os.environ.get("BENCH_TRAIN_CELLS", "rnn_tanh,lstm,gru").split(",")
    out: dict = {"sizes": {"embedding": EMB, "hidden": HID, "layers": LAYERS, "batch": BATCH, "bptt": BPTT,
                           "vocab": VOCAB, "threads": THREADS}, "steps": steps, "warmup": warmup, "cells": {}}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as runs:
        for cell in cells:
            bare = _bare(cfg, cell, warmup, steps)
            lightning = _lightning(cfg, cell, warmup, steps, runs)
            bare2 = _bare(cfg, cell, warmup, steps)  # before and after, so drift on a shared machine shows
            ref = (bare + bare2) / 2
            out["cells"][cell] = {"bare_tokens_per_s": round(ref), "bare_runs": [round(bare), round(bare2)],
                                  "pipeline_tokens_per_s": round(lightning), "ratio": round(lightning / ref, 3)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["goal"] = {"ratio": 0.95}
    return out
