"""The comparison experiment (`python -m pipeline experiment`): the grid's models (grid.py, grid_models.py), the
n-gram baseline, the long-range task, the exploding-gradient demo, one MLflow parent run with a nested run per
model, and `reports/experiment.md`; and the `gradients` command."""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Config, ConfigError
from pipeline.experiments import longrange
from pipeline.experiments.gradients import gradient_curves
from pipeline.experiments.grid import (
    EXPERIMENT_HASH_TAG,
    UNHASHED,
    base_name,
    match_parameters,
    plan_budget,
    rate_source,
    replicate_names,
    scale_of,
    variant_config,
)
from pipeline.experiments.grid_models import keystroke_eval, keystroke_summary, run_model, train_model
from pipeline.experiments.report import write_report


def _say(msg: str, log=print) -> None:
    log(f"\n==> {msg}")


def _parent_piece(client, parent_id: str, piece: str, dest: Path, make) -> dict[str, Any]:
    """A parent-level result (`piece`/<piece>.json + plots): from the parent run when it has it, else made and
    logged."""
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


def lr_sweep(cfg: Config, matched: dict[str, Any], prepared, client, parent_id: str, models: tuple[str, ...],
             log=print) -> dict[str, Any]:
    """Each of experiment.lr_sweep_models (among `models`) trained at every rate of experiment.lr_sweep on the first
    lr_sweep_pieces pieces, validated once at the end; the rate with the lowest validation loss is the cell's. A best
    rate at the grid's edge is followed past it (half the lowest, or twice the highest; lr_sweep_extend times)."""
    ec = cfg.experiment
    out: dict[str, Any] = {"pieces": ec.lr_sweep_pieces, "rates": list(ec.lr_sweep), "models": {}}
    extended: set[float] = set()
    for name in (m for m in ec.lr_sweep_models if m in models):
        hidden = matched["models"][name]["hidden_dim"]
        runs: dict[str, Any] = {}

        def try_rate(lr: float) -> None:
            run_cfg = variant_config(cfg, name, hidden, lr=lr, pieces=ec.lr_sweep_pieces)
            run_cfg = run_cfg.replace(name=f"{run_cfg.name}-lr{lr:g}")
            _say(f"learning-rate sweep: {name} at {lr:g}, {ec.lr_sweep_pieces:,} pieces", log)
            rec = train_model(run_cfg, f"{name}-lr{lr:g}", prepared, client, parent_id, log)
            runs[f"{lr:g}"] = {"val_loss": rec.get("best_val_loss"), "seconds": rec.get("train_seconds"),
                               "run_id": rec["run_id"], "failed": rec.get("failed")}

        def best() -> str | None:
            ok = {k: r for k, r in runs.items() if not r["failed"] and r["val_loss"] is not None}
            return min(ok, key=lambda k: ok[k]["val_loss"]) if ok else None

        for lr in ec.lr_sweep:
            try_rate(lr)
        # a best rate at the grid's edge may not be the best: go on past it (halving or doubling), a few steps
        for _ in range(ec.lr_sweep_extend):
            rates = sorted(float(k) for k in runs)
            chosen = best()
            if chosen is None or float(chosen) not in (rates[0], rates[-1]) or len(rates) < 2:
                break
            try_rate(rates[0] / 2 if float(chosen) == rates[0] else rates[-1] * 2)
        chosen = best()
        ok = {k: r for k, r in runs.items() if not r["failed"] and r["val_loss"] is not None}
        extended |= {float(k) for k in runs} - set(ec.lr_sweep)
        out["rates"] = sorted(set(ec.lr_sweep) | extended)
        out["models"][name] = {"runs": runs, "chosen_key": chosen, "chosen": float(chosen) if chosen else None,
                               "minutes": sum(r["seconds"] or 0 for r in runs.values()) / 60}
        log(f"    {name}: learning rate {chosen} (validation loss "
            + ", ".join(f"{k}: {r['val_loss']:.4f}" for k, r in ok.items()) + ")")
    return out


def grid_config(cfg: Config, name: str, hidden: int, plan: dict[str, float], lr: float | None) -> Config:
    """A grid model's config: equal pieces (experiment.train_pieces) when set, else the planned minutes."""
    ec = cfg.experiment
    if ec.train_pieces:
        return variant_config(cfg, name, hidden, lr=lr, pieces=ec.train_pieces,
                              validate_every=ec.validation_every_pieces)
    return variant_config(cfg, name, hidden, plan["train_minutes"], lr=lr)


def run_experiment(cfg: Config, command: str = "", log=print, train_only: bool = False,
                   only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The grid, baseline, long-range task, exploding demo and report. `only`: train and evaluate these grid
    models and stop (several processes can work on disjoint parts of the grid); `train_only`: train them and stop.
    A later full run reuses what they finished. The budget is planned on the whole grid either way, so every model
    gets the same minutes."""
    from pipeline.corpus.prepare import document_sources, documents, prepare
    from pipeline.evaluation import NgramScorer, build_baseline, evaluate, probes_of
    from pipeline.experiments.gradients import exploding_demo
    from pipeline.tracking import git_commit, machine

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ec = cfg.experiment
    names = replicate_names(cfg, only or None)
    plan = plan_budget(cfg, len(replicate_names(cfg)))
    probes = probes_of(cfg)  # a missing probe file fails before any training time is spent
    client = tracking.open_store(cfg)  # so does an unreachable tracking store
    exp_cfg = cfg.replace(tracking=dataclasses.replace(cfg.tracking, experiment=tracking.experiment_name(cfg)))
    _say(f"prepare: {cfg.data.train}", log)
    prepared = prepare(cfg, log=log)
    vocab = prepared.manifest["tokenizer"]["vocab_size"]
    matched = match_parameters(cfg, vocab)
    if ec.train_pieces:
        log(f"    equal data: {ec.train_pieces:,} pieces per model ({len(names)} models with seed replicates), "
            f"validation every {ec.validation_every_pieces:,}")
    else:
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

        t0 = time.perf_counter()
        swept_for = tuple(dict.fromkeys(rate_source(m) for m in only or ec.models))
        sweep = lr_sweep(cfg, matched, prepared, client, parent_id, swept_for, log) if ec.train_pieces else None
        timings["lr_sweep"] = time.perf_counter() - t0
        rows = []
        models = names
        for i, name in enumerate(models, 1):
            m = matched["models"][base_name(name)]
            lr = ((sweep or {}).get("models", {}).get(rate_source(name)) or {}).get("chosen")
            run_cfg = grid_config(cfg, name, m["hidden_dim"], plan, lr)
            budget = f"{ec.train_pieces:,} pieces" if ec.train_pieces else f"{plan['train_minutes']:.2f} min"
            _say(f"[{i}/{len(models)}] {name}: {m['num_layers']}×{m['hidden_dim']} {run_cfg.model.cell}, lr "
                 f"{run_cfg.train.lr:g}, seed {run_cfg.train.seed}, {budget}", log)
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

            # with the run, not the report: its per-target ablation losses are megabytes (the report reads summary.json)
            baseline = _parent_piece(client, parent_id, "baseline", Path(cfg.train.runs_dir) / "experiment-baseline",
                                     make_baseline)
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
        t0 = time.perf_counter()
        reach = reach_of(cfg, rows, docs, sources, client, parent_id, log)
        timings["reach"] = time.perf_counter() - t0
        for r in models.values():  # the per-target losses stay in the runs' artifacts; the report needs the tables
            r.pop("ablation", None)
        if models:
            write_outputs(tables, assets)
        timings["total"] = time.perf_counter() - t_start
        summary = {"name": cfg.name, "command": command, "commit": git_commit(), "config_hash": cfg.hash(),
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "machine": machine(), "plan": plan, "scale": scale_of(cfg), "parameters": matched,
                   "parent_run_id": parent_id, "parent_reused": parent_reused, "k": cfg.eval.k,
                   "documents": len(docs), "test_file": cfg.data.test, "rows": rows, "baseline": baseline,
                   "kinds": tables["kinds"], "curves": tables["curves"], "keystrokes": keys,
                   "lr_sweep": sweep, "train_pieces": ec.train_pieces, "ablation": tables.get("ablation"), **reach,
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


def reach_of(cfg: Config, rows: list[dict[str, Any]], docs: list[str], sources: list[str], client, parent_id: str,
             log=print) -> dict[str, Any]:
    """How far back the tanh RNN and the LSTM read, seed by seed: at equal pieces (each one's best checkpoint, as
    evaluated in its row) and at matched quality (the RNN's best against the LSTM checkpoint of nearest validation
    loss, ablated here); the comparisons' tables and the verdict by the pre-registered rules (verdict.py)."""
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation import NeuralScorer, ablate_scorer
    from pipeline.evaluation.ablation_tables import ablation_tables
    from pipeline.evaluation.assembly import train_word_counts
    from pipeline.experiments.verdict import LSTM, RNN, copy_beyond, decide, matched_checkpoint

    by_name = {r["name"]: r for r in rows if "test" in r and r["test"].get("ablation")}
    comparisons: dict[str, list] = {"equal_pieces": [], "matched": []}
    pairs, counts = [], None
    for k in range(1, max(cfg.experiment.seeds.get(RNN, 1), cfg.experiment.seeds.get(LSTM, 1)) + 1):
        suffix = "" if k == 1 else f"_s{k}"
        rnn, lstm = by_name.get(RNN + suffix), by_name.get(LSTM + suffix)
        if not rnn or not lstm:
            continue
        got = {RNN: rnn["test"]["ablation"], LSTM: lstm["test"]["ablation"]}
        comparisons["equal_pieces"].append(_comparison(cfg, got, copy_beyond, ablation_tables))
        pair = matched_checkpoint(rnn, lstm)
        if pair is None or not Path(pair["checkpoint"]).is_file():
            log(f"    matched quality, seed {k}: no kept LSTM checkpoint here (train the grid with "
                "experiment.train_pieces on this machine)")
            continue
        pair |= {"seed": k, "rnn_run": rnn["run_id"], "lstm_run": lstm["run_id"]}
        _say(f"matched quality, seed {k}: the LSTM at step {pair['step']} (val loss {pair['val_loss']:.4f}) against "
             f"the tanh RNN's best ({pair['rnn_best_val_loss']:.4f})", log)

        def make_matched(dest: Path, pair=pair) -> dict[str, Any]:
            nonlocal counts
            counts = counts or train_word_counts(cfg)
            scorer = NeuralScorer(load_checkpoint(pair["checkpoint"]), cfg.eval, LSTM)
            return {"pair": pair, "ablation": ablate_scorer(scorer, docs, cfg.eval, sources, counts)}

        piece = f"matched_{lstm['run_id'][:12]}_{pair['step']}"
        # the per-target losses are large: kept with the runs (and the parent run's artifacts), not in the report
        matched = _parent_piece(client, parent_id, piece, Path(cfg.train.runs_dir) / "experiment-matched" / piece,
                                make_matched)
        comparisons["matched"].append(_comparison(cfg, {RNN: got[RNN], LSTM: matched["ablation"]}, copy_beyond,
                                                  ablation_tables))
        pairs.append(pair)
    kinds = list(dict.fromkeys(k for c in comparisons["equal_pieces"] for k in c["tables"]["kinds"]))
    return {"comparisons": comparisons, "matched_pairs": pairs,
            "verdict": decide(comparisons, kinds, cfg) if comparisons["equal_pieces"] else None}


def _comparison(cfg: Config, got: dict[str, Any], copy_beyond, ablation_tables) -> dict[str, Any]:
    tables = ablation_tables(got, cfg.eval)
    kinds = list(got["rnn_tanh"]["copy"]) + ["all"]  # "all": every kind's repeated words pooled
    return {"tables": tables, "copy": {kind: copy_beyond(got, kind, cfg.experiment.decision_beyond, cfg)
                                       for kind in kinds}}


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
        print("error: give at least one --model (run id, models:/NAME@ALIAS, checkpoint or export directory)",
              file=sys.stderr)
        return 2
    prepared = prepare(cfg, log=lambda *a: None)
    curves: dict[str, Any] = {}
    for ref in args.model:
        bundle, _ = load_model(ref, cfg)
        if bundle.model.vocab_size != prepared.manifest["tokenizer"]["vocab_size"]:
            print(f"error: {ref} has {bundle.model.vocab_size} pieces but the config's tokenizer has "
                  f"{prepared.manifest['tokenizer']['vocab_size']}; pass the --config the model was trained with",
                  file=sys.stderr)
            return 2
        name = model_name(bundle, ref)
        while name in curves:
            name += "'"
        curves[name] = gradient_curves(bundle, prepared, args.windows, args.length or cfg.data.bptt, cfg.train.seed)
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
