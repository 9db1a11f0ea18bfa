"""One model of the experiment's grid: trained as a nested MLflow run through the path `make run` uses too
(trained_run.py), its gradient curves, its test evaluation and its keystrokes, each cached by the hash of what it
depends on so that an interrupted or changed experiment redoes only what changed."""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipeline import tracking
from pipeline.config import Config
from pipeline.experiments.gradients import gradient_curves, gradient_metrics
from pipeline.experiments.grid import (
    CELL_HASH_TAG,
    DONE_TAG,
    EVAL_VERSION,
    KEYSTROKE_VERSION,
    KEYSTROKES_HASH_TAG,
    TRAIN_HASH_TAG,
    TRAINED_TAG,
    UNHASHED,
    VARIANT_TAG,
    base_name,
    pieces_per_step,
)
from pipeline.experiments.trained_run import ValidationCheckpoints, log_evaluation, train_run
from pipeline.training.train import run_dir_for


def _found_json(client, cfg: Config, tags: dict[str, str], path: str) -> dict[str, Any] | None:
    """The JSON artifact `path` of the newest run of the experiment that carries `tags` and has it."""
    with tempfile.TemporaryDirectory() as tmp:
        for run in tracking.find_runs(client, cfg, tags):
            f = tracking.download_artifact(client, run.info.run_id, path, Path(tmp) / run.info.run_id)
            if f is not None and f.is_file():
                return json.loads(f.read_text(encoding="utf-8"))
    return None


def train_model(cfg: Config, name: str, prepared, client, parent_id: str, log=print) -> dict[str, Any]:
    """Train one grid model as a nested MLflow run (or reuse the run that trained the same weights): what training
    did, in `experiment/train.json`. Training and evaluation are cached apart (TRAIN_HASH_TAG, CELL_HASH_TAG), so a
    change to the evaluation re-scores the trained models instead of training them again."""
    th = cfg.hash("data", "tokenizer", "model", "train")
    rec = _found_json(client, cfg, {TRAIN_HASH_TAG: th, TRAINED_TAG: "1"}, "experiment/train.json")
    if rec is not None:
        log(f"    reusing trained run {rec['run_id']} ({name}, weights {th})")
        return rec | {"reused": True}
    threads = torch.get_num_threads()  # train.num_threads is for training; evaluation keeps the process's threads
    validations = ValidationCheckpoints(run_dir_for(cfg) / "checkpoints", pieces_per_step(cfg))
    run = train_run(cfg, prepared, client, tracking.nested_tags(parent_id, name, **{TRAIN_HASH_TAG: th,
                                                                                     VARIANT_TAG: name}),
                    log=log, record_divergence=True,  # a FAILED nested run; the grid goes on
                    extra_callbacks=[validations])
    torch.set_num_threads(threads)
    rec: dict[str, Any] = {"name": name, "run_id": run.run_id, "train_hash": th}
    if run.failure is not None:
        rec["failed"] = run.failure
    else:
        result = run.result
        logged = tracking.latest_metrics(client, run.run_id)
        rec |= {"checkpoint": run.checkpoint, "train_seconds": result.seconds, "tokens": result.tokens,
                "tokens_per_s": result.tokens / max(result.seconds, 1e-9), "resumed": result.resumed_from is not None,
                "clipped_share": logged.get("train/clipped_share") if cfg.train.gradient_clip_val else None,
                "best_val_loss": result.best_val_loss, "diverged_at": result.diverged_at, "lr": cfg.train.lr,
                "seed": cfg.train.seed, "max_steps": cfg.train.max_steps, "validations": validations.history()}
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "train.json"
        f.write_text(json.dumps(rec, indent=1, ensure_ascii=False, allow_nan=True))
        tracking.log_file(client, run.run_id, f, "experiment")
    tracking.set_tags(client, run.run_id, {TRAINED_TAG: "1"})
    tracking.finish_run(client, run.run_id, "FAILED" if "failed" in rec else "FINISHED")
    return rec | {"reused": False}


def _checkpoint_of(client, rec: dict[str, Any], tmp: Path) -> str:
    """The trained weights: the local checkpoint, else the copy logged to the training run."""
    if Path(rec["checkpoint"]).is_file():
        return rec["checkpoint"]
    got = tracking.download_artifact(client, rec["run_id"], "checkpoints/best.ckpt", tmp)
    if got is None or not got.is_file():
        raise FileNotFoundError(f"the weights of run {rec['run_id']} are gone ({rec['checkpoint']} and its MLflow "
                                "copy); delete that run or pass --set experiment.budget_minutes=... to retrain")
    return str(got)


def run_model(cfg: Config, name: str, matched: dict[str, Any], prepared, client, parent_id: str,
              docs: list[str], probes, log=print, sources: list[str] | None = None) -> dict[str, Any]:
    """One grid model: trained (train_model), then gradient curves and test evaluation logged to the same run, and
    its row.json. A row of the same weights and evaluation (CELL_HASH_TAG, with EVAL_VERSION) is reused."""
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation import NeuralScorer, evaluate

    rec = train_model(cfg, name, prepared, client, parent_id, log)
    if base_name(name) != name:  # a seed replicate: the comparison's losses, not the typist
        cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, keystrokes=False))
    with_curves = cfg.experiment.curve_models
    if with_curves is not None and name not in with_curves:  # before the hash: a row without curves is another evaluation
        cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, context_curves={}))
    if "failed" in rec:
        return {"name": name, "cell": cfg.model.cell, **matched, "failed": rec["failed"], "run_id": rec["run_id"]}
    run_id = rec["run_id"]
    h = f"{cfg.hash('data', 'tokenizer', 'model', 'train', 'eval', without=UNHASHED)}-e{EVAL_VERSION}"
    row = _found_json(client, cfg, {CELL_HASH_TAG: h, DONE_TAG: "1"}, "experiment/row.json")
    if row is not None:
        log(f"    reusing evaluated run {row['run_id']} ({name}, config {h})")
        return row | {"reused": True, "keystrokes": cell_keystrokes(cfg, name, rec, client, docs, log)
                      if cfg.eval.keystrokes else None}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_checkpoint(_checkpoint_of(client, rec, Path(tmp)))
    curves = gradient_curves(bundle, prepared, cfg.experiment.gradient_windows, cfg.data.bptt, cfg.train.seed)
    no_keys = cfg.replace(eval=dataclasses.replace(cfg.eval, keystrokes=False))  # on their own sample, below
    test = evaluate([NeuralScorer(bundle, cfg.eval, name)], docs, no_keys, "test", probes, sources=sources)
    metrics = {**test["models"][name]["metrics"], **gradient_metrics(curves), "train/seconds": rec["train_seconds"],
               "train/tokens_per_s_mean": rec["tokens_per_s"], "model/parameters": matched["parameters"],
               "model/recurrent_parameters": matched["recurrent_parameters"]}
    row = {"name": name, "run_id": run_id, "config_hash": h, "cell": cfg.model.cell, "init": cfg.model.init,
           "residual": cfg.model.residual, "clip": cfg.train.gradient_clip_val, **matched,
           "train_minutes_budget": cfg.train.max_time_minutes,
           **{k: rec[k] for k in ("train_seconds", "tokens", "tokens_per_s", "resumed", "clipped_share",
                                  "best_val_loss", "diverged_at")},
           **{k: rec.get(k) for k in ("lr", "seed", "max_steps", "validations")},
           "test": test["models"][name], "gradients": curves, "reused": False}
    log_evaluation(client, run_id, test, run_dir_for(cfg) / "experiment", metrics,
                   int(bundle.meta.get("global_step") or 0), "experiment", {"row.json": row, "gradients.json": curves})
    if cfg.experiment.log_models:
        tracking.log_pyfunc(bundle, run_id)
    tracking.set_tags(client, run_id, {CELL_HASH_TAG: h, DONE_TAG: "1"})
    return row | {"keystrokes": cell_keystrokes(cfg, name, rec, client, docs, log, bundle)
                  if cfg.eval.keystrokes else None}


def keystroke_eval(cfg: Config):
    """The evaluation settings of the grid's keystroke simulation: experiment.keystroke_words seeded test words."""
    return dataclasses.replace(cfg.eval, max_words=cfg.experiment.keystroke_words, keystrokes=True)


def cell_keystrokes(cfg: Config, name: str, rec: dict[str, Any], client, docs: list[str], log=print,
                    bundle=None) -> dict[str, Any]:
    """The typist (pipeline/evaluation/keystrokes.py) on one grid model, logged to its run as
    experiment/keystrokes.json; a run of the same weights and settings (KEYSTROKES_HASH_TAG) is reused."""
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation import NeuralScorer, run_scorer, sampled_targets

    ks = keystroke_eval(cfg)
    h = f"{cfg.replace(eval=ks).hash('data', 'tokenizer', 'model', 'train', 'eval')}-k{KEYSTROKE_VERSION}"
    found = _found_json(client, cfg, {KEYSTROKES_HASH_TAG: h}, "experiment/keystrokes.json")
    if found is not None:
        log(f"    reusing keystrokes of {name} (settings {h})")
        return found
    if bundle is None:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = load_checkpoint(_checkpoint_of(client, rec, Path(tmp)))
    tokens, targets, chosen, _ = sampled_targets(docs, ks)
    t0 = time.perf_counter()
    got = run_scorer(NeuralScorer(bundle, ks, name), tokens, targets, chosen, ks.keystroke_slots)
    log(f"    keystrokes of {name}: {len(got['typed']):,} words in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "keystrokes.json"
        f.write_text(json.dumps(got))
        tracking.log_file(client, rec["run_id"], f, "experiment")
    tracking.set_tags(client, rec["run_id"], {KEYSTROKES_HASH_TAG: h})
    return got


def keystroke_summary(cfg: Config, docs: list[str], sources: list[str], runs: dict[str, Any]) -> dict[str, Any]:
    """The keystroke tables of every grid model and the baseline on their shared sample (experiment.keystroke_words),
    by kind, paired with eval.paired_reference."""
    from pipeline.evaluation import keystroke_tables, sampled_targets
    from pipeline.evaluation.text_kinds import scored_words

    ks = keystroke_eval(cfg)
    tokens, targets, chosen, info = sampled_targets(docs, ks)
    words = scored_words(tokens, targets, chosen, sources, ks)
    runs = {n: r for n, r in runs.items() if r}
    return {"sample": info, "slots": ks.keystroke_slots,
            "tables": keystroke_tables(words, runs, ks, cfg.eval.paired_reference)}
