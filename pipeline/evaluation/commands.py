"""The evaluation's commands (`python -m pipeline evaluate | ablate | baseline | keystrokes | mix | probe`): thin wiring of
assembly.py's scorers and documents through the consumers to the tables. Every user error is printed to stderr with
exit status 2 (`fail`)."""
from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import torch

from pipeline.config import PROJECT_ROOT, Config, ConfigError
from pipeline.evaluation.assembly import (
    build_baseline,
    build_scorers,
    eval_documents,
    evaluate,
    load_model,
    log_to_runs,
    probes_of,
    train_word_counts,
)
from pipeline.evaluation.ablation_tables import ablation_lines, ablation_metrics, ablation_tables
from pipeline.evaluation.keystroke_figures import keystroke_lines, keystroke_metrics, keystroke_rows, keystroke_tables
from pipeline.evaluation.keystrokes import run_scorer
from pipeline.evaluation.loop import ablate_scorer
from pipeline.evaluation.mixture import MixtureError, MixtureWeights, mix_label, mixture_dir, save_mixture
from pipeline.evaluation.mixture_fit import SERVED, fit_all
from pipeline.evaluation.mixture_scorer import MixtureScorer
from pipeline.evaluation.ngram import KneserNey
from pipeline.evaluation.ngram_scorer import NgramScorer
from pipeline.evaluation.probe_constructions import count_constructions, format_counts
from pipeline.evaluation.probe_generation import filler_documents, write_probes
from pipeline.evaluation.probes import format_summary, load_probes, score_probes, summarize
from pipeline.evaluation.sampling import sample_line, sampled_targets
from pipeline.evaluation.tables import print_table, write_outputs
from pipeline.evaluation.text_kinds import scored_words


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _out_dir(args, cfg: Config, split: str, what: str = "") -> Path:
    """--out, or runs/eval/<config name>[-what][-split] (a file's name when it is not the config's split)."""
    if args.out:
        return Path(args.out)
    parts = [cfg.name] + ([what] if what else []) + ([split] if split != cfg.eval.split else [])
    return Path(cfg.train.runs_dir) / "eval" / "-".join(parts)


def evaluate_cli(args, cfg: Config) -> int:
    """`evaluate --model REF ... [--baseline] [--data FILE] [--mix net]`: the tables, files and MLflow metrics."""
    if not args.model and not args.baseline:
        return fail("give at least one --model (run id, models:/NAME@ALIAS, checkpoint or export directory) or "
                    "--baseline")
    probes = probes_of(cfg)  # before any model is read: a missing probe file fails fast
    scorers, where = build_scorers(cfg, args.model, args.baseline, getattr(args, "mix", "mixture"))
    docs, sources, split = eval_documents(cfg, args.data)
    results = evaluate(scorers, docs, cfg, split, probes, sources)
    out = _out_dir(args, cfg, split)
    print_table(results)  # the tables first: a figure that fails to draw must not take them with it
    files = write_outputs(results, out)
    print(f"wrote {len(files)} files to {out}")
    log_to_runs(cfg, where, results, out)
    return 0


def ablate_cli(args, cfg: Config) -> int:
    """`ablate --model REF ... [--data FILE] [--baseline]`: the context ablation and copy test alone (losses only,
    no beam search): tables, ablation.json, metrics to each model's MLflow run."""
    if not args.model and not args.baseline:
        return fail("give at least one --model (run id, models:/NAME@ALIAS, checkpoint or export directory) or "
                    "--baseline")
    scorers, where = build_scorers(cfg, args.model, args.baseline, "net")
    docs, sources, split = eval_documents(cfg, args.data)
    if len(docs) < 2:
        return fail(f"{args.data or split} has {len(docs)} document(s): the ablation replaces context with text of "
                    "other documents of the same file; give a file with at least 2 documents")
    counts = train_word_counts(cfg)
    got = {s.name: ablate_scorer(s, docs, cfg.eval, sources, counts) for s in scorers}
    tables = ablation_tables(got, cfg.eval)
    print("\n".join(ablation_lines(tables, tuple(tables["kinds"]))))
    for name, r in got.items():
        print(f"{name}: {r['rows']:,} ablated contexts ({r['row_tokens']:,} tokens) in {r['seconds']:.0f} s")
    out = _out_dir(args, cfg, split, "ablation")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"tables": tables, "models": got}, ensure_ascii=False))
    print(f"wrote {out / 'ablation.json'}")
    results = {"models": {n: {"metrics": {f"{split}/{k}": v for k, v in ablation_metrics(tables, n).items()}}
                          for n in got}}
    log_to_runs(cfg, where, results, out)
    return 0


def baseline_cli(args, cfg: Config) -> int:
    """`baseline`: the n-gram alone, evaluated like a model (tables, plots, probes)."""
    args.model, args.baseline = [], True
    args.out = args.out or str(Path(cfg.train.runs_dir) / "eval" / f"{cfg.name}-baseline")
    return evaluate_cli(args, cfg)


def keystrokes_cli(args, cfg: Config) -> int:
    """`keystrokes --model REF [--data FILE] [--slots 3] [--mix net] [--no-baseline]`: the typist on the config's
    split (eval.split, eval.max_words) or FILE, for each model, its registered mixture and the n-gram; tables by
    kind, keystrokes.json/csv, metrics to each model's MLflow run."""
    slots = cfg.eval.keystroke_slots if args.slots is None else args.slots
    if not args.model and not args.baseline:
        return fail("nothing to replay: give --model REF (repeatable), or leave the n-gram on")
    try:
        ec = dataclasses.replace(cfg.eval, keystroke_slots=slots)  # the config checks the bar's width
    except ConfigError as e:
        return fail(f"--slots {slots}: {e}")
    scorers, where = build_scorers(cfg, args.model, args.baseline, args.mix)
    docs, sources, split = eval_documents(cfg, args.data)
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    words = scored_words(tokens, targets, chosen, sources, ec)
    runs = {s.name: run_scorer(s, tokens, targets, chosen, slots, ec.workers) for s in scorers}
    tables = keystroke_tables(words, runs, ec, scorers[0].name)
    print(sample_line(info))
    print("\n".join(keystroke_lines(tables)))
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "eval" / f"{cfg.name}-keystrokes-{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "keystrokes.json").write_text(json.dumps({"split": split, "slots": slots, "sample": info,
                                                     "tables": tables, "words_per_s": {
                                                         n: r["words_per_s"] for n, r in runs.items()}},
                                                    indent=1, ensure_ascii=False))
    with open(out / "keystrokes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(keystroke_rows(tables, scorers[0].name))
    print(f"wrote keystrokes.json and keystrokes.csv to {out}")
    log_to_runs(cfg, where, {"models": {n: {"metrics": keystroke_metrics(tables, n, split)} for n in runs}}, out)
    return 0


def _saveable(ref: str) -> None:
    if Path(ref).suffix != ".ckpt" or not Path(ref).is_file():
        raise MixtureError(f"--save stores the mixture beside a local checkpoint (runs/<run>/checkpoints/*.ckpt); "
                           f"{ref} is not one: pass the checkpoint's path, or retrain with `make run`, which "
                           "registers every model with its mixture")


def _save_served(ref: str, cfg: Config, lm: KneserNey, weights: MixtureWeights, about: dict) -> Path:
    """Store `weights` as the mixture of the checkpoint `ref` (runs/<run>/mixture/, where `serve`, `evaluate` and
    `keystrokes` find it). A registered or exported model's files are not rewritten: `make run` registers a new
    version with its mixture instead."""
    bundle, _ = load_model(ref, cfg)
    return save_mixture(mixture_dir(bundle), lm, weights, cfg.mixture.candidates, about)


def mix_cli(args, cfg: Config) -> int:
    """`mix --model REF [--data FILE] [--save] [--served-only]`: fit the mixtures on validation, then evaluate the
    network alone, each mix and the n-gram on the test split, or FILE (eval.max_words), with the usual tables."""
    from pipeline.corpus.prepare import documents

    torch.set_grad_enabled(False)
    save = getattr(args, "save", False)
    if save:
        _saveable(args.model)  # before the fit, not after it
    scorers, _ = build_scorers(cfg, [args.model], False)
    net = scorers[0]
    lm = build_baseline(cfg)
    weights, report = fit_all(net, lm, documents(cfg, "validation"), cfg,
                              served_only=getattr(args, "served_only", False))
    served = mix_label("net", SERVED, lm.order)
    if save:
        saved = _save_served(args.model, cfg, lm, weights[served], report[served])
        print(f"stored the {served} mix as the model's mixture: {saved} (what `serve`, `evaluate` and "
              "`keystrokes` use with it)")
    scorers = [net, *(MixtureScorer(net, lm, w, cfg.mixture.candidates, name) for name, w in weights.items()),
               NgramScorer(lm, f"{lm.order}-gram")]
    docs, sources, split = eval_documents(cfg, args.data)
    # each mix's gain over the network alone, paired on the same words
    paired = cfg.replace(eval=dataclasses.replace(cfg.eval, paired_reference=net.name))
    results = evaluate(scorers, docs, paired, split, sources=sources)
    results["mixture_fit"] = report
    out = _out_dir(args, cfg, split, "mixture")
    print_table(results)  # the tables first: a figure that fails to draw must not take them with it
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixture_weights.json").write_text(json.dumps({n: w.to_dict() for n, w in weights.items()}, indent=1))
    files = write_outputs(results, out)
    print(f"wrote {len(files) + 1} files to {out}")
    return 0


def _count(args, cfg: Config) -> None:
    """`probe --count`: how often the training text holds each probe frame (train split, or --data FILE)."""
    from pipeline.corpus.prepare import documents, file_documents

    if getattr(args, "data", None):
        docs, where = file_documents(args.data, cfg)[0], args.data
    else:
        docs, where = documents(cfg, "train"), f"train split of {cfg.name}"
    print(f"probe frames in {where} (filler rules of pipeline/evaluation/probe_constructions.py):")
    print(format_counts(count_constructions(docs)))


def probe_cli(args, cfg: Config) -> int:
    """`probe [--count] [--generate] [--model REF ...] [--probes FILE]`."""
    path = Path(args.probes or cfg.eval.probes or PROJECT_ROOT / "data/probes/probes.jsonl")
    count = getattr(args, "count", False)
    if not (args.model or args.generate or count):
        return fail("give --model (checkpoint or export directory), --generate or --count")
    if count:
        _count(args, cfg)
    if args.generate:
        dropped: dict[str, str] = {}
        write_probes(path, filler_documents(cfg), dropped=dropped)
        probes = load_probes(path)
        table: dict[tuple[str, int], int] = {}
        for p in probes:
            table[(p.kind, p.distance)] = table.get((p.kind, p.distance), 0) + 1
        print(f"wrote {len(probes)} probes to {path}: " +
              ", ".join(f"{k} d={d}: {n}" for (k, d), n in sorted(table.items())))
        for what, why in dropped.items():
            print(f"  dropped {what}: {why}")
    if not args.model:
        return 0
    probes = load_probes(path)  # a ProbeError is reported by the command line (pipeline/cli.py) on stderr
    scorers, _ = build_scorers(cfg, args.model, getattr(args, "baseline", False))
    for scorer in scorers:
        print(format_summary(scorer.name, summarize(probes, score_probes(scorer, probes))))
    return 0

