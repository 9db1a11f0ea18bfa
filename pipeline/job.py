"""The main job (`make run`): prepare → train each cell → evaluate → log to MLflow → register → print the table."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config


def _say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def train_and_register(cfg: Config, prepared, client, documents: dict[str, list[str]], lm, baseline=None,
                       probes=None, sources: list[str] | None = None) -> dict[str, Any]:
    """One cell, start to finish, as one MLflow run: train, fit its mixture with `lm` on validation, evaluate both on
    the test split (and the `baseline` scorer when given), register the network with its mixture. Returns the run's
    headline figures."""
    from pipeline import tracking
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation import (
        SERVED,
        MixtureScorer,
        NeuralScorer,
        add_kind_tables,
        evaluate,
        fit,
        save_mixture,
        word_perplexity,
    )
    from pipeline.experiments.trained_run import ValidationCheckpoints, log_evaluation, train_run
    from pipeline.training.train import run_dir_for

    # the weights at every validation beside its loss: a run's time-to-quality curve can be scored afterwards
    validations = ValidationCheckpoints(run_dir_for(cfg) / "checkpoints", cfg.data.batch_size * cfg.data.bptt)
    run = train_run(cfg, prepared, client, extra_callbacks=[validations])
    run_id, result, run_dir = run.run_id, run.result, run_dir_for(cfg)
    with tracking.terminated_on_interrupt(client, run_id):
        bundle = load_checkpoint(run.checkpoint)
        net = NeuralScorer(bundle, cfg.eval, cfg.model.cell)
        val_ppl, _ = word_perplexity(net, documents["validation"], cfg.eval)
        weights, fitted = fit(net, lm, SERVED, documents["validation"], cfg.mixture, cfg.eval)
        mixture_dir = save_mixture(run_dir / "mixture", lm, weights, cfg.mixture.candidates, fitted)
        print(f"    mixture fitted on {fitted['validation_words']:,} validation words: word ppl "
              f"{fitted['validation_word_ppl']:.0f} (network alone {val_ppl:.0f}); θ={weights.theta}, "
              f"W={weights.window}")
        mixed = MixtureScorer(net, lm, weights, cfg.mixture.candidates)
        # each scorer's measurements are kept as it finishes: a killed run's evaluation resumes where it was
        ckpt = Path(run.checkpoint)
        kept = {"parts": run_dir / "evaluation-parts",
                "identity": f"{ckpt.resolve()}:{ckpt.stat().st_size}:{ckpt.stat().st_mtime_ns}:{cfg.hash('mixture')}"}
        test = evaluate([net] + ([baseline] if baseline is not None else []), documents["test"], cfg, "test", probes,
                        sources, **kept)
        # the mixture's row without its context-length curves: thousands of mixed rankings per length would double
        # make run's time (`make mix` draws them)
        no_curve = cfg.replace(eval=dataclasses.replace(cfg.eval, context_curves={}))
        test["models"] = {net.name: test["models"][net.name],
                          **evaluate([mixed], documents["test"], no_curve, "test", probes, sources, **kept)["models"],
                          **{n: r for n, r in test["models"].items() if n != net.name}}
        add_kind_tables(test, documents["test"], sources, cfg.eval)
        metrics = {"validation/word_ppl": val_ppl, **test["models"][net.name]["metrics"],
                   "train/seconds": result.seconds, "train/tokens_per_s_mean": result.tokens / max(result.seconds, 1e-9)}
        mix_metrics = {"validation/word_ppl": fitted["validation_word_ppl"], **test["models"][mixed.name]["metrics"]}
        log_evaluation(client, run_id, test, run_dir / "evaluation",
                       {**metrics, **{f"mixture/{k}": v for k, v in mix_metrics.items()}},
                       int(bundle.meta.get("global_step") or 0), "evaluation")
        # the registered model carries the evaluation settings it was scored with: the server takes its search
        # settings and eval.int8 from there, and eval keys are not in the run hash (a resumed or re-evaluated run's
        # checkpoint may hold older ones)
        bundle.config = {**bundle.config, "eval": cfg.to_dict()["eval"]}
        uri = tracking.log_pyfunc(bundle, run_id, mixture_dir)
        reg = tracking.register(client, uri, cfg.model.cell, metrics.get("validation/word_ppl", float("inf")), run_id,
                                cfg.tracking.registered_name)
    hits = {name: r["hits"] for name, r in test["models"].items()}
    keys = {name: r.get("keystrokes") for name, r in test["models"].items()}
    return {"cell": cfg.model.cell, "run_id": run_id, "metrics": metrics, "registry": reg, "hits": hits[net.name],
            "keystrokes": keys[net.name], "ablation": test["models"][net.name].get("ablation"), "params": sum(p.numel() for p in bundle.model.parameters()),
            "seconds": result.seconds,
            "mixture": {"cell": mixed.name, "metrics": mix_metrics, "registry": reg, "weights": weights.to_dict(),
                        "hits": hits[mixed.name], "keystrokes": keys[mixed.name]},
            "baseline": test["models"][baseline.name]["metrics"] if baseline is not None else None,
            "baseline_hits": hits[baseline.name] if baseline is not None else None,
            "baseline_keystrokes": keys[baseline.name] if baseline is not None else None,
            "baseline_ablation": test["models"][baseline.name].get("ablation") if baseline is not None else None}


def tables_of_rows(rows: list[dict[str, Any]], test_docs: list[str], sources: list[str], cfg: Config) -> dict[str, Any]:
    """The tables by text kind over every row's test hits (the same words for all): document-clustered intervals
    and paired differences from eval.paired_reference."""
    from pipeline.evaluation import add_kind_tables

    results = {"k": cfg.eval.k, "split": "test",
               "models": {r["cell"]: {"hits": r["hits"], "keystrokes": r.get("keystrokes"), "ablation": r.get("ablation")}
                          for r in rows}}
    add_kind_tables(results, test_docs, sources, cfg.eval)
    return results


def distance_lines(results: dict[str, Any]) -> str:
    """Top-1 by distance on the test split's prose and on all text, for the networks and the n-gram, with each
    one's paired difference from the reference: the point of the pipeline, or its absence, on the main job."""
    from pipeline.evaluation import kind_lines

    names = [n for n in results["models"] if " + " not in n]  # the mixtures are in the table above
    lines = []
    for kind in ("prose", "all"):
        if kind in results["kinds"]:
            lines += [""] + kind_lines(results, kind, names, positions=False)
    return "\n".join(lines)


def ec_slots(rows: list[dict[str, Any]]) -> str:
    """The bar's width the keystroke figures were measured with."""
    return next((str(r["keystrokes"]["slots"]) for r in rows if r.get("keystrokes")), "—")


def format_table(rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    from pipeline.evaluation import acc_text, ksr_text, pooled_kind

    k = results["k"]
    pooled = results["kinds"][pooled_kind(results)]
    ksr = results.get("keystrokes", {}).get(pooled_kind(results), {"models": {}})
    head = (f"{'model':<28}{'params':>8}{'train s':>8}{'top-1 % [95%]':>20}{f'top-{k} % [95%]':>20}"
            f"{f'KSR % (W={ec_slots(rows)})':>20}{'word ppl':>10}{'val ppl':>9}  registry")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        reg = r.get("registry") or {}
        tag = f"{reg['name']} v{reg['version']}{' @champion' if reg.get('promoted') else ''}" if reg else ""
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "—"
        secs = f"{r['seconds']:.0f}" if r.get("seconds") else "—"
        lines.append(f"{r['cell']:<28}{params:>8}{secs:>8}{acc_text(pooled['top1'], r['cell']):>20}"
                     f"{acc_text(pooled[f'top{k}'], r['cell']):>20}{ksr_text(ksr['models'].get(r['cell'])):>20}"
                     f"{m.get('test/word_ppl', float('nan')):>10.0f}"
                     f"{m.get('validation/word_ppl', float('nan')):>9.0f}  {tag}")
    lines.append(f"n = {pooled['top1']['n']:,} test words with a letter in {pooled['top1']['documents']:,} documents "
                 "(whole words, exact match, OOV targets counted; numerals apart); 95 % document-clustered bootstrap; "
                 "KSR: keystrokes saved by a suggestion bar, on the typist's words (below); "
                 "word ppl over every scored word")
    return "\n".join(lines)


def cli(args, cfg: Config) -> int:
    from pipeline import tracking
    from pipeline.corpus.prepare import document_sources, documents, prepare
    from pipeline.evaluation import NgramScorer, build_baseline, probes_of

    t0 = time.perf_counter()
    probes = probes_of(cfg)  # a missing probe file fails before any training time is spent
    client = tracking.open_store(cfg)  # so does an unreachable tracking store
    _say(f"prepare: {cfg.data.train}")
    prepared = prepare(cfg)
    s = prepared.manifest["splits"]
    print(f"    {s['train']['documents']} training documents, {s['train']['words']} words, "
          f"{prepared.manifest['tokenizer']['vocab_size']} pieces ({s['train']['pieces_per_word']:.2f} per word)")
    docs = {split: documents(cfg, split) for split in ("validation", "test")}
    test_sources = document_sources(cfg, "test")
    _say(f"baseline: word {cfg.eval.ngram_order}-gram (interpolated Kneser-Ney) on the train split")
    lm = build_baseline(cfg)
    baseline = NgramScorer(lm)
    rows = []
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for i, cell in enumerate(cells, 1):
        cell_cfg = cfg.replace(model=dataclasses.replace(cfg.model, cell=cell))
        _say(f"[{i}/{len(cells)}] train and evaluate {cell}")
        row = train_and_register(cell_cfg, prepared, client, docs, lm, baseline=baseline if i == 1 else None,
                                 probes=probes, sources=test_sources)
        rows += [row, row["mixture"]]
    if rows and rows[0].get("baseline"):
        rows.append({"cell": baseline.name, "metrics": rows[0]["baseline"], "hits": rows[0]["baseline_hits"],
                     "keystrokes": rows[0]["baseline_keystrokes"], "ablation": rows[0]["baseline_ablation"]})
    _say(f"done in {(time.perf_counter() - t0) / 60:.1f} min — test split of {cfg.data.test}")
    results = tables_of_rows(rows, docs["test"], test_sources, cfg)
    print(format_table(rows, results))
    print(distance_lines(results))
    if results.get("keystrokes"):
        from pipeline.evaluation import keystroke_block

        print("\n" + "\n".join(keystroke_block(results)))
    if results.get("ablation"):
        from pipeline.evaluation import ablation_lines

        print("\n" + "\n".join(ablation_lines(results["ablation"])))
    summary = Path(cfg.train.runs_dir) / f"{cfg.name}-summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
    print(f"\nNext:\n  make ui      # MLflow UI at http://127.0.0.1:5000 (experiment '{tracking.experiment_name(cfg)}')"
          f"\n  make serve   # next-word API and live page at http://127.0.0.1:8000")
    return 0
