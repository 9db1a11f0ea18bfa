"""The comparison experiment (`python -m pipeline experiment`, issue 8): the grid, the budget, one MLflow parent run
with a nested run per model, and `reports/experiment.md`.

    budget_minutes ─ overhead (prepare, baseline, report) ─ eval_minutes_per_model × models ─ longrange_minutes
                   └ rest ─ exploding_share (two demo runs)
                          └ what is left / models = train.max_time_minutes of every model (the same for all)

Every model of the grid gets the parameter count of `model` (its cell at hidden_dim × scale) by choosing its own
hidden size. A nested run is reused when a FINISHED run carries the same cell-config hash and the `done` tag (set as
its very last step), so a re-run after an interruption retrains only what is missing; the parent run and its
long-range / exploding / baseline results are reused the same way.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config, ConfigError
from pipeline.experiments import longrange
from pipeline.experiments.gradients import (
    decay_rate,
    gradient_by_distance,
    half_life,
    validation_windows,
)
from pipeline.experiments.report import write_report

# The grid's models: the cell and what sets it apart. All share the sizes chosen by `match_parameters`.
GRID: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh"},
    "irnn": {"cell": "rnn_relu", "init": "identity"},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True},
    "gru": {"cell": "gru"},
    "lstm": {"cell": "lstm"},
    "rnn_tanh_noclip": {"cell": "rnn_tanh", "clip": None},
}
CELL_HASH_TAG = "marathi_nwp.experiment_cell_hash"
EXPERIMENT_HASH_TAG = "marathi_nwp.experiment_hash"
VARIANT_TAG = "marathi_nwp.experiment_model"
DONE_TAG = "marathi_nwp.experiment_done"
TRAIN_HASH_TAG = "marathi_nwp.experiment_train_hash"
TRAINED_TAG = "marathi_nwp.experiment_trained"
EVAL_VERSION = 3  # what a row holds; bump it when the evaluation changes, so trained models are scored again
KEYSTROKES_HASH_TAG = "marathi_nwp.experiment_keystrokes_hash"
KEYSTROKE_VERSION = 1  # what experiment/keystrokes.json holds (pipeline/evaluation/keystrokes.py run_scorer)
# Settings no cached piece depends on: the keystroke simulation is cached apart (KEYSTROKES_HASH_TAG), and serving
# limits change nothing measured; they are left out of the parent's and the rows' hashes.
UNHASHED = ("eval.keystrokes", "eval.keystroke_slots", "experiment.keystroke_words", "serve.max_word_chars")


def _say(msg: str, log=print) -> None:
    log(f"\n==> {msg}")


# --------------------------------------------------------------------------------------------- grid and budget

def scale_of(cfg: Config) -> float:
    ec = cfg.experiment
    if ec.scale is not None:
        return ec.scale
    accel = str(cfg.train.trainer.get("accelerator", "cpu")).lower()
    on_gpu = accel in ("gpu", "cuda") or accel == "auto" and torch.cuda.is_available()
    return ec.gpu_scale if on_gpu else 1.0


def variant_config(cfg: Config, name: str, hidden: int | None = None, train_minutes: float | None = None) -> Config:
    """The config of one grid model: the cell and what sets it apart (GRID), its hidden size, the
    experiment's MLflow experiment and its own run directory name."""
    spec = GRID[name]
    s = scale_of(cfg)
    layers = cfg.experiment.residual_layers if spec.get("residual") else cfg.model.num_layers
    model = dataclasses.replace(cfg.model, cell=spec["cell"], init=spec.get("init", "default"),
                                gate_bias=cfg.model.gate_bias if spec["cell"] in ("lstm", "gru") else None,
                                residual=bool(spec.get("residual", False)), num_layers=layers,
                                embedding_dim=max(1, round(cfg.model.embedding_dim * s)),
                                hidden_dim=hidden or max(1, round(cfg.model.hidden_dim * s)))
    clip = None if "clip" in spec and spec["clip"] is None else cfg.train.gradient_clip_val
    train = dataclasses.replace(cfg.train, gradient_clip_val=clip,
                                max_time_minutes=train_minutes if train_minutes is not None else
                                cfg.train.max_time_minutes)
    tracking = dataclasses.replace(cfg.tracking, experiment=cfg.tracking.experiment or cfg.name)
    return cfg.replace(name=f"{cfg.name}-{name}", model=model, train=train, tracking=tracking)


def count_parameters(cfg: Config, vocab_size: int) -> tuple[int, int]:
    """(all parameters, those of the recurrent layers) of the config's model, by building it."""
    from models.build import build_model, model_args

    m = build_model(model_args(cfg.model, vocab_size))
    return sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.layers.parameters())


def match_parameters(cfg: Config, vocab_size: int) -> dict[str, dict[str, Any]]:
    """Per grid model the hidden size whose parameter count is closest to the reference model's (`model` at
    hidden_dim × scale); an error when one cannot get within experiment.parameter_tolerance."""
    s = scale_of(cfg)
    ref_cfg = cfg.replace(model=dataclasses.replace(cfg.model, hidden_dim=max(1, round(cfg.model.hidden_dim * s)),
                                                    embedding_dim=max(1, round(cfg.model.embedding_dim * s))))
    target, _ = count_parameters(ref_cfg, vocab_size)
    out: dict[str, dict[str, Any]] = {}
    for name in cfg.experiment.models:
        def total(h: int) -> int:
            return count_parameters(variant_config(cfg, name, h), vocab_size)[0]

        lo, hi = 1, max(8, 16 * ref_cfg.model.hidden_dim)
        while lo < hi:  # smallest h with total(h) >= target (the count grows with h)
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if total(mid) < target else (lo, mid)
        h = min((c for c in (lo - 1, lo) if c >= 1), key=lambda c: abs(total(c) - target))
        params, recurrent = count_parameters(variant_config(cfg, name, h), vocab_size)
        off = params / target - 1
        if abs(off) > cfg.experiment.parameter_tolerance:
            raise ConfigError(f"experiment: {name} cannot match {target} parameters within "
                              f"{cfg.experiment.parameter_tolerance:.0%} (best: hidden {h}, {params}); change "
                              "model.hidden_dim or experiment.parameter_tolerance")
        out[name] = {"hidden_dim": h, "num_layers": variant_config(cfg, name, h).model.num_layers,
                     "parameters": params, "recurrent_parameters": recurrent, "relative_to_target": off}
    return {"target": target, "models": out}


def plan_budget(cfg: Config, n_models: int | None = None) -> dict[str, float]:
    """Minutes for each part of the grid; every model gets the same `train_minutes`."""
    ec = cfg.experiment
    n = n_models if n_models is not None else len(ec.models)
    fixed = ec.overhead_minutes + n * ec.eval_minutes_per_model + ec.longrange_minutes
    rest = ec.budget_minutes - fixed
    if rest <= 0:
        raise ConfigError(f"experiment.budget_minutes={ec.budget_minutes} leaves no training time after the "
                          f"reserves ({fixed:.1f} min: overhead {ec.overhead_minutes} + {n} × eval "
                          f"{ec.eval_minutes_per_model} + long-range {ec.longrange_minutes}); give more minutes or "
                          "lower the reserves")
    lr_min, ex_min = ec.longrange_minutes, rest * ec.exploding_share
    return {"budget_minutes": ec.budget_minutes, "models": n, "overhead_minutes": ec.overhead_minutes,
            "eval_minutes_per_model": ec.eval_minutes_per_model, "longrange_minutes": lr_min,
            "exploding_minutes": ex_min, "train_minutes": (rest - ex_min) / n}


# ------------------------------------------------------------------------------------------------- gradients

def bundle_gradient_curves(bundle, prepared, n_windows: int, length: int, seed: int = 0) -> dict[str, Any]:
    """g(d) at initialisation (same model arguments, weights drawn with `seed`) and for the bundle's weights, on
    the same seeded validation windows."""
    from models.build import build_model

    windows = validation_windows(prepared, n_windows, length, seed)
    torch.manual_seed(seed)
    out: dict[str, Any] = {"length": length, "n_windows": n_windows, "seed": seed}
    for when, model in (("init", build_model(bundle.model_args)), ("trained", bundle.model)):
        g = gradient_by_distance(model, windows)
        rate = decay_rate(g)
        out[when] = {"g": g.tolist(), "decay_rate": rate, "half_life": half_life(rate)}
    return out


# ------------------------------------------------------------------------------------------------- the models

def _found_json(client, cfg: Config, tags: dict[str, str], path: str) -> dict[str, Any] | None:
    """The JSON artifact `path` of the newest run of the experiment that carries `tags` and has it."""
    from pipeline import tracking

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
    from pipeline import tracking
    from pipeline.training.logger import make_logger
    from pipeline.training.train import DivergenceError, run_dir_for, train

    th = cfg.hash("data", "tokenizer", "model", "train")
    rec = _found_json(client, cfg, {TRAIN_HASH_TAG: th, TRAINED_TAG: "1"}, "experiment/train.json")
    if rec is not None:
        log(f"    reusing trained run {rec['run_id']} ({name}, weights {th})")
        return rec | {"reused": True}
    run_dir = run_dir_for(cfg)
    logger = make_logger(cfg, client, prepared, run_dir,
                         tracking.nested_tags(parent_id, name, **{TRAIN_HASH_TAG: th, VARIANT_TAG: name}))
    run_id = logger.run_id
    rec: dict[str, Any] = {"name": name, "run_id": run_id, "train_hash": th}
    threads = torch.get_num_threads()  # train.num_threads is for training; evaluation keeps the process's threads
    with tracking.terminated_on_interrupt(client, run_id):
        try:
            result = train(cfg, prepared, logger=logger, log=log)
        except DivergenceError as e:  # recorded as a FAILED nested run; the grid goes on
            rec["failed"] = str(e)
            log(f"    {name} failed: {e}")
        else:
            ckpt = result.best_checkpoint if Path(result.best_checkpoint).is_file() else result.last_checkpoint
            logged = tracking.latest_metrics(client, run_id)
            rec |= {"checkpoint": str(ckpt), "train_seconds": result.seconds, "tokens": result.tokens,
                    "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
                    "resumed": result.resumed_from is not None,
                    "clipped_share": logged.get("train/clipped_share") if cfg.train.gradient_clip_val else None,
                    "best_val_loss": result.best_val_loss, "diverged_at": result.diverged_at}
            tracking.log_run_files(client, run_id, cfg, prepared, ckpt)
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "train.json"
            f.write_text(json.dumps(rec, indent=1, ensure_ascii=False, allow_nan=True))
            tracking.log_file(client, run_id, f, "experiment")
        torch.set_num_threads(threads)
        tracking.set_tags(client, run_id, {TRAINED_TAG: "1"})
        tracking.finish_run(client, run_id, "FAILED" if "failed" in rec else "FINISHED")
    return rec | {"reused": False}


def _checkpoint_of(client, rec: dict[str, Any], tmp: Path) -> str:
    """The trained weights: the local checkpoint, else the copy logged to the training run."""
    from pipeline import tracking

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
    from pipeline import tracking
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation import NeuralScorer, evaluate, write_outputs
    from pipeline.experiments.gradients import gradient_metrics
    from pipeline.training.train import run_dir_for

    rec = train_model(cfg, name, prepared, client, parent_id, log)
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
    curves = bundle_gradient_curves(bundle, prepared, cfg.experiment.gradient_windows, cfg.data.bptt, cfg.train.seed)
    no_keys = cfg.replace(eval=dataclasses.replace(cfg.eval, keystrokes=False))  # on their own sample, below
    test = evaluate([NeuralScorer(bundle, cfg.eval, name)], docs, no_keys, "test", probes, sources=sources)
    out = run_dir_for(cfg) / "experiment"
    write_outputs(test, out)
    metrics = {**test["models"][name]["metrics"], **gradient_metrics(curves), "train/seconds": rec["train_seconds"],
               "train/tokens_per_s_mean": rec["tokens_per_s"], "model/parameters": matched["parameters"],
               "model/recurrent_parameters": matched["recurrent_parameters"]}
    tracking.log_metrics(client, run_id, metrics, step=int(bundle.meta.get("global_step") or 0))
    row = {"name": name, "run_id": run_id, "config_hash": h, "cell": cfg.model.cell, "init": cfg.model.init,
           "residual": cfg.model.residual, "clip": cfg.train.gradient_clip_val, **matched,
           "train_minutes_budget": cfg.train.max_time_minutes,
           **{k: rec[k] for k in ("train_seconds", "tokens", "tokens_per_s", "resumed", "clipped_share",
                                  "best_val_loss", "diverged_at")},
           "test": test["models"][name], "gradients": curves, "reused": False}
    (out / "row.json").write_text(json.dumps(row, indent=1, ensure_ascii=False, allow_nan=True))
    (out / "gradients.json").write_text(json.dumps(curves, indent=1, allow_nan=True))
    tracking.log_artifacts(client, run_id, out, "experiment")
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
    from pipeline import tracking
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


def _parent_piece(client, parent_id: str, piece: str, dest: Path, make) -> dict[str, Any]:
    """A parent-level result (`piece`/<piece>.json + plots): from the parent run when it has it, else made and
    logged."""
    from pipeline import tracking

    got = tracking.download_artifact(client, parent_id, piece, dest.parent)
    f = dest / f"{piece}.json"
    if got is not None and f.is_file():
        result = json.loads(f.read_text(encoding="utf-8"))
        result["reused"] = True
        return result
    dest.mkdir(parents=True, exist_ok=True)
    result = make(dest)
    (dest / f"{piece}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=True,
                                                   default=str))
    tracking.log_artifacts(client, parent_id, dest, piece)
    return result


# ---------------------------------------------------------------------------------------------- the experiment

def run_experiment(cfg: Config, command: str = "", log=print, train_only: bool = False,
                   only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The grid, baseline, long-range task, exploding demo and report. `only`: train and evaluate these grid
    models and stop (several processes can work on disjoint parts of the grid); `train_only`: train them and stop.
    A later full run reuses what they finished. The budget is planned on the whole grid either way, so every model
    gets the same minutes."""
    from pipeline import tracking
    from pipeline.corpus.prepare import document_sources, documents, prepare
    from pipeline.evaluation import NgramScorer, build_baseline, evaluate, load_probes
    from pipeline.experiments.gradients import exploding_demo
    from pipeline.tracking import git_commit, machine

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ec = cfg.experiment
    plan = plan_budget(cfg)
    client = tracking.open_store(cfg)  # fail before any training time is spent
    exp_cfg = cfg.replace(tracking=dataclasses.replace(cfg.tracking, experiment=tracking.experiment_name(cfg)))
    _say(f"prepare: {cfg.data.train}", log)
    prepared = prepare(cfg, log=log)
    vocab = prepared.manifest["tokenizer"]["vocab_size"]
    matched = match_parameters(cfg, vocab)
    log(f"    budget {ec.budget_minutes} min: {plan['train_minutes']:.2f} min training per model, long-range "
        f"{plan['longrange_minutes']:.2f} min, exploding demo {plan['exploding_minutes']:.2f} min")
    for name, m in matched["models"].items():
        log(f"    {name:<18} {m['num_layers']}×{m['hidden_dim']:<5} {m['parameters']:>10,} parameters "
            f"({m['relative_to_target']:+.1%})")
    parent_tags = {EXPERIMENT_HASH_TAG: cfg.hash(without=UNHASHED), "git_commit": git_commit(),
                   "seed": str(cfg.train.seed)}
    parent_id, parent_reused = tracking.open_parent_run(client, exp_cfg, f"experiment-{cfg.name}",
                                                        {EXPERIMENT_HASH_TAG: cfg.hash(without=UNHASHED)})
    tracking.set_tags(client, parent_id, parent_tags)
    with tracking.terminated_on_interrupt(client, parent_id):
        tracking.log_params(client, parent_id, {f"experiment.{k}": v for k, v in plan.items()})
        report_dir = Path(ec.report_dir)
        assets = report_dir / "experiment"
        assets.mkdir(parents=True, exist_ok=True)
        timings["prepare"] = time.perf_counter() - t_start
        docs = documents(cfg, "test")  # every word, or eval.max_words of them (a seeded sample)
        sources = document_sources(cfg, "test")  # each document's text kind (eval.kinds)
        probes = None
        if cfg.eval.probes and Path(cfg.eval.probes).exists():
            probes = load_probes(Path(cfg.eval.probes))

        rows = []
        models = only or ec.models
        for i, name in enumerate(models, 1):
            m = matched["models"][name]
            run_cfg = variant_config(cfg, name, m["hidden_dim"], plan["train_minutes"])
            _say(f"[{i}/{len(models)}] {name}: {m['num_layers']}×{m['hidden_dim']} {run_cfg.model.cell}, "
                 f"{plan['train_minutes']:.2f} min", log)
            t0 = time.perf_counter()
            if train_only:
                train_model(run_cfg, name, prepared, client, parent_id, log)
            else:
                rows.append(run_model(run_cfg, name, m, prepared, client, parent_id, docs, probes, log, sources))
            timings[f"model {name}"] = time.perf_counter() - t0
        if train_only or only:  # a part of the grid: the full run (without --only) reuses it and reports
            tracking.finish_run(client, parent_id)
            return {"trained": list(models), "parent_run_id": parent_id, "partial": True}

        baseline, baseline_keys = None, None
        if ec.baseline:
            _say(f"baseline: word {cfg.eval.ngram_order}-gram Kneser-Ney", log)
            t0 = time.perf_counter()

            def make_baseline(dest: Path) -> dict[str, Any]:
                scorer = NgramScorer(build_baseline(cfg, log=log))
                no_keys = cfg.replace(eval=dataclasses.replace(cfg.eval, keystrokes=False))
                return evaluate([scorer], docs, no_keys, "test", probes, sources)["models"][scorer.name] | {
                    "name": scorer.name}

            def make_baseline_keystrokes(dest: Path) -> dict[str, Any]:
                from pipeline.evaluation import run_scorer, sampled_targets

                ks = keystroke_eval(cfg)
                tokens, targets, chosen, _ = sampled_targets(docs, ks)
                return run_scorer(NgramScorer(build_baseline(cfg, log=log)), tokens, targets, chosen,
                                  ks.keystroke_slots)

            baseline = _parent_piece(client, parent_id, "baseline", assets / "baseline", make_baseline)
            ks = keystroke_eval(cfg)  # the piece's name says its sample: a parent is not hashed on it
            baseline_keys = _parent_piece(
                client, parent_id, f"baseline_keystrokes_{ks.max_words or 'all'}_w{ks.keystroke_slots}",
                assets / "baseline_keystrokes", make_baseline_keystrokes) if cfg.eval.keystrokes else None
            timings["baseline"] = time.perf_counter() - t0

        _say("long-range task", log)
        t0 = time.perf_counter()

        def make_longrange(dest: Path) -> dict[str, Any]:  # reuses a standalone run's result of equal settings
            return longrange.run_longrange(out_dir=dest, **longrange.config_args(cfg), log=log)

        long_range = _parent_piece(client, parent_id, "longrange", assets / "longrange", make_longrange)
        timings["longrange"] = time.perf_counter() - t0

        _say("exploding gradients: rnn_tanh without and with clipping (plain SGD)", log)
        t0 = time.perf_counter()
        m = matched["models"].get("rnn_tanh") or next(iter(matched["models"].values()))
        ex_cfg = variant_config(cfg, "rnn_tanh", m["hidden_dim"], plan["exploding_minutes"] / 2)

        def make_exploding(dest: Path) -> dict[str, Any]:
            return exploding_demo(ex_cfg, prepared, ec.exploding_steps, init_scale=ec.exploding_init_scale,
                                  lr=ec.exploding_lr, clip=ec.exploding_clip, cell="rnn_tanh",
                                  out_dir=dest, log=log)

        exploding = _parent_piece(client, parent_id, "exploding", assets / "exploding", make_exploding)
        timings["exploding"] = time.perf_counter() - t0

        from pipeline.evaluation import add_kind_tables, keystroke_metrics, kind_metrics, write_outputs
        from pipeline.experiments.gradients import plot_gradient_by_distance

        done = [r for r in rows if "test" in r]
        plot_gradient_by_distance({r["name"]: r["gradients"] for r in done}, assets / "gradients.png")
        models = {r["name"]: r["test"] for r in done}
        if baseline is not None:
            models[baseline["name"]] = baseline
        tables: dict[str, Any] = {"split": "test", "k": cfg.eval.k, "documents": len(docs), "models": models}
        t0 = time.perf_counter()
        add_kind_tables(tables, docs, sources, cfg.eval)  # every model against the others, on the same words
        timings["tables"] = time.perf_counter() - t0
        keys = keystroke_summary(cfg, docs, sources, {**{r["name"]: r.get("keystrokes") for r in done},
                                                      **({baseline["name"]: baseline_keys} if baseline else {})})
        tables["keystrokes"] = keys["tables"]  # on their own sample: keystrokes.csv beside the other tables
        for r in done:  # the paired differences exist only now that every model is scored
            tracking.log_metrics(client, r["run_id"], {**kind_metrics(tables, r["name"], "test"),
                                                       **keystroke_metrics(keys["tables"], r["name"], "test")})
        if models:
            write_outputs(tables, assets)
        timings["total"] = time.perf_counter() - t_start
        summary = {"name": cfg.name, "command": command, "commit": git_commit(), "config_hash": cfg.hash(),
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "machine": machine(), "plan": plan, "scale": scale_of(cfg), "parameters": matched,
                   "parent_run_id": parent_id, "parent_reused": parent_reused, "k": cfg.eval.k,
                   "documents": len(docs), "test_file": cfg.data.test, "rows": rows, "baseline": baseline,
                   "kinds": tables["kinds"], "curves": tables["curves"], "keystrokes": keys,
                   "paired_reference": cfg.eval.paired_reference,
                   "bootstrap": {"replicates": cfg.eval.bootstrap_replicates, "seed": cfg.eval.bootstrap_seed,
                                 "block_words": cfg.eval.cluster_block_words},
                   "longrange": long_range, "exploding": exploding, "timings": timings,
                   "tracking_uri": tracking.tracking_uri(cfg), "experiment": tracking.experiment_name(cfg)}
        (assets / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, allow_nan=True,
                                                        default=str))
        report = write_report(summary, report_dir / "experiment.md")
        tracking.log_file(client, parent_id, report)
        for f in sorted(assets.glob("*")):
            if f.is_file():
                tracking.log_file(client, parent_id, f, "report")
        tracking.log_metrics(client, parent_id, {f"time/{k.replace(' ', '_')}_s": v for k, v in timings.items()})
        tracking.finish_run(client, parent_id)
    summary["report"] = str(report)
    return summary


# ------------------------------------------------------------------------------------------------------ commands

def cli(args, cfg: Config) -> int:
    if args.budget_minutes is not None:
        cfg = cfg.replace(experiment=dataclasses.replace(cfg.experiment, budget_minutes=args.budget_minutes))
        plan_budget(cfg)  # a bad budget is a ConfigError before anything runs
    only = tuple(m for m in (args.only or "").split(",") if m)
    unknown = [m for m in only if m not in cfg.experiment.models]
    if unknown:
        raise ConfigError(f"--only {','.join(unknown)}: not in experiment.models {list(cfg.experiment.models)}")
    summary = run_experiment(cfg, "python -m pipeline " + " ".join(sys.argv[1:]), train_only=args.train_only,
                             only=only)
    if summary.get("partial"):
        _say(f"{'trained' if args.train_only else 'trained and evaluated'} {', '.join(summary['trained'])}; run "
             "without --only / --train-only to finish the grid and write the report")
        return 0
    _say(f"report: {summary['report']} (parent run {summary['parent_run_id']})")
    return 0


def gradients_cli(args, cfg: Config) -> int:
    """g(d) at init and trained for each --model; one plot; decay rates printed (and JSON beside the plot)."""
    from pipeline.corpus.prepare import prepare
    from pipeline.evaluation import load_model, model_name
    from pipeline.experiments.gradients import plot_gradient_by_distance

    if not args.model:
        print("error: give at least one --model (run id, models:/NAME@ALIAS, checkpoint or export directory)")
        return 2
    prepared = prepare(cfg, log=lambda *a: None)
    curves: dict[str, Any] = {}
    for ref in args.model:
        bundle, _ = load_model(ref, cfg)
        if bundle.model.vocab_size != prepared.manifest["tokenizer"]["vocab_size"]:
            print(f"error: {ref} has {bundle.model.vocab_size} pieces but the config's tokenizer has "
                  f"{prepared.manifest['tokenizer']['vocab_size']}; pass the --config the model was trained with")
            return 2
        name = model_name(bundle, ref)
        while name in curves:
            name += "'"
        curves[name] = bundle_gradient_curves(bundle, prepared, args.windows, args.length or cfg.data.bptt,
                                              cfg.train.seed)
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "gradients" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_gradient_by_distance(curves, out / "gradients.png")
    (out / "gradients.json").write_text(json.dumps(curves, indent=1, allow_nan=True))
    print(f"{'model':<24}{'rate init':>11}{'half-life':>11}{'rate trained':>14}{'half-life':>11}")
    for name, c in curves.items():
        print(f"{name:<24}{c['init']['decay_rate']:>11.4f}{c['init']['half_life']:>11.1f}"
              f"{c['trained']['decay_rate']:>14.4f}{c['trained']['half_life']:>11.1f}")
    print(f"wrote {plot} and gradients.json")
    return 0
