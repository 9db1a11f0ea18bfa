"""Time to quality (issue 7): train each cell on the config's corpus and evaluate whole-word top-1 on a fixed sample
of test words every few minutes (overall and with > 256 words of context); record when it first passes the
Kneser-Ney 4-gram on the same sample.

Environment knobs (so `make bench` stays one command): TTQ_CELLS (default "lstm,rnn_tanh,gru": cells, or the
names of VARIANTS below), TTQ_MINUTES (training budget per entry, default 30; "lstm=30,gru=15" sets it per entry),
TTQ_EVERY_MINUTES (default 3), TTQ_SAMPLE_WORDS (default 3000: a seeded, word-weighted sample, long documents keeping their share). Evaluation time is excluded from the training clock.

TTQ_RUN=runs/<run> scores a finished run instead (no training): the weights it kept at each validation, by text
kind, each with its paired difference from the 4-gram (`make served` keeps them; kept_checkpoints below):

    TTQ_RUN=runs/served-lstm-<hash> TTQ_SAMPLE_WORDS=10000 python -m pipeline bench --only time_to_quality \
        --config configs/served.yaml

Several runs, comma-separated, are a one-factor check (`one_factor`): each scored with its best.ckpt (TTQ_WEIGHTS=
last.ckpt: the end of its schedule) on the same sample, paired with the first run (the reference) and with the
4-gram, by kind and by the word's training frequency:

    TTQ_RUN=runs/served-lstm-<hash>,runs/served-vocab16k-lstm-<hash> TTQ_SAMPLE_WORDS=10000 \
        python -m pipeline bench --only time_to_quality --config configs/served.yaml

The variants answer the output-layer and vocabulary questions at equal wall time: each changes one thing in the
config (a different vocabulary retrains the tokenizer; the adaptive cutoffs keep the same share of the vocabulary).

    TTQ_CELLS=lstm-softmax,lstm-4k,lstm-16k TTQ_MINUTES=8 python -m pipeline bench --only time_to_quality \
        --config configs/full.yaml
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from pipeline.checkpoints import ModelBundle, load_checkpoint
from pipeline.config import Config, build_config
from pipeline.corpus.prepare import document_sources, documents, prepare
from pipeline.corpus.tokenizer import Tokenizer
from pipeline.evaluation.bootstrap import clustered_cell
from pipeline.evaluation import NeuralScorer, NgramScorer, build_baseline
from pipeline.evaluation.loop import _score
from pipeline.evaluation.text_kinds import scored_words

VARIANTS = {  # name -> (cell, config overrides)
    "lstm-softmax": ("lstm", ["model.output=softmax", "model.cutoffs=[]"]),
    "lstm-4k": ("lstm", ["tokenizer.vocab_size=4000", "model.cutoffs=[500, 1500]"]),
    "lstm-16k": ("lstm", ["tokenizer.vocab_size=16000", "model.cutoffs=[2000, 6000]"]),
}


def entry_config(cfg: Config, entry: str, minutes: float) -> Config:
    cell, overrides = VARIANTS.get(entry, (entry, []))
    return build_config(cfg.to_dict(), [f"model.cell={cell}", f"train.max_time_minutes={minutes}",
                                        "train.max_epochs=1000", "train.early_stopping_patience=0",
                                        f"name={cfg.name}-ttq-{entry}", *overrides], f"time_to_quality {entry}")


def budgets(entries: list[str], spec: str) -> dict[str, float]:
    """TTQ_MINUTES: one number for every entry, or `entry=minutes,...`."""
    if "=" not in spec:
        return {e: float(spec) for e in entries}
    given = {k.strip(): float(v) for k, v in (item.split("=") for item in spec.split(","))}
    return {e: given[e] for e in entries}


def sample_scores(scorer, docs: list[str], ec, sources: list[str] | None = None):
    """The seeded, word-weighted sample of eval.max_words words (pipeline/evaluation/sampling.py) as ScoredWords,
    whether the scorer's top-1 is the word, and the word's log-probability (nats), per word."""
    tokens, targets, chosen, keep, top, logp, info = _score(scorer, docs, ec, 1, "ttq")
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    keys = [(r, targets[d][i], tokens[d][targets[d][i]]) for r, d in enumerate(keep) for i in chosen[d]]
    hits = np.array([top[(r, t)][:1] == [word] for r, t, word in keys], dtype=bool)
    return words, hits, np.array([logp[(r, t)] for r, t, _ in keys])


def sample_hits(scorer, docs: list[str], ec, sources: list[str] | None = None):
    words, hits, _ = sample_scores(scorer, docs, ec, sources)
    return words, hits


def top1(scorer, docs: list[str], ec, sources: list[str] | None = None) -> dict:
    """Top-1 on the sample's words with a letter, overall and where more than 256 words of context exist (the long
    documents, where the 4-gram has no memory), each with its document-clustered 95 % interval."""
    words, hits = sample_hits(scorer, docs, ec, sources)
    out = {}
    for key, mask in (("", ~words.numeral), ("_pos257", ~words.numeral & (words.position == "257+"))):
        c = clustered_cell(words.cluster[mask].tolist(), {"top1": hits[mask]}, ec.bootstrap_replicates,
                           ec.bootstrap_seed, f"ttq{key}")
        m = c["models"].get("top1")
        out |= {f"top1{key}": m["acc"] if m else None, f"top1{key}_low": m["low"] if m else None,
                f"top1{key}_high": m["high"] if m else None, f"words{key}": int(mask.sum()),
                f"documents{key}": int(len(np.unique(words.doc[mask])))}
    return out


class QualityCurve(pl.Callback):
    """Every `every_s` seconds of training, top-1 on the sample; the evaluation's own time is not counted."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, docs: list[str], every_s: float, target: float,
                 sources: list[str] | None = None):
        # docs: the whole test split; cfg.eval.max_words picks the words scored
        self.cfg, self.tok, self.docs, self.every_s, self.target = cfg, tokenizer, docs, every_s, target
        self.sources = sources
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
            got = top1(NeuralScorer(bundle, self.cfg.eval, "probe"), self.docs, self.cfg.eval, self.sources)
        model.train(was_training)
        self.curve.append({"train_s": round(elapsed, 1), "step": trainer.global_step, **got})
        if self.passed_at is None and got["top1"] > self.target:
            self.passed_at = elapsed
        print(f"  [{elapsed / 60:5.1f} min, step {trainer.global_step}] top-1 {got['top1']:.4f} (4-gram "
              f"{self.target:.4f}); > 256 words of context {got['top1_pos257']}", flush=True)
        self.paused += time.perf_counter() - t
        self.last = self._train_seconds()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._train_seconds() - self.last >= self.every_s:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._measure(trainer, pl_module)


def kept_checkpoints(cfg: Config, run_dir: Path) -> dict:
    """TTQ_RUN: a finished run's curve, from the weights it kept at every validation (checkpoints/validations.json,
    written by trained_run.ValidationCheckpoints): each scored on the sample by text kind (and pooled, as the
    evaluation's tables are), beside the 4-gram on the same words, with the paired difference from it (clustered
    95 % intervals); where each kind first passes it, and which point is the weights the run evaluated (best.ckpt)."""
    from pipeline.evaluation.text_kinds import ALL, cell

    ckpts = run_dir / "checkpoints"
    kept = json.loads((ckpts / "validations.json").read_text())
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    ngram_scorer = NgramScorer(build_baseline(cfg))
    ngram = ngram_scorer.name
    ec = dataclasses.replace(cfg.eval, paired_reference=ngram)
    words, ngram_hits = sample_hits(ngram_scorer, docs, ec, sources)
    kinds = words.kinds()
    masks = {k: ~words.numeral & (words.kind == k) for k in kinds}
    if len(kinds) > 1:
        masks[ALL] = ~words.numeral
    curve, passed = [], {}
    for entry in kept:
        t = time.perf_counter()
        # the file beside validations.json: the stored path is relative to where the run was trained
        net = NeuralScorer(load_checkpoint(ckpts / Path(entry["checkpoint"]).name), ec, "net")
        with torch.no_grad():
            _, hits = sample_hits(net, docs, ec, sources)
        point = {"step": entry["step"], "pieces": entry["pieces"], "val_loss": entry["val_loss"], "kinds": {}}
        for kind, mask in masks.items():
            c = cell(words, mask, {"net": hits, ngram: ngram_hits}, ec, f"ttq-{kind}")
            if not c["models"]:
                continue  # fewer words than a cell needs
            point["kinds"][kind] = {"n": c["n"], "documents": c["documents"], "top1": c["models"]["net"],
                                    "ngram": c["models"][ngram], "minus_ngram": c["paired"]["net"]}
            if kind not in passed and c["paired"]["net"]["low"] > 0:
                passed[kind] = {"step": entry["step"], "pieces": entry["pieces"]}
        curve.append(point)
        print(f"  step {entry['step']:>6} ({entry['pieces'] / 1e6:5.1f} M pieces, val loss {entry['val_loss']:.3f}, "
              f"scored in {time.perf_counter() - t:.0f} s): "
              + ", ".join(f"{k} {v['top1']['acc']:.4f} ({ngram} {v['ngram']['acc']:.4f})"
                          for k, v in point["kinds"].items()), flush=True)
    best = ckpts / "best.ckpt"
    return {"run": str(run_dir), "ngram": ngram,
            "sample": {"words": int((~words.numeral).sum()), "seed": ec.sample_seed, "max_words": ec.max_words,
                       "how": "word-weighted, stratified by length; numerals left out"},
            "curve": curve, "passed_ngram": passed,
            "evaluated_step": load_checkpoint(best).meta["global_step"] if best.is_file() else None,
            "passed_rule": "the first kept checkpoint whose paired difference from the n-gram has its 95 % interval "
                           "above 0"}


def split_losses(bundle: ModelBundle, cfg: Config, rows: int = 128, warm: int = 256, measured: int = 256,
                 seed: int = 1234) -> dict[str, float]:
    """Loss per piece (nats, eval mode: no dropout) on the training and the validation stream: `rows` seeded spans of
    each, every span read from a zero state for `warm` pieces and measured on the next `measured`. A model far better
    on the text it was trained on than on held-out text is fitting its training data (more data would help); two
    close figures say data is not what limits it at this size and budget."""
    prepared = prepare(cfg)
    rng = np.random.default_rng(seed)
    model = bundle.model.eval()
    out = {}
    for split in ("train", "validation"):
        stream = prepared.stream(split)
        starts = rng.integers(0, len(stream) - warm - measured - 1, size=rows)
        spans = torch.from_numpy(np.stack([np.asarray(stream[s:s + warm + measured + 1]) for s in starts])).long()
        with torch.no_grad():
            feats, _ = model(spans[:, :-1], model.init_state(rows, spans.device))
            out[split] = float(model.loss(feats[:, warm:], spans[:, warm + 1:]))
    return out | {"train_minus_validation": out["train"] - out["validation"], "pieces_measured": rows * measured}


def one_factor(cfg: Config, run_dirs: list[Path], weights: str = "best.ckpt") -> dict:
    """TTQ_RUN=runs/a,runs/b,...: finished runs that differ from the first in one setting each (a one-factor check),
    each scored with the weights it evaluates (best.ckpt), or with those at the end of its schedule (TTQ_WEIGHTS=
    last.ckpt: a run that ends between two validations kept its last steps there only), on the same sample: top-1 by text kind and by the word's
    training frequency rank, each with its paired difference from the first run and from the 4-gram, and the mean
    log-probability of the words (nats per word, tokenizer-free), paired with the first run's."""
    from pipeline.evaluation import sampled_targets
    from pipeline.evaluation.text_kinds import ALL, cell
    from pipeline.experiments.served_report import by_frequency_rank

    ec = cfg.eval
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    ngram_scorer = NgramScorer(build_baseline(cfg))
    ngram = ngram_scorer.name
    words, ngram_hits = sample_hits(ngram_scorer, docs, ec, sources)
    tokens, targets, chosen, _ = sampled_targets(docs, ec)
    target = [tokens[d][targets[d][i]] for d, idx in enumerate(chosen) for i in idx]  # scored_words' order
    letter = ~words.numeral
    masks = {k: letter & (words.kind == k) for k in words.kinds()} | {ALL: letter} | {
        f"rank {b}": m for b, m in by_frequency_rank(cfg, target, letter).items()}
    runs, hits, logp = {}, {}, {}
    for run_dir in run_dirs:
        t = time.perf_counter()
        bundle = load_checkpoint(run_dir / "checkpoints" / weights)
        name = run_dir.name
        with torch.no_grad():
            _, hits[name], logp[name] = sample_scores(NeuralScorer(bundle, ec, name), docs, ec, sources)
        m, tc = bundle.config["model"], bundle.config["train"]
        runs[name] = {"run": str(run_dir), "step": bundle.meta.get("global_step"), "max_steps": tc["max_steps"],
                      "vocab": bundle.config["tokenizer"]["vocab_size"], "hidden": m["hidden_dim"],
                      "train_fraction": bundle.config["data"].get("train_fraction", 1.0),
                      "params": sum(p.numel() for p in bundle.model.parameters()),
                      "mean_logp": float(logp[name][letter].mean()),
                      "loss_per_piece": split_losses(bundle, build_config(bundle.config, [], str(run_dir)))}
        print(f"  {name}: top-1 {hits[name][letter].mean():.4f}, {runs[name]['mean_logp']:.3f} nats/word "
              f"(scored in {time.perf_counter() - t:.0f} s)", flush=True)
    first = next(iter(runs))
    vs_first = dataclasses.replace(ec, paired_reference=first)
    vs_ngram = dataclasses.replace(ec, paired_reference=ngram)
    cells = {}
    for key, mask in masks.items():
        c = cell(words, mask, {**hits, ngram: ngram_hits}, vs_first, f"one-factor-{key}")
        if not c["models"]:
            continue
        c_ngram = cell(words, mask, {**hits, ngram: ngram_hits}, vs_ngram, f"one-factor-{key}")
        cells[key] = {"n": c["n"], "documents": c["documents"], "top1": c["models"],
                      "minus_first": {n: c["paired"][n] for n in runs if n != first},
                      "minus_ngram": {n: c_ngram["paired"][n] for n in runs}}
    # the paired log-probability difference over every word with a letter, its interval clustered by document
    cluster = words.cluster[letter].tolist()
    logp_diff = clustered_cell(cluster, {n: v[letter] for n, v in logp.items()}, ec.bootstrap_replicates,
                               ec.bootstrap_seed, "one-factor-logp", first)["paired"]
    return {"reference": first, "runs": runs, "ngram": ngram, "weights": weights,
            "sample": {"words": int(letter.sum()), "seed": ec.sample_seed, "max_words": ec.max_words,
                       "how": "word-weighted, stratified by length; numerals left out"},
            "cells": cells, "logp_minus_first": logp_diff}


def run(cfg: Config) -> dict:
    from pipeline.training.train import train

    if os.environ.get("TTQ_RUN"):
        cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, max_words=int(os.environ.get("TTQ_SAMPLE_WORDS",
                                                                                          "3000"))))
        runs = [Path(r) for r in os.environ["TTQ_RUN"].split(",")]
        return kept_checkpoints(cfg, runs[0]) if len(runs) == 1 else one_factor(
            cfg, runs, os.environ.get("TTQ_WEIGHTS", "best.ckpt"))

    entries = os.environ.get("TTQ_CELLS", "lstm,rnn_tanh,gru").split(",")
    minutes = budgets(entries, os.environ.get("TTQ_MINUTES", "30"))
    every = float(os.environ.get("TTQ_EVERY_MINUTES", "3")) * 60
    prepare(cfg)  # the tokenizer and token streams the runs below train on
    cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, max_words=int(os.environ.get("TTQ_SAMPLE_WORDS", "3000"))))
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    t = time.perf_counter()
    ngram = NgramScorer(build_baseline(cfg))
    ngram_build_s = time.perf_counter() - t
    base = top1(ngram, docs, cfg.eval, sources)
    target, n_words = base["top1"], base["words"]
    out = {"sample": {"words": n_words, "seed": cfg.eval.sample_seed, "how": "word-weighted, stratified by length",
                      "words_pos257": base["words_pos257"]},
           "ngram": {"order": cfg.eval.ngram_order, "build_s": round(ngram_build_s, 1), **base},
           "cells": {}}
    for entry in entries:
        cell_cfg = entry_config(cfg, entry, minutes[entry])
        cell_prepared = prepare(cell_cfg)  # the same cache unless the variant changes the tokenizer
        probe = QualityCurve(cell_cfg, Tokenizer(cell_prepared.tokenizer_path), docs, every, target, sources)
        print(f"{entry}: training for {minutes[entry]} min, top-1 on {n_words} sample words every {every / 60:.0f} min")
        result = train(cell_cfg, cell_prepared, fresh=True, extra_callbacks=[probe])
        m = cell_cfg.model
        out["cells"][entry] = {
            "model": {"cell": m.cell, "hidden": m.hidden_dim, "layers": m.num_layers, "output": m.output,
                      "vocab": cell_cfg.tokenizer.vocab_size},
            "budget_minutes": minutes[entry], "curve": probe.curve, "passed_ngram_at_s": probe.passed_at,
            "final_top1": probe.curve[-1]["top1"] if probe.curve else None,
            "final_top1_pos257": probe.curve[-1]["top1_pos257"] if probe.curve else None,
            "tokens_per_s": round(result.tokens / max(result.seconds, 1e-9)),
            "pieces_per_word": cell_prepared.manifest["splits"]["test"]["pieces_per_word"],
            "checkpoint": result.last_checkpoint,
            "params": sum(p.numel() for p in load_checkpoint(result.last_checkpoint).model.parameters())}
    return out
