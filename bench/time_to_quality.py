"""Time to quality (issue 7): train each cell on the config's corpus and evaluate whole-word top-1 on a fixed sample
of test documents every few minutes; record when it first passes the Kneser-Ney 4-gram on the same sample.

Environment knobs (so `make bench` stays one command): TTQ_CELLS (default "lstm,rnn_tanh,gru"), TTQ_MINUTES
(training budget per cell, default 30), TTQ_EVERY_MINUTES (default 3), TTQ_SAMPLE_WORDS (default 3000).
Evaluation time is excluded from the training clock.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time

import pytorch_lightning as pl
import torch

from pipeline.bundle import ModelBundle, load_checkpoint
from pipeline.config import Config
from pipeline.data import documents, prepare
from pipeline.evaluate import NeuralScorer, NgramScorer, targets_of
from pipeline.ngram import build_baseline
from pipeline.tokenizer import Tokenizer


def sample_documents(docs: list[str], words: int, seed: int = 1234) -> list[str]:
    """A seeded sample of whole documents with about `words` target words: the same for every run and cell."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    out, n = [], 0
    for i in order:
        if n >= words:
            break
        out.append(docs[i])
        n += len(targets_of(docs[i].split()))
    return out


def top1(scorer, docs: list[str]) -> tuple[float, int]:
    tokens = [d.split() for d in docs]
    targets = [targets_of(t) for t in tokens]
    res = scorer.evaluate_docs(tokens, targets, 1, lambda n: None)
    hits = [res["top"][(d, j)][:1] == [tokens[d][j]] for d, ts in enumerate(targets) for j in ts]
    return sum(hits) / len(hits), len(hits)


class QualityCurve(pl.Callback):
    """Every `every_s` seconds of training, top-1 on the sample; the evaluation's own time is not counted."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, docs: list[str], every_s: float, target: float):
        self.cfg, self.tok, self.docs, self.every_s, self.target = cfg, tokenizer, docs, every_s, target
        self.curve: list[dict] = []
        self.passed_at: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0, self.paused, self.last = time.perf_counter(), 0.0, 0.0

    def _train_seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def _measure(self, trainer, pl_module) -> None:
        t = time.perf_counter()
        elapsed = self._train_seconds()
        model = pl_module.model
        was_training = model.training
        bundle = ModelBundle(model, self.tok, self.cfg.to_dict(), {"model_args": pl_module.hparams["model_args"]})
        with torch.no_grad():
            acc, n = top1(NeuralScorer(bundle, self.cfg.eval, "probe"), self.docs)
        model.train(was_training)
        self.curve.append({"train_s": round(elapsed, 1), "step": trainer.global_step, "top1": acc, "words": n})
        if self.passed_at is None and acc > self.target:
            self.passed_at = elapsed
        print(f"  [{elapsed / 60:5.1f} min, step {trainer.global_step}] top-1 {acc:.4f} (4-gram {self.target:.4f})",
              flush=True)
        self.paused += time.perf_counter() - t
        self.last = self._train_seconds()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._train_seconds() - self.last >= self.every_s:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._measure(trainer, pl_module)


def run(cfg: Config) -> dict:
    from pipeline.train import train

    cells = os.environ.get("TTQ_CELLS", "lstm,rnn_tanh,gru").split(",")
    minutes = float(os.environ.get("TTQ_MINUTES", "30"))
    every = float(os.environ.get("TTQ_EVERY_MINUTES", "3")) * 60
    prepared = prepare(cfg)
    docs = sample_documents(documents(cfg, "test"), int(os.environ.get("TTQ_SAMPLE_WORDS", "3000")))
    t = time.perf_counter()
    ngram = NgramScorer(build_baseline(cfg))
    ngram_build_s = time.perf_counter() - t
    target, n_words = top1(ngram, docs)
    out = {"sample": {"documents": len(docs), "words": n_words, "seed": 1234},
           "ngram": {"order": cfg.eval.ngram_order, "top1": target, "build_s": round(ngram_build_s, 1)},
           "budget_minutes": minutes, "cells": {}}
    for cell in cells:
        cell_cfg = cfg.replace(model=dataclasses.replace(cfg.model, cell=cell),
                               train=dataclasses.replace(cfg.train, max_time_minutes=minutes, max_epochs=1000,
                                                         early_stopping_patience=0),
                               name=f"{cfg.name}-ttq")
        probe = QualityCurve(cell_cfg, Tokenizer(prepared.tokenizer_path), docs, every, target)
        print(f"{cell}: training for {minutes} min, top-1 on {n_words} sample words every {every / 60:.0f} min")
        result = train(cell_cfg, prepared, fresh=True, extra_callbacks=[probe])
        out["cells"][cell] = {"curve": probe.curve, "passed_ngram_at_s": probe.passed_at,
                              "final_top1": probe.curve[-1]["top1"] if probe.curve else None,
                              "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
                              "checkpoint": result.best_checkpoint,
                              "params": sum(p.numel() for p in load_checkpoint(result.best_checkpoint).model.parameters())}
    return out
