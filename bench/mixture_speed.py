"""Mixture evaluation and keystroke simulation speed (issue 22):
`python -m pipeline bench --only mixture_speed --config configs/experiment.yaml`.

With eval.workers above 1 (configs/served.yaml: 2) both passes split the documents over that many forked processes
of one torch thread (pipeline/evaluation/shards.py); the record says how many.

The model's fitted mixture (network + n-gram + neural cache, the same K as it is served with) against the network
alone, in the same run, on the config's test split:

    evaluate    top-k over the scored words (exact for both: the mixture's by mixture_search.mixed_search)
    keystrokes  the typist of pipeline/evaluation/keystrokes.py with a bar of eval.keystroke_slots words

Model: $MARATHI_NWP_BENCH_MODEL, else the newest checkpoint under train.runs_dir that carries a mixture. Words:
$BENCH_WORDS, a seeded sample of that many test words (default 10000), or "all" for the whole split. The goals are
stated for the whole full test split (mixture evaluation <= 5 min, keystroke simulation <= 10 min on 2 cores); on a
sample the record gives the seconds measured and their linear extrapolation to the split's words, marked as such
(reading a long document costs the same for one sampled word as for all of them, so a sample's extrapolation is an
upper bound).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path


def _model(cfg) -> Path:
    from pipeline.evaluation.mixture import WEIGHTS_FILE

    if os.environ.get("MARATHI_NWP_BENCH_MODEL"):
        return Path(os.environ["MARATHI_NWP_BENCH_MODEL"])
    runs = Path(cfg.train.runs_dir)
    found = sorted(((("lstm" in c.parent.parent.name), c.stat().st_mtime, c)
                    for c in runs.glob("*/checkpoints/best.ckpt")
                    if (c.parent.parent / "mixture" / WEIGHTS_FILE).is_file()), reverse=True)
    if not found:
        raise ValueError(f"no checkpoint with a mixture under {runs}: run `make run`, or `python -m pipeline mix "
                         "--model CKPT --save`, or set MARATHI_NWP_BENCH_MODEL")
    return found[0][2]


def run(cfg) -> dict:
    import torch

    with torch.no_grad():
        return _run(cfg)


def _run(cfg) -> dict:
    import torch

    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import NeuralScorer, sampled_targets
    from pipeline.evaluation.loop import _score
    from pipeline.evaluation import MixtureScorer, mixture_of, run_scorer

    words = os.environ.get("BENCH_WORDS", "10000")
    ec = dataclasses.replace(cfg.eval, max_words=None if words == "all" else int(words))
    model = _model(cfg)
    bundle = load_local(model)
    mixture = mixture_of(bundle)
    if mixture is None:
        raise ValueError(f"{model} carries no mixture; fit one with `python -m pipeline mix --model {model} --save`")
    net = NeuralScorer(bundle, ec, "network")
    mixed = MixtureScorer(net, mixture.lm, mixture.weights, mixture.candidates, "mixture")
    docs = documents(cfg, "test")
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    scale = info["words_available"] / info["words"]
    out: dict = {"model": str(model), "test_file": cfg.data.test, "sample": info, "k": ec.k,
                 "candidates": mixture.candidates, "slots": ec.keystroke_slots, "threads": torch.get_num_threads(),
                 "workers": ec.workers}  # eval.workers forked processes of one thread each when above 1
    for phase in ("evaluate", "keystrokes"):
        for name, scorer in (("network", net), ("mixture", mixed)):
            t0 = time.perf_counter()
            if phase == "evaluate":
                _score(scorer, docs, ec, ec.k, "bench")
            else:
                run_scorer(scorer, tokens, targets, chosen, ec.keystroke_slots, ec.workers)
            s = time.perf_counter() - t0
            out[f"{phase}_{name}"] = {"seconds": round(s, 1), "words_per_s": round(info["words"] / s, 1),
                                      "whole_split_minutes" + ("" if scale == 1 else "_extrapolated"):
                                      round(s * scale / 60, 2)}
        out[f"{phase}_mixture"]["searches"] = dict(mixed.search_stats)
        if phase == "keystrokes":  # typist rows, and those only a full search under the prefix settled
            out["keystrokes_mixture"]["settle"] = dict(mixed.settle_stats)
        out[f"{phase}_mixture_over_network"] = round(out[f"{phase}_mixture"]["seconds"]
                                                     / out[f"{phase}_network"]["seconds"], 2)
    key = "whole_split_minutes" + ("" if scale == 1 else "_extrapolated")
    out["goals"] = {"mixture_evaluate_le_5min": out["evaluate_mixture"][key] <= 5,
                    "mixture_keystrokes_le_10min": out["keystrokes_mixture"][key] <= 10,
                    "measured_on": "the whole split" if scale == 1 else f"a sample, extrapolated ×{scale:.1f}"}
    return out
