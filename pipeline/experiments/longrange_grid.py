"""The controlled long-range task's grid (DESIGN §8): which jobs run, in what order, on what budget, and what is reused.

    sweep: every cell at d = sweep_d, each learning rate × sweep_seeds seeds (seeds apart from the grid's), short cap
        └─> per cell the learning rate: most seeds solved, then fewest median steps, then best validation accuracy
    grid: per cell, d = 5, 10, 20, …, seeds × one fresh model each, at most `steps` steps, stopped once solved
        └─> the next d opens once one seed of this d is solved; a d that no seed solves ends the climb (the ds above
            it are "beyond the frontier", not run)
    ablation: the 2 × 2 of the old protocol (loss × embedding init) around lstm_f3, at ablation_distances only,
        with lstm_f3's learning rate

Jobs run in `workers` spawned processes, one torch thread each, lowest d first. Budget: `cpu_minutes` of the jobs'
CPU time in all (the sweep included; a reused job counts what it cost). A (cell, d) is admitted whole only when its
worst case (seeds × steps × d × the measured CPU per step and word) fits what is left; otherwise it and every d above
it are "not run", with the CPU-minutes it would need; a job still running when the budget or the wall-clock limit is
spent stops and counts as not run, never as failed. Every finished job is cached in <out>/jobs/<key>.json, the key
the hash of everything that decides it (cell, d, seed, learning rate, budget, sizes, the task, the protocol), and is
reused by any later run whose job has the same key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.evaluation.intervals import wilson
from pipeline.experiments.longrange_task import CLASSES, SUCCESS, TASK
from pipeline.experiments.longrange_train import (
    ABLATION_BASE,
    CELLS,
    COST,
    DIAGNOSTIC_ITEMS,
    PROTOCOL,
    ablation,
    train_job,
)


@dataclass(frozen=True)
class LongrangeSettings:
    """Everything the task's grid needs; from the config's `experiment.longrange_*` keys (longrange.config_args)."""
    cells: tuple[str, ...] = tuple(CELLS)
    distances: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 400)
    seeds: int = 5
    first_seed: int = 0
    steps: int = 4000
    eval_every: int = 50
    batch_size: int = 32
    embedding_dim: int = 32
    hidden_dim: int = 64
    clip: float | None = 1.0
    n_test: int = 500
    t_max: float = 400.0                       # chrono init: keep-gate biases log U(1, T_max − 1)
    lrs: tuple[float, ...] = (1e-3, 2e-3, 5e-3)  # the sweep's learning rates
    sweep_d: int = 20
    sweep_seeds: int = 2
    sweep_steps: int = 1000                    # never more than `steps`
    ablation_distances: tuple[int, ...] = (10, 50)
    cpu_minutes: float = 60.0
    wall_minutes: float | None = None          # also stop this invocation after this long (None: no wall limit)
    workers: int = 2

    def check(self) -> None:
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise ValueError(f"unknown long-range cell {unknown[0]!r}; choose from {', '.join(CELLS)}")
        if not self.cells:
            raise ValueError(f"long-range cells {list(self.cells)}: give at least one of {', '.join(CELLS)}")
        for name, lo, fix in (("steps", 1, "give at least one training step"), ("seeds", 1, "give at least one seed"),
                              ("eval_every", 1, "evaluate at least every step"),
                              ("n_test", len(CLASSES), f"give at least {len(CLASSES)} test items"),
                              ("workers", 1, "use at least one worker process"),
                              ("sweep_seeds", 1, "give the learning-rate sweep at least one seed"),
                              ("sweep_steps", 1, "give the learning-rate sweep at least one step")):
            if getattr(self, name) < lo:
                raise ValueError(f"long-range {name}={getattr(self, name)}: {fix}")
        if not self.distances or min(self.distances) < 2 or self.sweep_d < 2 or min(self.ablation_distances,
                                                                                     default=2) < 2:
            raise ValueError(f"long-range distances {list(self.distances)} (sweep_d {self.sweep_d}, ablation "
                             f"{list(self.ablation_distances)}): each d must be >= 2 (cue, query word, verb)")
        if not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"long-range lrs {list(self.lrs)}: give at least one learning rate > 0 for the sweep")
        if self.t_max <= 2:
            raise ValueError(f"long-range t_max={self.t_max}: chrono init draws log U(1, T_max − 1); use T_max > 2")


def job_key(cell: str, d: int, seed: int, lr: float, steps: int, s: LongrangeSettings) -> str:
    """The hash of everything that decides a job's result (not the budget, the workers or the other cells)."""
    spec = CELLS[cell]
    what = {"spec": spec, "d": d, "seed": seed, "lr": lr, "steps": steps, "eval_every": s.eval_every,
            "batch_size": s.batch_size, "embedding_dim": s.embedding_dim, "hidden_dim": s.hidden_dim, "clip": s.clip,
            "n_test": s.n_test, "diagnostic_items": min(DIAGNOSTIC_ITEMS, s.n_test), "success": SUCCESS,
            "task": TASK, "protocol": PROTOCOL, "optimizer": "adam"}
    if spec.get("chrono"):
        what["t_max"] = s.t_max
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _median(values: list[Any]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return statistics.median(v) if v else None


def summarise(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """One (cell, d): success rate over seeds [Wilson], median steps to success (failures count as never), and the
    diagnostics' medians over seeds at the first step and the end."""
    k, n = sum(r["success"] for r in runs), len(runs)
    low, high = wilson(k, n)
    median = statistics.median([r["steps_to_success"] if r["success"] else math.inf for r in runs])
    out = {"status": "run", "seeds": runs, "successes": k, "runs": n, "success_rate": k / n, "low": low,
           "high": high, "median_steps": median if math.isfinite(median) else None, "budget_steps": steps,
           "mean_accuracy": float(np.mean([r["accuracy"] for r in runs]))}
    if all("diagnostics" in r for r in runs):
        out["diagnostics"] = {key: {when: _median([r["diagnostics"][when][key] for r in runs])
                                    for when in ("first", "end")} for key in runs[0]["diagnostics"]["first"]}
    return out


def choose_lr(runs: list[dict[str, Any]], lrs: tuple[float, ...]) -> tuple[float, dict[str, Any]]:
    """The sweep's rule: most seeds solved, then the fewest median steps to success (failures count as never), then
    the best mean validation accuracy, then the smaller learning rate."""
    table = {}
    for lr in lrs:
        mine = [r for r in runs if r["lr"] == lr and r["stopped"] is None]
        if not mine:
            continue
        med = statistics.median([r["steps_to_success"] if r["success"] else math.inf for r in mine])
        table[str(lr)] = {"successes": sum(r["success"] for r in mine), "runs": len(mine),
                          "median_steps": med if math.isfinite(med) else None,
                          "mean_val_accuracy": float(np.mean([r["val_accuracy"] or 0.0 for r in mine]))}
    if not table:
        raise RuntimeError("the learning-rate sweep finished no job (budget?)")
    best = max(table, key=lambda lr: (table[lr]["successes"], -(table[lr]["median_steps"] or math.inf),
                                      table[lr]["mean_val_accuracy"], -float(lr)))
    return float(best), table


class _Inline:
    """A one-worker executor that runs each job at submit time (tests, workers=1)."""

    def submit(self, fn, job):
        f: Future = Future()
        f.set_result(fn(job))
        return f

    def shutdown(self, wait=True):
        pass


# A job's fixed CPU cost (building, the test set, the diagnostics; seconds), and the smallest job (steps × d) whose
# measured rate replaces COST: below it the fixed cost would dominate the rate.
JOB_OVERHEAD, MEASURABLE = 1.0, 20_000


def _rate(cell: str, measured: dict[str, tuple[float, float]]) -> float:
    """CPU seconds per step and word of d for a cell type: from its finished job with the most steps × d, else COST."""
    return measured[cell][1] if cell in measured else COST[cell]


def run_grid(s: LongrangeSettings, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) every job the plan reaches within the budget; returns the raw plan: the sweep, per cell and d
    the jobs' results or why there are none, and the timing."""
    s.check()
    cache = out / "jobs"
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    deadline = time.time() + s.wall_minutes * 60 if s.wall_minutes else None
    budget = s.cpu_minutes * 60
    results: dict[str, dict[str, Any]] = {}  # key -> finished job
    cpu_this_run, reused, trained = 0.0, 0, 0
    measured: dict[str, tuple[float, float]] = {}  # cell type -> (steps × d, CPU s per step·d) of its largest job
    ablations = [c for c in s.cells if ablation(CELLS[c])]
    grid_cells = [c for c in s.cells if not ablation(CELLS[c])]
    swept = list(dict.fromkeys(grid_cells + ([ABLATION_BASE] if ablations else [])))
    lr_of: dict[str, float] = {}
    sweep_table: dict[str, Any] = {}
    # groups: (kind, cell, d) -> {"jobs": [job], "status": None | "admitted" | "not run" | "beyond", ...}
    groups: dict[tuple[str, str, int], dict[str, Any]] = {}
    for c in swept:
        groups[("sweep", c, s.sweep_d)] = {"jobs": [dict(cell=c, d=s.sweep_d, seed=s.first_seed + 1000 + i, lr=lr,
                                                         steps=min(s.sweep_steps, s.steps)) for lr in s.lrs
                                                    for i in range(s.sweep_seeds)]}
    ds = sorted(set(s.distances))
    for c in grid_cells:
        for d in ds:
            groups[("grid", c, d)] = {"jobs": None}
    for c in ablations + ([ABLATION_BASE] if ablations else []):
        for d in sorted(set(s.ablation_distances)):
            groups.setdefault(("ablation", c, d), {"jobs": None})

    def spent() -> float:
        return sum(r["cpu_seconds"] for r in results.values())

    def key(j: dict[str, Any]) -> str:
        return job_key(j["cell"], j["d"], j["seed"], j["lr"], j["steps"], s)

    def worst(j: dict[str, Any]) -> float:
        return JOB_OVERHEAD + j["steps"] * j["d"] * _rate(CELLS[j["cell"]]["cell"], measured) \
            * CELLS[j["cell"]].get("num_layers", 1)

    def finish(j: dict[str, Any], r: dict[str, Any], from_cache: bool) -> None:
        nonlocal cpu_this_run, reused, trained
        if not from_cache:
            cpu_this_run += r["cpu_seconds"]
        if r["stopped"] is not None:
            j["stopped"] = r
            log(f"    {j['cell']:>18} d={j['d']:<4} seed {j['seed']} lr {j['lr']:g}: stopped by the {r['stopped']} "
                f"after {r['steps_run']} steps: not run")
            return
        results[j["key"]] = r
        reused, trained = reused + from_cache, trained + (not from_cache)
        cell_type = CELLS[j["cell"]]["cell"]
        size = r["steps_run"] * j["d"] * CELLS[j["cell"]].get("num_layers", 1)
        if size >= MEASURABLE and size > measured.get(cell_type, (0, 0))[0]:
            measured[cell_type] = (size, r["cpu_seconds"] / size)
        if not from_cache:
            (cache / f"{j['key']}.json").write_text(json.dumps(r, ensure_ascii=False))
            log(f"    {j['cell']:>18} d={j['d']:<4} seed {j['seed']} lr {j['lr']:g}: {r['accuracy']:.3f} after "
                f"{r['steps_run']} steps" + (" solved" if r["success"] else "") + f" ({r['cpu_seconds']:.0f} CPU s; "
                f"{spent() / 60:.1f} of {s.cpu_minutes:g} CPU min)")

    def resolve() -> None:
        """Fill in the groups that can now be planned: learning rates, the next d, beyond the frontier."""
        for c in swept:
            g = groups[("sweep", c, s.sweep_d)]
            if c not in lr_of and g.get("status") == "admitted" and all(j.get("done") for j in g["jobs"]):
                lr_of[c], sweep_table[c] = choose_lr([results[j["key"]] for j in g["jobs"] if j["key"] in results],
                                                     s.lrs)
                log(f"    {c}: learning rate {lr_of[c]:g} from the sweep at d = {s.sweep_d}")
        for (kind, c, d), g in groups.items():
            if kind == "sweep" or g["jobs"] is not None or g.get("status"):
                continue
            base = ABLATION_BASE if kind == "ablation" else c
            if groups[("sweep", base, s.sweep_d)].get("status") == "not run":
                g["status"] = "not run"
                continue
            if base not in lr_of:
                continue
            if kind == "grid" and d != ds[0]:
                prev = groups[("grid", c, ds[ds.index(d) - 1])]
                if prev.get("status") in ("beyond", "not run"):
                    g["status"] = prev["status"]
                    continue
                if prev["jobs"] is None or not prev.get("status"):
                    continue
                prev_done = [results.get(j["key"]) for j in prev["jobs"]]
                if not any(r and r["success"] for r in prev_done):
                    if all(j.get("done") for j in prev["jobs"]):
                        # no seed solved the d below: beyond the frontier, or not run where the budget cut it
                        g["status"] = "not run" if any(j.get("stopped") for j in prev["jobs"]) else "beyond"
                    continue
            g["jobs"] = [dict(cell=c, d=d, seed=s.first_seed + i, lr=lr_of[base], steps=s.steps)
                         for i in range(s.seeds)]
        for g in groups.values():
            for j in g["jobs"] or []:
                j.setdefault("key", key(j))

    pool = _Inline() if s.workers == 1 else ProcessPoolExecutor(s.workers, mp_context=get_context("spawn"))
    running: dict[Future, dict[str, Any]] = {}
    order = {c: i for i, c in enumerate(s.cells)}
    try:
        while True:
            resolve()
            ready = sorted(((kind != "sweep", d, order.get(c, -1), g) for (kind, c, d), g in groups.items()
                            if g["jobs"] is not None and g.get("status") in (None, "admitted")
                            and any(not j.get("started") for j in g["jobs"])), key=lambda t: t[:3])
            launched = False
            for *_, g in ready:
                for j in g["jobs"]:  # the cache first: free, and it settles what the budget has left
                    f = cache / f"{j['key']}.json"
                    if not j.get("started") and (j["key"] in results or f.is_file()):
                        j["started"] = j["done"] = True
                        if j["key"] not in results:
                            finish(j, json.loads(f.read_text(encoding="utf-8")), True)
                        launched = True
                if g.get("status") is None:
                    todo = [j for j in g["jobs"] if not j.get("started")]
                    reserved = sum(worst(j) for r in groups.values() if r.get("status") == "admitted"
                                   for j in r["jobs"] if not j.get("done"))
                    need = sum(worst(j) for j in todo)
                    late = deadline is not None and time.time() > deadline
                    if todo and (late or spent() + need > budget):
                        g["status"], g["would_need_cpu_minutes"] = "not run", need / 60
                        for j in todo:
                            j["started"] = j["done"] = j["stopped"] = True
                        log(f"    {g['jobs'][0]['cell']:>18} d={g['jobs'][0]['d']:<4}: not run (needs up to "
                            f"{need / 60:.1f} CPU min; {budget / 60 - spent() / 60:.1f} left"
                            + (", past the wall-clock limit" if late else "") + ")")
                        launched = True
                        continue
                    if todo and spent() + reserved + need > budget:
                        continue  # it fits once the jobs in flight have used less than their worst case: wait
                    g["status"] = "admitted"
                for j in g["jobs"]:
                    if j.get("started") or len(running) >= s.workers or \
                            any(r["key"] == j["key"] for r in running.values()):  # the same job, wanted twice
                        continue
                    j["started"] = launched = True
                    job = {"cell": j["cell"], "d": j["d"], "seed": j["seed"], "lr": j["lr"], "deadline": deadline,
                           "cpu_limit": 1.5 * worst(j) + 30,  # the estimate's error, with room; a guard
                           "settings": {"steps": j["steps"], "eval_every": s.eval_every,
                                        "batch_size": s.batch_size, "embedding_dim": s.embedding_dim,
                                        "hidden_dim": s.hidden_dim, "clip": s.clip, "n_test": s.n_test,
                                        "t_max": s.t_max, "diagnostic_items": min(DIAGNOSTIC_ITEMS, s.n_test)}}
                    running[pool.submit(train_job, job)] = j
                    if s.workers == 1:
                        break
                if len(running) >= s.workers:
                    break
            if running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in done:
                    j = running.pop(f)
                    j["done"] = True
                    finish(j, f.result(), False)
                continue
            if not launched:
                break
    finally:
        pool.shutdown(wait=True)
    for (kind, c, d), g in groups.items():  # what never got its turn, and what the budget cut, with its price
        if g.get("status") in (None, "not run") and "would_need_cpu_minutes" not in g:
            g["status"] = "not run"
            base = ABLATION_BASE if kind == "ablation" else c
            jobs = g["jobs"] or [dict(cell=c, d=d, seed=s.first_seed + i, lr=lr_of.get(base, 0.0), steps=s.steps)
                                 for i in range(s.seeds)]
            g["would_need_cpu_minutes"] = sum(worst(j) for j in jobs if j.get("key") not in results) / 60
    return {"groups": groups, "results": results, "lr": lr_of, "sweep": sweep_table,
            "timing": {"wall_seconds": round(time.perf_counter() - t0, 1), "workers": s.workers,
                       "cpu_seconds": round(spent(), 1), "cpu_seconds_this_run": round(cpu_this_run, 1),
                       "jobs_trained": trained, "jobs_reused": reused, "budget_cpu_minutes": s.cpu_minutes,
                       "wall_minutes_limit": s.wall_minutes}}


def settings_dict(s: LongrangeSettings) -> dict[str, Any]:
    return {**dataclasses.asdict(s), "success": SUCCESS, "task": TASK, "protocol": PROTOCOL, "optimizer": "adam",
            "diagnostic_items": min(DIAGNOSTIC_ITEMS, s.n_test), "cell_specs": {c: CELLS[c] for c in s.cells}}
