"""reports/served.md: the goals read off the served run's evaluation, the tables by kind against the 4-gram, and the
time-to-quality curve when a record of the run's kept checkpoints exists."""
import json

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.evaluation import sampled_targets
from pipeline.evaluation.text_kinds import hit_string
from pipeline.experiments.served_report import write
from pipeline.job import tables_of_rows
from tests.support import overrides_of

NET, MIXED, NGRAM = "lstm", "lstm + 4-gram + cache", "kn4gram"


@pytest.fixture()
def served_run(tiny_config, prepared, tmp_path):
    from pipeline.corpus.prepare import document_sources, documents

    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "eval.paired_reference=kn4gram",
                             "eval.bootstrap_replicates=200"])
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    tokens, targets, chosen, _ = sampled_targets(docs, cfg.eval)
    words = [tokens[d][targets[d][i]] for d in range(len(docs)) for i in chosen[d]]
    n = len(words)

    def hits(share):
        h = np.zeros(n, bool)
        h[np.random.default_rng(0).permutation(n)[:int(share * n)]] = True
        return hit_string(h)

    def typist(tapped_before):  # -1: never offered; 0: tapped before its first character
        return {"slots": 3, "typed": [0 if i < tapped_before * n else -1 for i in range(n)],
                "length": [len(w) for w in words], "echo": [0] * n, "repeat": [False] * n}
    rows = [{"cell": name, "hits": {"top1": hits(s), "top5": hits(min(1.0, 2 * s))}, "keystrokes": typist(t)}
            for name, s, t in ((NET, 0.2, 0.3), (MIXED, 0.5, 0.6), (NGRAM, 0.3, 0.4))]
    results = tables_of_rows(rows, docs, sources, cfg)
    results["models"][NET].update(words=n, words_available=n, documents=len(docs), documents_available=len(docs),
                                  seed=1234)
    results["keystroke_sample"] = {k: results["models"][NET][k] for k in
                                   ("words", "words_available", "documents", "documents_available", "seed")}
    run = tmp_path / "runs" / "served-lstm-abc"
    (run / "evaluation").mkdir(parents=True)
    (run / "evaluation" / "results.json").write_text(json.dumps(results, ensure_ascii=False))
    return cfg, run, results


def test_the_report_reads_the_goals_and_the_tables_off_the_run(served_run, tmp_path):
    cfg, run, results = served_run
    out = write(cfg, run, tmp_path / "reports" / "served.md", tmp_path / "no-bench.json", "configs/served.yaml")
    text = out.read_text()
    goals = text[text.index("## Goals"):text.index("## Top-1")]
    pooled = "all" if "all" in results["kinds"] else next(iter(results["kinds"]))
    acc = {m: v["acc"] for m, v in results["kinds"][pooled]["top1"]["models"].items()}
    assert acc[NET] < acc[NGRAM] < acc[MIXED] / 1.25  # hit shares 20 / 30 / 50 %
    assert f"network top-1 ≥ 1 × the 4-gram's ({pooled})" in goals and f"not met ({acc[NET] / acc[NGRAM]:.2f} ×)" in goals
    assert f"{acc[MIXED] / acc[NGRAM]:.2f} ×" in goals and "| met |" in goals
    ksr = results["keystrokes"][pooled]["models"][MIXED]["ksr"]
    row = next(line for line in goals.splitlines() if "keystroke savings" in line)
    assert f"{100 * ksr:.1f} [" in row and row.endswith("| met |" if ksr >= 0.45 else "| not met |")
    assert f"{NET} − {NGRAM}" in text and "**top5**" in text and "## Keystroke savings, W = 3" in text
    assert "Not scored yet" in text and f"TTQ_RUN={run}" in text
    form = text[text.index("## Where the network stands"):text.index("## Keystroke savings")]
    # every scored word with a letter falls in one frequency bucket and in one pieces bucket
    letters = results["kinds"]["all" if "all" in results["kinds"] else next(iter(results["kinds"]))]["top1"]["n"]
    for title in ("by training frequency rank", "by pieces per word"):
        head = form[form.index(title):].splitlines()[2]
        assert sum(int(c.split("n=")[1].split()[0].replace(",", "")) for c in head.split("|")[2:-1]) == letters


def test_the_report_draws_the_curve_of_the_runs_kept_checkpoints(served_run, tmp_path):
    cfg, run, _ = served_run

    def point(step, acc):
        c = {"n": 500, "documents": 40, "top1": {"acc": acc, "low": acc - 0.01, "high": acc + 0.01},
             "ngram": {"acc": 0.09, "low": 0.08, "high": 0.1},
             "minus_ngram": {"diff": acc - 0.09, "low": acc - 0.1, "high": acc - 0.08}}
        return {"step": step, "pieces": step * 2048, "val_loss": 5.0, "kinds": {"all": c}}
    other = {"name": "time_to_quality", "command": "old", "commit": "x", "figures": {"run": "runs/other"}}
    mine = {"name": "time_to_quality", "command": "TTQ_RUN=x python -m pipeline bench", "commit": "abc1234",
            "figures": {"run": str(run), "sample": {"words": 500, "seed": 1234}, "evaluated_step": 3050,
                        "curve": [point(1525, 0.05), point(3050, 0.12)], "passed_ngram": {"all": {
                            "step": 3050, "pieces": 3050 * 2048}}, "passed_rule": "the rule"}}
    bench = tmp_path / "results.json"
    bench.write_text(json.dumps([mine, other]))
    out = write(cfg, run, tmp_path / "reports" / "served.md", bench, "configs/served.yaml")
    text = out.read_text()
    curve = text[text.index("## Time to quality"):]
    assert "`abc1234`" in curve and "`TTQ_RUN=x python -m pipeline bench`" in curve
    assert "| 1,525 | 3.1 | 5.000 | 5.0 (-4.0 [-5.0, -3.0]) |" in curve
    assert "| 3,050* | 6.2 | 5.000 | 12.0 (+3.0 [+2.0, +4.0]) |" in curve  # the evaluated weights, starred
    assert "all at step 3,050 (6.2 M pieces)" in curve
    assert (tmp_path / "reports" / "served" / "time_to_quality.png").stat().st_size > 1000


def test_the_report_lists_the_one_factor_checks_against_this_run(served_run, tmp_path):
    cfg, run, _ = served_run

    def acc(a):
        return {"acc": a, "low": a - 0.01, "high": a + 0.01}

    def diff(d):
        return {"diff": d, "low": d - 0.005, "high": d + 0.005}
    base = {"vocab": 8000, "hidden": 256, "max_steps": 22000, "step": 19825, "params": 3_600_000, "mean_logp": -7.0,
            "loss_per_piece": {"train": 4.37, "validation": 4.72}}
    runs = {run.name: base, "served-vocab16k-x": {**base, "vocab": 16000, "max_steps": 18800, "step": 18000},
            "served-hidden512-x": {**base, "hidden": 512, "max_steps": 8800, "step": 8500},
            "served-half-data-x": {**base, "train_fraction": 0.5}}
    cell = {"n": 900, "documents": 80, "top1": {run.name: acc(0.07), "served-vocab16k-x": acc(0.08),
                                                "served-hidden512-x": acc(0.06), "served-half-data-x": acc(0.05),
                                                "kn4gram": acc(0.09)},
            "minus_first": {"served-vocab16k-x": diff(0.01), "served-hidden512-x": diff(-0.01),
                            "served-half-data-x": diff(-0.02)},
            "minus_ngram": {n: diff(-0.02) for n in runs}}
    record = {"name": "time_to_quality", "command": "TTQ_RUN=a,b,c python -m pipeline bench", "commit": "def5678",
              "figures": {"reference": run.name, "runs": runs, "ngram": "kn4gram",
                          "sample": {"words": 900, "seed": 1234}, "cells": {"all": cell, "rank > 10,000": cell},
                          "logp_minus_first": {"served-vocab16k-x": diff(0.1), "served-hidden512-x": diff(-0.2),
                                               "served-half-data-x": diff(-0.3)}}}
    bench = tmp_path / "results.json"
    bench.write_text(json.dumps([record, {"name": "time_to_quality", "figures": {"reference": "another-run"}}]))
    text = write(cfg, run, tmp_path / "served.md", bench, "configs/served.yaml").read_text()
    section = text[text.index("## What limits the network"):text.index("## Time to quality")]
    assert "`def5678`" in section and "interval above 0" in section  # the rule, stated with the figures
    assert "| `served-vocab16k-x` | pieces 8,000 → 16,000 | 18,000 / 18,800 |" in section
    assert "| `served-hidden512-x` | hidden 256 → 512 | 8,500 / 8,800 |" in section
    assert "| `served-half-data-x` | training documents 100% → 50% |" in section
    assert "+1.0 [+0.5, +1.5]" in section and "-1.0 [-1.5, -0.5]" in section
    assert "+0.100 [+0.095, +0.105]" in section and "4.37 / 4.72" in section
    assert "| rank > 10,000 | 900 (80) | 7.0 [6.0, 8.0] | 9.0 [8.0, 10.0] | +1.0 [+0.5, +1.5] | -1.0 [-1.5, -0.5] | " \
        "-2.0 [-2.5, -1.5] |" in section
    untouched = write(cfg, run, tmp_path / "served2.md", tmp_path / "none.json", "configs/served.yaml").read_text()
    assert "Not run yet" in untouched and f"TTQ_RUN={run},runs/<variant>" in untouched


def test_a_run_evaluated_without_the_ngram_as_reference_is_a_clear_error(served_run, tmp_path):
    cfg, run, results = served_run
    results["paired_reference"] = "rnn_tanh"
    (run / "evaluation" / "results.json").write_text(json.dumps(results, ensure_ascii=False))
    with pytest.raises(ValueError, match="eval.paired_reference"):
        write(cfg, run, tmp_path / "served.md", tmp_path / "bench.json", "configs/served.yaml")


def test_an_unevaluated_run_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="make served"):
        write(tiny_config, tmp_path / "runs" / "nothing", tmp_path / "served.md",
              tmp_path / "bench.json", "configs/served.yaml")
