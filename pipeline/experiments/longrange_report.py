"""What the controlled long-range task's result says (DESIGN §8): the frontier per cell, the exact Fisher test of the
tanh RNN against each gated cell, survival curves, steps-to-success against d, the 2 × 2 ablation, and the report's
markdown section. Everything here reads longrange.json's numbers; nothing is trained or typed in by hand."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from pipeline.experiments.longrange_train import GATED, RATIO, SATURATION, ablation

FRONTIER_SHARE = 0.8  # "solved at d": at least 4 of 5 seeds (this share of the seeds, rounded up)
TANH = ("rnn_tanh", "rnn_tanh_orth")  # the tanh RNN's two starts: the references of the Fisher tests


def ran(b: dict[str, Any] | None) -> bool:
    return b is not None and b.get("status") in ("run", "partial")


def needed(seeds: int) -> int:
    return math.ceil(FRONTIER_SHARE * seeds - 1e-9)


def frontier(c: dict[str, Any], ds: list[int], seeds: int) -> dict[str, Any]:
    """The largest d solved by ≥ 4/5 seeds, and the first d above it with what happened there."""
    solved = [d for d in ds if ran(c["by_d"].get(str(d))) and c["by_d"][str(d)]["successes"] >= needed(seeds)]
    largest = max(solved) if solved else None
    above = [d for d in ds if largest is None or d > largest]
    nxt = above[0] if above else None
    return {"largest_d": largest, "next_d": nxt, "next": c["by_d"].get(str(nxt)) if nxt is not None else None}


def fisher_tests(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{reference tanh cell: {gated cell: {d: two-sided exact p of successes/seeds, or None where either did not
    run}}}."""
    cells, ds = result["cells"], result["settings"]["distances"]
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for ref in (t for t in TANH if t in cells):
        out[ref] = {}
        for name, c in cells.items():
            if c["role"] != "grid" or c["spec"]["cell"] not in GATED:
                continue
            row = {}
            for d in ds:
                a, b = c["by_d"].get(str(d)), cells[ref]["by_d"].get(str(d))
                if a and b and a.get("status") == "run" and b.get("status") == "run":
                    row[str(d)] = float(fisher_exact([[a["successes"], a["runs"] - a["successes"]],
                                                      [b["successes"], b["runs"] - b["successes"]]])[1])
                else:
                    row[str(d)] = None
            out[ref][name] = row
    return out


def slopes(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per cell: log(median steps to success) against log d, least squares over the ds where at least half the seeds
    solved (the median is a number there); None with fewer than two such ds."""
    out = {}
    for name, c in result["cells"].items():
        pts = [(int(d), b["median_steps"]) for d, b in c["by_d"].items() if ran(b) and b["median_steps"]]
        fit = None
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            slope, intercept = np.polyfit(x, y, 1)
            fit = {"slope": float(slope), "intercept": float(intercept)}
        out[name] = {"points": pts, **(fit or {"slope": None, "intercept": None})}
    return out


def survival(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (cell, d, step, solved, runs, share): the share of seeds solved by each step, at every step where it
    changes, from 0 to the cap."""
    cap, rows = result["settings"]["steps"], []
    for name, c in result["cells"].items():
        for d, b in c["by_d"].items():
            if not ran(b):
                continue
            hit = sorted(r["steps_to_success"] for r in b["seeds"] if r["success"])
            for step in sorted({0, cap, *hit}):
                k = sum(h <= step for h in hit)
                rows.append({"cell": name, "d": int(d), "step": step, "solved": k, "runs": b["runs"],
                             "share": k / b["runs"]})
    return rows


def write_survival_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["cell", "d", "step", "solved", "runs", "share"])
        w.writeheader()
        w.writerows(rows)
    return path


def fmt_ratio(v: float | None) -> str:
    """0: the cue's gradient fell below float32's range (it underflowed)."""
    if v is None or not math.isfinite(v):
        return "—"
    return "0" if v == 0 else f"{v:.2g}" if 0.01 <= v < 100 else f"{v:.1e}"


def fmt_sat(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}"


def diag(b: dict[str, Any], key: str, fmt) -> str:
    v = (b or {}).get("diagnostics", {}).get(key)
    return "—" if v is None else f"{fmt(v['first'])} → {fmt(v['end'])}"


def sat_key(c: dict[str, Any]) -> str:
    return SATURATION[c["spec"]["cell"]]


def cell_text(b: dict[str, Any] | None, steps: int) -> str:
    """'4/5 [0.38, 0.96]; 850' (successes/seeds [Wilson]; median steps to success, '> cap' when half failed)."""
    if b is None:
        return ""
    if b["status"] == "beyond":
        return "beyond the frontier"
    if b["status"] == "not run":
        return f"not run (≤ {b.get('would_need_cpu_minutes', math.nan):.2g} CPU-min)"
    med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f"> {steps}"
    extra = f", {b['not_run']} not run" if b.get("not_run") else ""
    return f"{b['successes']}/{b['runs']}{extra} [{b['low']:.2f}, {b['high']:.2f}]; {med}"


def limit_text(c: dict[str, Any], f: dict[str, Any], s: dict[str, Any], slope: dict[str, Any]) -> str:
    """What stops the cell above its frontier, from the numbers: the budget, the gap itself (no seed's cue gradient
    reaches the loss), or the step cap (the fitted slope predicts more steps than the cap)."""
    b, nxt = f["next"], f["next_d"]
    if nxt is None:
        return f"solved at every d up to {s['distances'][-1]}"
    if b is None or b["status"] == "not run":
        return f"d = {nxt} not run: the budget (≤ {(b or {}).get('would_need_cpu_minutes', math.nan):.2g} CPU-min more)"
    if b["status"] == "beyond":
        return f"d = {nxt}: beyond the frontier (no seed solved a smaller d)"
    failed = [r["diagnostics"]["end"] for r in b["seeds"] if not r["success"] and "diagnostics" in r]
    out = f"d = {nxt}: {b['successes']}/{b['runs']}"
    if failed:
        key = sat_key(c)
        ratio = float(np.median([x[RATIO] for x in failed if x.get(RATIO) is not None] or [math.nan]))
        sat = float(np.median([x[key] for x in failed]))
        out += f"; failed seeds end with cue gradient {fmt_ratio(ratio)} of the last distractor's, {key} {fmt_sat(sat)}"
    if slope.get("slope") is not None:
        pred = math.exp(slope["intercept"]) * nxt ** slope["slope"]
        out += (f"; the fitted slope predicts {pred:,.0f} steps at d = {nxt} "
                + ("(over the cap: the cap may bind)" if pred > s["steps"] else f"(within the {s['steps']:,} cap)"))
    return out


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def gating_answer(result: dict[str, Any]) -> str:
    """Does gating move the frontier at equal, fair starts? From the frontiers and the Fisher tests, in plain words."""
    s, cells = result["settings"], result["cells"]
    fr = {n: result["frontier"][n]["largest_d"] for n, c in cells.items() if c["role"] == "grid"}
    plain = {n: d for n, d in fr.items() if cells[n]["spec"]["cell"] not in GATED}
    gated = {n: d for n, d in fr.items() if cells[n]["spec"]["cell"] in GATED}
    if not plain or not gated:
        return "Not measured: the grid needs a plain and a gated cell."
    best_p = max(plain, key=lambda n: plain[n] or 0)
    best_g = max(gated, key=lambda n: gated[n] or 0)
    dp, dg = plain[best_p] or 0, gated[best_g] or 0
    sig = [(ref, g, d, p) for ref, rows in result["fisher"].items() for g, row in rows.items()
           for d, p in row.items() if p is not None and p < 0.05
           and cells[g]["by_d"][d]["successes"] / cells[g]["by_d"][d]["runs"]
           > cells[ref]["by_d"][d]["successes"] / cells[ref]["by_d"][d]["runs"]]
    head = (f"Best plain start: {best_p} ({cells[best_p]['start']}) solved up to d = {plain[best_p]}; best gated "
            f"start: {best_g} ({cells[best_g]['start']}) up to d = {gated[best_g]} (≥ {needed(s['seeds'])}/"
            f"{s['seeds']} seeds). ")
    if dg > dp:
        ans = f"Yes: at equal, fair starts gating moves the frontier, from d = {dp or 'none'} to d = {dg}."
    elif dg == dp:
        ans = "No: at equal, fair starts the best gated and the best plain cell reach the same d."
    else:
        ans = "No: the best plain start reaches further than any gated one."
    low = [n for n, d in gated.items() if (d or 0) <= dp]
    if low:
        ans += (" Not every gated start does: " + ", ".join(
            f"{n} ({cells[n]['start']}) reached d = {gated[n] or 'none'}" for n in low)
            + ", not beyond the best plain start.")
    # a frontier the budget cut is a lower bound: it can only move the answer if more budget could reverse it
    bound = [n for n in fr if (result["frontier"][n]["next"] or {}).get("status") == "not run"]
    risky = [n for n in bound if (n in plain) == (dg > dp)]
    if bound:
        ans += (" The budget, not the cell, stopped " + ", ".join(bound) + ": their frontiers are lower bounds"
                + (f", so this answer is provisional ({', '.join(risky)} might reach further)." if risky
                   else ", which cannot reverse this answer."))
    for ref in result["fisher"]:
        first = min((int(d), g, p) for g, row in result["fisher"][ref].items() for d, p in row.items()
                    if (ref, g, d, p) in sig) if any(t[0] == ref for t in sig) else None
        if first is None:
            ans += f" No gated cell beats {ref} at p < 0.05 at any d both ran."
            continue
        d, g, p = str(first[0]), first[1], first[2]
        ans += (f" Against {ref}, the first d where a gated cell is better at p < 0.05 (exact Fisher, two-sided): "
                f"d = {d}, e.g. {g} {cells[g]['by_d'][d]['successes']}/{cells[g]['by_d'][d]['runs']} vs "
                f"{cells[ref]['by_d'][d]['successes']}/{cells[ref]['by_d'][d]['runs']}, p = {p:.3f}.")
    return head + ans


def report_lines(result: dict[str, Any], assets: str) -> list[str]:
    """The experiment report's markdown section for this task; `assets` is the folder holding longrange/."""
    s, cells, t = result["settings"], result["cells"], result["timing"]
    ds, steps = s["distances"], s["steps"]
    grid = [n for n, c in cells.items() if c["role"] == "grid"]
    L = ["## Long-range task (controlled)", "",
         f"Verb agreement (4 forms: gender × number, chance {result['chance']:.2f}) with a subject d words back, "
         f"{result['pool']} distractor words ({result['attractors']} of them attractor nouns) between. One fresh "
         f"model per cell, d and seed, trained at that d only, on the loss that is scored (the query verb's 4 forms, "
         f"from the LM's decoder rows; N(0, 1) embeddings): {s['seeds']} seeds, Adam at the cell's learning rate, at "
         f"most {steps:,} steps (batch {s['batch_size']}, embedding {s['embedding_dim']}, hidden {s['hidden_dim']}, "
         f"clip {s['clip']}), stopped once {s['success']:.0%} of {s['n_test']} validation items are right; success = "
         f"test accuracy ≥ {s['success']} on {s['n_test']} fresh items. A cell climbs d in order and stops after a d "
         "that no seed solves (the ds above: *beyond the frontier*, not run). Learning rate per cell: the best of "
         f"{', '.join(f'{x:g}' for x in s['lrs'])} in a sweep at d = {s['sweep_d']} ({s['sweep_seeds']} seeds apart "
         f"from the grid's, ≤ {s['sweep_steps']:,} steps; most seeds solved, then fewest median steps). Budget "
         f"{t['budget_cpu_minutes']:g} CPU-minutes: a (cell, d) whose worst case does not fit is *not run* (with the "
         f"CPU-minutes it could need), never failed. These results cost **{t['cpu_seconds'] / 60:.1f} CPU-minutes** "
         f"(the sweep included; this invocation {t['cpu_seconds_this_run'] / 60:.1f} CPU-min and "
         f"{t['wall_seconds'] / 60:.1f} min wall with {t['workers']} processes; {t['jobs_reused']} jobs reused from "
         f"the cache, {t['jobs_trained']} trained): `{result.get('command', 'python -m pipeline longrange')}`.", "",
         f"Per cell and d: seeds solved [95 % Wilson]; median steps to success (> {steps:,}: half the seeds or more "
         f"never solved it). Frontier: the largest d solved by ≥ {needed(s['seeds'])}/{s['seeds']} seeds.", ""]
    L += table(["cell", "start", "lr", "params", "frontier", *(f"d={d}" for d in ds)],
               [[n, cells[n]["start"], f"{cells[n]['lr']:g}", f"{cells[n]['parameters']:,}",
                 str(result["frontier"][n]["largest_d"] or "none"),
                 *(cell_text(cells[n]["by_d"].get(str(d)), steps) for d in ds)] for n in grid])
    failed = [r for n in grid for b in cells[n]["by_d"].values() if ran(b) for r in b["seeds"] if not r["success"]]
    short = [r for r in failed if r["steps_run"] < steps and r.get("diverged_at") is None]
    L += ["", f"Of the grid's {len(failed)} failed seeds, {len(short)} stopped early because {s['success']:.0%} of "
              f"the validation items were right, then scored below {s['success']} on the test items (the rule's "
              "margin, not the gap; the rule is unchanged)."]
    L += ["", "**What limits each cell** (at the first d above its frontier; diagnostics: medians over the failed "
              "seeds at the end of training, at the query: the cue's input gradient relative to the last "
              "distractor's, and the top layer's saturation; slope: steps to success ∝ d^slope fitted below):", ""]
    sl = result["slopes"]
    L += table(["cell", "frontier", "what limits it", "steps ∝ d^slope"],
               [[n, str(result["frontier"][n]["largest_d"] or "none"),
                 limit_text(cells[n], result["frontier"][n], s, sl[n]),
                 f"{sl[n]['slope']:.2f} ({len(sl[n]['points'])} ds)" if sl[n]["slope"] is not None else "—"]
                for n in grid])
    L += ["", "**Exact Fisher test** (two-sided) of seeds solved, each gated cell against each tanh RNN start, per "
              "d (— where either did not run; with 5 seeds, 5/5 against 0/5 gives p = 0.008, 4/5 against 0/5 "
              "p = 0.048):", ""]
    L += table(["gated cell", "tanh RNN", *(f"d={d}" for d in ds)],
               [[g, ref, *("—" if row[str(d)] is None else f"{row[str(d)]:.3f}" for d in ds)]
                for ref, rows in result["fisher"].items() for g, row in rows.items()])
    L += ["", f"**Does gating move the frontier at equal, fair starts?** {gating_answer(result)}", ""]
    ab = result.get("ablation")
    if ab:
        L += ["**The old protocol, factor by factor** (LSTM forget bias 3, learning rate "
              f"{cells[ab['cells'][0]]['lr']:g}): loss × embedding init at d ∈ "
              f"{{{', '.join(map(str, ab['distances']))}}}. "
              "Diagnostics: medians over seeds, first step → end.", ""]
        rows = []
        for n in ab["cells"]:
            spec = cells[n]["spec"]
            for d in ab["distances"]:
                b = ab["by_d"][n].get(str(d))
                rows.append([n, "4 forms" if spec["loss"] == "forms" else "full vocabulary",
                             "N(0, 1)" if spec["embedding_init"] == "normal" else "±0.1", str(d), cell_text(b, steps),
                             f"{b['mean_accuracy']:.3f}" if ran(b) else "—", diag(b, "lstm_readout_slope", fmt_sat),
                             diag(b, RATIO, fmt_ratio)])
        L += table(["cell", "loss", "embedding init", "d", "seeds solved; median steps", "mean accuracy",
                    "`lstm_readout_slope`", f"`{RATIO}`"], rows)
        L += ["", ablation_text(result)]
        L += ["", "`lstm_readout_slope` = mean 1 − tanh²(c_T), the slope of the readout h = o·tanh(c) (near 0: "
                  f"saturated); `{RATIO}` = ‖∂L/∂e_cue‖ / ‖∂L/∂e_(d−2)‖ (0: the cue's gradient underflowed float32).",
              ""]
    L += ["Diagnostics of the grid (medians over seeds, first step → end; saturation: `lstm_readout_slope` "
          "for the LSTM, `tanh_state_slope` = mean 1 − h_T² for the tanh RNN and the GRU, `relu_zero_share` for "
          "the IRNN):", ""]
    rows = []
    for n in grid:
        by = cells[n]["by_d"]
        rows.append([n, f"`{sat_key(cells[n])}`", *(diag(by.get(str(d)), sat_key(cells[n]), fmt_sat) for d in ds)])
        rows.append(["", f"`{RATIO}`", *(diag(by.get(str(d)), RATIO, fmt_ratio) for d in ds)])
    L += table(["cell", "measure", *(f"d={d}" for d in ds)], rows)
    sweep = result["sweep"]
    L += ["", f"Learning-rate sweep at d = {s['sweep_d']} (seeds solved / run; median steps; mean validation "
              "accuracy):", ""]
    L += table(["cell", *(f"lr {x:g}" for x in s["lrs"]), "chosen"],
               [[n, *(_sweep_text(sweep[n]["by_lr"].get(str(x))) for x in s["lrs"]), f"{sweep[n]['lr']:g}"]
                for n in sweep])
    L += ["", f"![longrange]({assets}/longrange/longrange.png)", "",
          f"![survival]({assets}/longrange/survival.png) ![steps vs d]({assets}/longrange/steps_vs_d.png)", "",
          f"Survival curves as numbers: `{assets}/longrange/survival.csv` (cell, d, step, seeds solved by then).", ""]
    return L


def _sweep_text(v: dict[str, Any] | None) -> str:
    if v is None:
        return "—"
    med = f"{v['median_steps']:.0f}" if v["median_steps"] is not None else "—"
    return f"{v['successes']}/{v['runs']}; {med}; {v['mean_val_accuracy']:.2f}"


def facts(result: dict[str, Any]) -> list[str]:
    """One plain line per grid cell for the report's facts: its frontier and where it stopped."""
    out = []
    for name, c in result["cells"].items():
        if c["role"] != "grid":
            continue
        f = result["frontier"][name]
        beyond = [d for d, b in c["by_d"].items() if b["status"] == "beyond"]
        unrun = [d for d, b in c["by_d"].items() if b["status"] == "not run"]
        out.append(f"Long-range, {name} ({c['start']}): " + (f"≥ {needed(result['settings']['seeds'])}/"
                   f"{result['settings']['seeds']} seeds solved up to d = {f['largest_d']}" if f["largest_d"]
                   else "no d solved by most seeds")
                   + (f"; beyond the frontier (not run): d ∈ {{{', '.join(beyond)}}}" if beyond else "")
                   + (f"; not run (budget): d ∈ {{{', '.join(unrun)}}}" if unrun else "") + ".")
    return out


def load(summary_result: dict[str, Any] | None, folder: Path) -> dict[str, Any] | None:
    """The task's result for the report: <folder>/longrange.json (what `python -m pipeline longrange` last wrote)
    when it is there, else the experiment summary's copy; None when neither is of this format (before issue 28)."""
    import json

    f = folder / "longrange.json"
    for r in ([json.loads(f.read_text(encoding="utf-8"))] if f.is_file() else []) + [summary_result]:
        if r and "frontier" in r:
            return r
    return None


def ablation_text(result: dict[str, Any]) -> str:
    """Each ablation row against the protocol cell, per d: seeds solved and the exact Fisher p (two-sided)."""
    ab, cells = result["ablation"], result["cells"]
    base, out = ab["cells"][0], []
    for d in map(str, ab["distances"]):
        b = ab["by_d"][base][d]
        if not ran(b):
            continue
        parts = []
        for n in ab["cells"][1:]:
            x = ab["by_d"][n][d]
            if ran(x):
                p = fisher_exact([[x["successes"], x["runs"] - x["successes"]],
                                  [b["successes"], b["runs"] - b["successes"]]])[1]
                parts.append(f"{ablation(cells[n]['spec'])} {x['successes']}/{x['runs']} (p = {p:.3f})")
        out.append(f"At d = {d}: {base} {b['successes']}/{b['runs']}; " + "; ".join(parts) + ".")
    return " ".join(out) + " (p: exact Fisher against " + base + ", two-sided.)"
