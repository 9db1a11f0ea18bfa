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


MIX = "net + 4-gram + cache"  # the mix `make run` fits and registers with every network (the served default)


def train_and_register(cfg: Config, prepared, client, documents: dict[str, list[str]], lm, baseline=None,
                       probes=None) -> dict[str, Any]:
    """One cell, start to finish, as one MLflow run: train, fit its mixture with `lm` on validation, evaluate both on
    the test split (and the `baseline` scorer when given), register the network with its mixture. Returns the run's
    headline figures."""
    from pipeline import tracking
    from pipeline.checkpoints import load_checkpoint
    from pipeline.evaluation.evaluate import (
        NeuralScorer,
        evaluate,
        word_perplexity,
        write_outputs,
    )
    from pipeline.evaluation.mixture import MIXES, MixtureScorer, fit, save_mixture
    from pipeline.training.logger import make_logger
    from pipeline.training.train import run_dir_for, train

    run_dir = run_dir_for(cfg)
    logger = make_logger(cfg, client, prepared, run_dir)
    run_id = logger.run_id
    with tracking.terminated_on_interrupt(client, run_id):
        result = train(cfg, prepared, logger=logger)
        if result.diverged_at is not None:
            client.set_tag(run_id, "diverged_at_step", str(result.diverged_at))
        bundle = load_checkpoint(result.best_checkpoint)
        out_dir = run_dir / "evaluation"
        net = NeuralScorer(bundle, cfg.eval, cfg.model.cell)
        val_ppl, _ = word_perplexity(net, documents["validation"], cfg.eval)
        weights, fitted = fit(net, lm, MIXES[MIX], documents["validation"], cfg.mixture, cfg.eval)
        mix_name = f"{cfg.model.cell} + {lm.order}-gram + cache"
        mixture_dir = save_mixture(run_dir / "mixture", lm, weights, cfg.mixture.candidates, fitted)
        print(f"    mixture fitted on {fitted['validation_words']:,} validation words: word ppl "
              f"{fitted['validation_word_ppl']:.0f} (network alone {val_ppl:.0f}); θ={weights.theta}, "
              f"W={weights.window}")
        mixed = MixtureScorer(net, lm, weights, cfg.mixture.candidates, mix_name)
        test = evaluate([net] + ([baseline] if baseline is not None else []), documents["test"], cfg, "test", probes)
        # the mixture's row without its context-length curve: 9 × 500 mixed rankings would double make run's time
        # (`make mix` draws it)
        no_curve = cfg.replace(eval=dataclasses.replace(cfg.eval, context_positions=0))
        test["models"] = {net.name: test["models"][net.name],
                          **evaluate([mixed], documents["test"], no_curve, "test", probes)["models"],
                          **{n: r for n, r in test["models"].items() if n != net.name}}
        write_outputs(test, out_dir)
        metrics = {"validation/word_ppl": val_ppl, **test["models"][net.name]["metrics"],
                   "train/seconds": result.seconds, "train/tokens_per_s_mean": result.tokens / max(result.seconds, 1e-9)}
        mix_metrics = {"validation/word_ppl": fitted["validation_word_ppl"], **test["models"][mix_name]["metrics"]}
        step = bundle.meta.get("global_step") or 0
        tracking.log_metrics(client, run_id, {**metrics, **{f"mixture/{k}": v for k, v in mix_metrics.items()}},
                             step=step)
        tracking.log_run_files(client, run_id, cfg, prepared, result.best_checkpoint)
        tracking.log_artifacts(client, run_id, out_dir, "evaluation")
        uri = tracking.log_pyfunc(bundle, run_id, mixture_dir)
        reg = tracking.register(client, uri, cfg.model.cell, metrics.get("validation/word_ppl", float("inf")), run_id)
    return {"cell": cfg.model.cell, "run_id": run_id, "metrics": metrics, "registry": reg,
            "params": sum(p.numel() for p in bundle.model.parameters()), "seconds": result.seconds,
            "mixture": {"cell": mix_name, "metrics": mix_metrics, "registry": reg, "weights": weights.to_dict()},
            "baseline": test["models"][baseline.name]["metrics"] if baseline is not None else None}


def format_table(rows: list[dict[str, Any]]) -> str:
    from pipeline.evaluation.intervals import wilson

    head = (f"{'model':<24}{'params':>10}{'train s':>9}{'top-1 [95% interval]':>24}{'top-5':>8}{'word ppl':>10}"
            f"{'val ppl':>9}  registry")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        reg = r.get("registry") or {}
        tag = f"{reg['name']} v{reg['version']}{' @champion' if reg.get('promoted') else ''}" if reg else ""
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "—"
        secs = f"{r['seconds']:.0f}" if r.get("seconds") else "—"
        n, top1 = int(m.get("test/words", 0)), m.get("test/top1", float("nan"))
        lo, hi = wilson(round(top1 * n), n) if n else (float("nan"), float("nan"))
        lines.append(f"{r['cell']:<24}{params:>10}{secs:>9}{f'{top1:.2%} [{lo:.1%}, {hi:.1%}]':>24}"
                     f"{m.get('test/top5', float('nan')):>8.2%}{m.get('test/word_ppl', float('nan')):>10.0f}"
                     f"{m.get('validation/word_ppl', float('nan')):>9.0f}  {tag}")
    n = next((int(r["metrics"]["test/words"]) for r in rows if "test/words" in r["metrics"]), None)
    if n:
        lines.append(f"n = {n:,} test words (whole words, exact match, OOV targets counted)")
    return "\n".join(lines)


def cli(args, cfg: Config) -> int:
    from pipeline import tracking
    from pipeline.corpus.prepare import documents, prepare
    from pipeline.evaluation.evaluate import NgramScorer, build_baseline
    from pipeline.evaluation.probes import load_probes

    t0 = time.perf_counter()
    client = tracking.open_store(cfg)  # fail before any training time is spent
    _say(f"prepare: {cfg.data.train}")
    prepared = prepare(cfg)
    s = prepared.manifest["splits"]
    print(f"    {s['train']['documents']} training documents, {s['train']['words']} words, "
          f"{prepared.manifest['tokenizer']['vocab_size']} pieces ({s['train']['pieces_per_word']:.2f} per word)")
    docs = {split: documents(cfg, split) for split in ("validation", "test")}
    probes = load_probes(Path(cfg.eval.probes)) if cfg.eval.probes else None
    _say(f"baseline: word {cfg.eval.ngram_order}-gram (interpolated Kneser-Ney) on the train split")
    lm = build_baseline(cfg)
    baseline = NgramScorer(lm)
    rows = []
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for i, cell in enumerate(cells, 1):
        cell_cfg = cfg.replace(model=dataclasses.replace(cfg.model, cell=cell))
        _say(f"[{i}/{len(cells)}] train and evaluate {cell}")
        row = train_and_register(cell_cfg, prepared, client, docs, lm, baseline=baseline if i == 1 else None,
                                 probes=probes)
        rows += [row, row["mixture"]]
    if rows and rows[0].get("baseline"):
        rows.append({"cell": f"{cfg.eval.ngram_order}-gram KN", "metrics": rows[0]["baseline"]})
    _say(f"done in {(time.perf_counter() - t0) / 60:.1f} min — test split of {cfg.data.test}")
    table = format_table(rows)
    print(table)
    summary = Path(cfg.train.runs_dir) / f"{cfg.name}-summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
    print(f"\nNext:\n  make ui      # MLflow UI at http://127.0.0.1:5000 (experiment '{tracking.experiment_name(cfg)}')"
          f"\n  make serve   # next-word API and live page at http://127.0.0.1:8000")
    return 0
