"""The long-range task, controlled (DESIGN §8): how far across a gap of d words can each cell *learn* a dependency,
from equal, fair starts?

    longrange_task.py    the data: a subject noun (the cue), d−2 distractors, the query word, the agreeing verb form
    longrange_train.py   one job: a fresh model of one cell at one d, one seed, one learning rate; its diagnostics
    longrange_grid.py    the plan: learning-rate sweep, the climb over d, the CPU budget, processes, the job cache
    longrange_report.py  frontier, Fisher tests, survival curves, steps-vs-d slopes, the report's section
    longrange_plots.py   the figures
    longrange.py         this entry: `python -m pipeline longrange` and `run_longrange` (the experiment calls it)

Protocol (Hochreiter & Schmidhuber 1997, exp. 2): one fresh model per (cell, d, seed), trained at that d only, so no
latch learned at short gaps is carried to long ones; success = accuracy ≥ 0.95 on fresh test items, never lowered.
The starts are named: LSTM and GRU at keep-gate bias 1, 3 and chrono init (Tallec & Ollivier 2018); the tanh RNN
with PyTorch's default and an orthogonal recurrent matrix; the IRNN (identity, ReLU). Each cell gets its own
learning rate, from a short sweep at d = 20 on seeds apart from the grid's. Output in <out>: longrange.json (every
number the report shows), survival.csv, longrange.png, survival.png, steps_vs_d.png, and jobs/ (the job cache).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.experiments.longrange_grid import LongrangeSettings, run_grid, settings_dict, summarise
from pipeline.experiments.longrange_report import (
    cell_text,
    fisher_tests,
    frontier,
    needed,
    report_lines,
    slopes,
    survival,
    write_survival_csv,
)
from pipeline.experiments.longrange_task import ATTRACTORS, CHANCE, CLASSES, POOL, VOCAB
from pipeline.experiments.longrange_train import ABLATION_BASE, CELLS, ablation, start

__all__ = ["LongrangeSettings", "config_args", "cli", "format_table", "report_lines", "run_longrange"]


def _group(g: dict[str, Any], results: dict[str, Any], steps: int) -> dict[str, Any]:
    """One (cell, d) in the JSON: the summary of its finished seeds, or why there are none."""
    if g.get("status") in ("beyond", "not run") and not any(j.get("key") in results for j in g["jobs"] or []):
        return {"status": g["status"], **({"would_need_cpu_minutes": round(g["would_need_cpu_minutes"], 2)}
                                          if g["status"] == "not run" else {})}
    runs = sorted((results[j["key"]] for j in g["jobs"] if j["key"] in results), key=lambda r: r["seed"])
    out = summarise(runs, steps)
    out["not_run"] = len(g["jobs"]) - len(runs)
    out["status"] = "run" if not out["not_run"] else "partial"
    return out


def assemble(s: LongrangeSettings, plan: dict[str, Any]) -> dict[str, Any]:
    """longrange.json's content from the grid's plan: per cell and d the summaries, then the analyses."""
    results, groups = plan["results"], plan["groups"]
    settings = settings_dict(s)
    settings["distances"] = sorted(set(s.distances))
    result: dict[str, Any] = {
        "settings": settings, "settings_hash": hashlib.sha256(json.dumps(settings, sort_keys=True)
                                                              .encode()).hexdigest()[:16],
        "chance": CHANCE, "classes": list(CLASSES), "vocab": len(VOCAB), "pool": len(POOL),
        "attractors": len(ATTRACTORS), "timing": plan["timing"], "cells": {},
        "sweep": {c: {"lr": plan["lr"][c], "by_lr": plan["sweep"][c]} for c in plan["lr"]}}
    params = {r["cell"]: r["parameters"] for r in results.values()}
    for c in s.cells:
        role = "ablation" if ablation(CELLS[c]) else "grid"
        kind = "ablation" if role == "ablation" else "grid"
        lr = plan["lr"].get(ABLATION_BASE if role == "ablation" else c)
        result["cells"][c] = {"spec": CELLS[c], "role": role, "start": start(CELLS[c], s.t_max), "lr": lr,
                              "parameters": params.get(c, 0),
                              "by_d": {str(d): _group(g, results, s.steps) for (k, c_, d), g in groups.items()
                                       if k == kind and c_ == c}}
    abl = [c for c in s.cells if ablation(CELLS[c])]
    if abl:
        names = [ABLATION_BASE] + abl
        result["ablation"] = {"distances": sorted(set(s.ablation_distances)), "cells": names,
                              "by_d": {n: {str(d): _group(groups[("ablation", n, d)], results, s.steps)
                                           for d in sorted(set(s.ablation_distances))} for n in names}}
        if ABLATION_BASE not in result["cells"]:  # its rows in the ablation table need its spec and rate
            result["cells"][ABLATION_BASE] = {"spec": CELLS[ABLATION_BASE], "role": "ablation-base",
                                              "start": start(CELLS[ABLATION_BASE], s.t_max),
                                              "lr": plan["lr"].get(ABLATION_BASE),
                                              "parameters": params.get(ABLATION_BASE, 0), "by_d": {}}
    result["frontier"] = {n: frontier(c, settings["distances"], s.seeds) for n, c in result["cells"].items()}
    result["fisher"] = fisher_tests(result)
    result["slopes"] = slopes(result)
    return result


def run_longrange(out_dir: str | Path, settings: LongrangeSettings | None = None,
                  log: Callable[[str], None] = print, command: str | None = None) -> dict[str, Any]:
    """Run (reusing every cached job) the whole task and write longrange.json, survival.csv and the figures."""
    from pipeline.experiments.longrange_plots import plot_grid, plot_steps, plot_survival

    s = settings or LongrangeSettings()
    out = Path(out_dir)
    result = assemble(s, run_grid(s, out, log))
    result["command"] = command or "python -m pipeline longrange --config configs/experiment.yaml"
    rows = survival(result)
    result["survival_csv"] = str(write_survival_csv(rows, out / "survival.csv"))
    (out / "longrange.json").write_text(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=True),
                                        encoding="utf-8")
    result["plot"] = str(plot_grid(result, out / "longrange.png"))
    plot_survival(result, rows, out / "survival.png")
    plot_steps(result, out / "steps_vs_d.png")
    return result


def format_table(result: dict[str, Any]) -> str:
    """The console's view: per cell, its start, learning rate, frontier and successes per d."""
    s = result["settings"]
    ds = s["distances"]
    lines = [f"{'cell':>18} {'start':>22} {'lr':>6} {'frontier':>8} " + " ".join(f"{'d=' + str(d):>28}" for d in ds)]
    for name, c in result["cells"].items():
        if c["role"] != "grid":
            continue
        f = result["frontier"][name]
        lines.append(f"{name:>18} {c['start']:>22} {c['lr']:>6g} {str(f['largest_d'] or '—'):>8} "
                     + " ".join(f"{cell_text(c['by_d'].get(str(d)), s['steps']):>28}" for d in ds))
    lines.append(f"successes/seeds [95 % Wilson]; median steps to success (> {s['steps']}: half or more failed); "
                 f"frontier: the largest d solved by >= {needed(s['seeds'])}/{s['seeds']} seeds")
    ab = result.get("ablation")
    if ab:
        lines += ["", "ablation (" + ", ".join(f"d={d}" for d in ab["distances"]) + "):"]
        for name in ab["cells"]:
            c = result["cells"][name]
            lines.append(f"{name:>18} " + " ".join(f"{cell_text(ab['by_d'][name].get(str(d)), s['steps']):>28}"
                                                   for d in ab["distances"]))
    t = result["timing"]
    lines.append(f"CPU: {t['cpu_seconds'] / 60:.1f} min for these results (budget {t['budget_cpu_minutes']:g}); "
                 f"this invocation {t['cpu_seconds_this_run'] / 60:.1f} CPU min, {t['wall_seconds'] / 60:.1f} min wall")
    return "\n".join(lines)


def config_args(cfg) -> dict[str, Any]:
    """run_longrange's keyword arguments from a Config's `experiment.longrange_*` keys."""
    e = cfg.experiment
    s = LongrangeSettings(
        cells=tuple(e.longrange_cells), distances=tuple(e.longrange_distances), seeds=e.longrange_seeds,
        first_seed=cfg.train.seed, steps=e.longrange_steps, eval_every=e.longrange_eval_every,
        batch_size=e.longrange_batch, embedding_dim=e.longrange_embedding, hidden_dim=e.longrange_hidden,
        n_test=e.longrange_n_test, workers=e.longrange_workers, t_max=e.longrange_t_max, lrs=tuple(e.longrange_lrs),
        sweep_d=e.longrange_sweep_d, sweep_seeds=e.longrange_sweep_seeds, sweep_steps=e.longrange_sweep_steps,
        ablation_distances=tuple(e.longrange_ablation_distances), cpu_minutes=e.longrange_cpu_minutes,
        wall_minutes=e.longrange_wall_minutes)
    return {"settings": s}


def cli(args, cfg) -> int:
    """`python -m pipeline longrange`: the task alone; JSON, CSV and PNGs into --out (default
    <report_dir>/experiment/longrange)."""
    out = Path(args.out) if args.out else Path(cfg.experiment.report_dir) / "experiment" / "longrange"
    t0 = time.perf_counter()
    result = run_longrange(out, **config_args(cfg), command="python -m pipeline " + " ".join(sys.argv[1:]))
    print(format_table(result))
    print(f"{out / 'longrange.json'}, survival.csv and the figures ({time.perf_counter() - t0:.0f} s)")
    return 0
