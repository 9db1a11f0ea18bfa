"""Speed of the network's typist (issue 29): the keystroke simulation of pipeline/evaluation/keystrokes.py on the
config's test split, one model, the process's threads. Three timings on the same words, in the same run:

    typist     as evaluated: the first bar searched in full, each later character only settling whether the typed
               word is in the bar (WordPredictor.top_words' `settle`)
    full       every bar searched in full (the typist before issue 29), on BENCH_TYPIST_FULL_WORDS of the words
               (default 2000; "all" for every one): must type exactly the same characters
    forward    the reference: one plain teacher-forced pass over the same documents, cut after their last scored word
               (bench/ablation.py's: every piece's log-probability, no search), the cost of reading the words at all

Model: BENCH_TYPIST_MODEL (run id, models:/NAME@ALIAS or checkpoint), else the experiment's LSTM
(runs/experiment-lstm-lstm-*/checkpoints/best.ckpt). Words: BENCH_WORDS, a seeded sample (default "all": the whole
split). Goal: the whole full test split <= 10 minutes per model (extrapolated, and marked so, on a sample).

    python -m pipeline bench --only typist --config configs/experiment.yaml
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

GOAL_MINUTES = 10


def _model_ref(cfg) -> str:
    ref = os.environ.get("BENCH_TYPIST_MODEL")
    if ref:
        return ref
    found = sorted(Path(cfg.train.runs_dir).glob("experiment-lstm-lstm-*/checkpoints/best.ckpt"))
    if not found:
        raise ValueError("no model: set BENCH_TYPIST_MODEL (a run id, models:/NAME@ALIAS or a checkpoint), or run "
                         "`make experiment` first")
    return str(found[0])


def _plain_forward(scorer, tokens, targets):
    """bench/ablation.py's reference: one teacher-forced pass over the documents' pieces (seconds, pieces)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ablation", Path(__file__).with_name("ablation.py"))
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    return ablation._plain_forward(scorer, tokens, targets)


def run(cfg) -> dict:
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import NeuralScorer, load_model, run_scorer, sampled_targets
    from pipeline.evaluation.sampling import sample_of, sampled_documents

    words = os.environ.get("BENCH_WORDS", "all")
    ec = dataclasses.replace(cfg.eval, max_words=None if words == "all" else int(words))
    ref = _model_ref(cfg)
    bundle = load_model(ref, cfg)[0]
    docs = documents(cfg, "test")
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    scale = info["words_available"] / info["words"]
    out: dict = {"model": ref, "test_file": cfg.data.test, "sample": info, "slots": ec.keystroke_slots,
                 "threads": torch.get_num_threads()}

    net = NeuralScorer(bundle, ec, "network")
    t0 = time.perf_counter()
    typed = run_scorer(net, tokens, targets, chosen, ec.keystroke_slots)
    out["typist"] = {"seconds": round(time.perf_counter() - t0, 1), "searches": dict(net.search_stats)}

    keep, cut, want = sampled_documents(tokens, targets, chosen)
    seconds, pieces = _plain_forward(NeuralScorer(bundle, ec, "network"), cut, want)
    out["forward"] = {"seconds": round(seconds, 1), "pieces": pieces}

    # the full search on a sample of the same words: same characters typed, and its cost
    n_full = os.environ.get("BENCH_TYPIST_FULL_WORDS", "2000")
    ec_full = dataclasses.replace(ec, max_words=None if n_full == "all" else min(int(n_full), info["words"]))
    f_tokens, f_targets, f_chosen, f_info = sample_of(docs, ec_full.max_words, ec.sample_seed) \
        if ec_full.max_words else (tokens, targets, chosen, info)
    fast_net, full_net = NeuralScorer(bundle, ec, "network"), NeuralScorer(bundle, ec, "network")
    search = full_net.pred.top_words
    full_net.pred.top_words = lambda *a, settle=None, **kw: search(*a, **kw)  # every bar in full
    t0 = time.perf_counter()
    fast = run_scorer(fast_net, f_tokens, f_targets, f_chosen, ec.keystroke_slots)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = run_scorer(full_net, f_tokens, f_targets, f_chosen, ec.keystroke_slots)
    full_s = time.perf_counter() - t0
    out["full_search"] = {"words": f_info["words"], "seconds": round(full_s, 1), "settling_seconds": round(fast_s, 1),
                          "speedup": round(full_s / fast_s, 2),
                          "same_typed": sum(a == b for a, b in zip(fast["typed"], full["typed"])),
                          "same_echo": sum(a == b for a, b in zip(fast["echo"], full["echo"]))}

    key = "whole_split_minutes" + ("" if scale == 1 else "_extrapolated")
    out["typist"][key] = round(out["typist"]["seconds"] * scale / 60, 2)
    out["typist"]["words_per_s"] = round(info["words"] / out["typist"]["seconds"], 1)
    out["ratio_typist_to_forward"] = round(out["typist"]["seconds"] / max(out["forward"]["seconds"], 1e-9), 1)
    out["ksr_words"] = len(typed["typed"])
    out["goals"] = {"typist_le_10min": out["typist"][key] <= GOAL_MINUTES,
                    "same_characters_as_full_search": out["full_search"]["same_typed"] == f_info["words"],
                    "measured_on": "the whole split" if scale == 1 else f"a sample, extrapolated ×{scale:.1f}"}
    return out
