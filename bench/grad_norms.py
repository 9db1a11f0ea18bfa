"""Where to clip: the pre-clip gradient norm of the experiment's grid models trained *without* clipping.

Under Adam the update size hardly depends on the gradient's scale, so a threshold below the typical norm (the old
0.25: clipped share 1.00 for five of six models) rescales every step and "clip vs no clip" tests little. Clipping is
meant for spikes: this measures the norm's distribution after a warm-up and the share of steps each candidate
threshold would clip, so configs/experiment.yaml can take a threshold that engages on the tail only.

    BENCH_GRAD_CELLS=rnn_tanh,lstm,gru BENCH_GRAD_STEPS=200 python -m pipeline bench --only grad_norms --config configs/experiment.yaml
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import pytorch_lightning as pl

CANDIDATES = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
WARMUP = 50


class _Norms(pl.Callback):
    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.norms.append(float(pl_module._last_grad_norm))


def run(cfg) -> dict:
    from pipeline.corpus.prepare import prepare
    from pipeline.experiments.grid import match_parameters, variant_config
    from pipeline.training.train import train

    cells = os.environ.get("BENCH_GRAD_CELLS", "rnn_tanh,lstm,gru").split(",")
    steps = int(os.environ.get("BENCH_GRAD_STEPS", "200"))
    prepared = prepare(cfg, log=lambda *a: None)
    matched = match_parameters(cfg, prepared.manifest["tokenizer"]["vocab_size"])
    out = {"steps": steps, "warmup_skipped": WARMUP, "cells": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cells:
            m = matched["models"][name]
            c = variant_config(cfg, name, m["hidden_dim"])
            c = c.replace(train=dataclasses.replace(c.train, gradient_clip_val=None, max_steps=steps,
                                                    max_time_minutes=None, runs_dir=tmp, limit_val_batches=0,
                                                    checkpoint_every_n_steps=10 ** 6))
            rec = _Norms()
            train(c, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[rec])
            g = np.asarray(rec.norms[WARMUP:], dtype=np.float64)
            out["cells"][name] = {
                "hidden": m["hidden_dim"], "layers": m["num_layers"], "n": len(g),
                "percentiles": {f"p{q}": float(np.percentile(g, q)) for q in (5, 50, 90, 95, 99)},
                "max": float(g.max()), "first_steps": [round(v, 4) for v in rec.norms[:5]],
                "clipped_share_at": {str(t): float((g > t).mean()) for t in CANDIDATES}}
            print(name, out["cells"][name]["percentiles"], out["cells"][name]["clipped_share_at"], flush=True)
    return out
