"""The long-range task, controlled (DESIGN §8): does a cell *learn* a dependency across a gap of d words?

    position   0        1 … d−2                         d−1        d
    words      <cue>    <distractor> × (d−2)            <query>    [verb form]      e.g. d = 5:
               मुली      बागेत  मुलाबरोबर  अचानक           घरी        [गेल्या]
               ^ subject noun: class = gender × number   ^ says which verb; the cue says which of its 4 forms

    x = words[:, :d] (B, d) -> features[:, d−1] -> loss against words[:, d]   (the query position only; full BPTT)

The cue is a subject noun of one of four classes (masculine/feminine × singular/plural, 6 nouns each); the past tense
of an intransitive verb agrees with it: गेला / गेली / गेले / गेल्या. The query word right before the target says
which of 8 verbs follows, only the cue says which form; the prediction is the argmax over the query verb's 4 forms
(chance 1/4). Distractors are drawn independently of the class, uniformly at every position of every example, from a
pool of 232 words: 112 invariant adverbs, place words and postpositions, and 120 *attractors* — the 12 cue lexemes
of both genders in the oblique singular and plural (मुलाबरोबर, मुलींना, राण्यांच्या …), nouns of every class. The cue
is the only class-dependent token before the target (`draws` never looks at the class; the tests check it). Word
level, closed vocabulary (296 words): one id per word in a `RecurrentLM`; the task tests the recurrence, not the
tokenizer. Success is 0.95 of 4-way choices, never lowered; a task that proves too easy gets harder (more classes,
more varied distractors), its scoring stays.

Protocol (Hochreiter & Schmidhuber 1997, exp. 2): one fresh model per (cell, d, seed), trained at that d only, so no
latch learned at short gaps can be carried to long ones. A seed sets the initialisation and the three data streams
(training, validation, test; numpy generators keyed by (seed, d, stream)); the cells of one seed see the same data.
Adam, batch `batch_size`, at most `steps` steps; every `eval_every` steps the model answers `n_test` validation
items and stops once it gets ≥ 0.95 of them. Success = accuracy ≥ 0.95 on `n_test` fresh test items (balanced over
the classes), the stopping step is its steps to success. Per cell and d: the success rate over seeds with its Wilson
interval, the median steps to success (a failed seed counts as never: the median is "> steps" when half fail), the
mean final accuracy. The cells differ in the recurrence only (one hidden size); the LSTM at forget-gate bias 1 and
3, the GRU at update-gate bias 1 and 3 (`RecurrentLM(gate_bias=…)`): at long d the keep gate's initial bias decides
whether any gradient crosses the gap. Jobs run in `workers` spawned processes with one torch thread each; a result
is reused when its settings hash matches (so `python -m pipeline longrange` run first saves the experiment's time).
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.recurrent import RecurrentLM
from pipeline.evaluation.intervals import (
    wilson,  # workers import this module: nothing here may pull in Lightning
)

CLASSES = ("m.sg", "f.sg", "m.pl", "f.pl")  # the order of every verb's forms below
# (singular, plural, oblique singular, oblique plural)
NOUNS = {"m": [("मुलगा", "मुलगे", "मुला", "मुलां"), ("घोडा", "घोडे", "घोड्या", "घोड्यां"),
               ("कुत्रा", "कुत्रे", "कुत्र्या", "कुत्र्यां"), ("लांडगा", "लांडगे", "लांडग्या", "लांडग्यां"),
               ("राजा", "राजे", "राजा", "राजां"), ("रेडा", "रेडे", "रेड्या", "रेड्यां")],
         "f": [("मुलगी", "मुली", "मुली", "मुलीं"), ("राणी", "राण्या", "राणी", "राण्यां"), ("शेळी", "शेळ्या", "शेळी", "शेळ्यां"),
               ("बहीण", "बहिणी", "बहिणी", "बहिणीं"), ("मैत्रीण", "मैत्रिणी", "मैत्रिणी", "मैत्रिणीं"),
               ("आजी", "आज्या", "आजी", "आज्यां")]}
CUES = [[n[0] for n in NOUNS["m"]], [n[0] for n in NOUNS["f"]], [n[1] for n in NOUNS["m"]], [n[1] for n in NOUNS["f"]]]
VERBS = [("घरी", "गे"), ("परत", "आ"), ("मोठ्याने", "हस"), ("खाली", "बस"), ("तिथेच", "थांब"), ("लवकर", "झोप"),
         ("जोरात", "पळा"), ("ढसाढसा", "रड")]  # (query word, stem): stem + ला / ली / ले / ल्या
QUERIES = [q for q, _ in VERBS]
FORMS = [[s + "ला", s + "ली", s + "ले", s + "ल्या"] for _, s in VERBS]
ADVERBS = ("अचानक शांतपणे हळूहळू पुन्हा शेवटी लगेच नेहमीप्रमाणे मग नंतर तेव्हा सकाळी दुपारी संध्याकाळी रात्री आज काल पटकन "
           "सावकाश आनंदाने कदाचित खरोखर नक्कीच आधी अगदी खूप फार जरा कधीकधी रोज नेहमी मुद्दाम चुपचाप घाईघाईने निवांत एकदम "
           "सरळ उगाच आपोआप वेळेवर उशिरा पहाटे परवा तरीही म्हणून आणि पण किंवा कारण जेव्हा तिथे इथे कुठे सगळीकडे बाहेर आत "
           "पलीकडे अलीकडे").split()
PLACES = ("बागेत शाळेत बाजारात गावात नदीकडे रस्त्यावर घराजवळ डोंगरावर शेतात जंगलात मंदिरात पुलावर झाडाखाली दारात "
          "अंगणात ओढ्याकाठी विहिरीजवळ स्टेशनवर वाड्यात मैदानात तळ्याकाठी बसमधून गाडीतून पावसात उन्हात थंडीत अंधारात "
          "गर्दीत जत्रेत समुद्रावर किनाऱ्यावर शहरात वाटेत कोपऱ्यात खोलीत स्वयंपाकघरात ओसरीवर गोठ्यात रानात टेकडीवर "
          "बरोबर सोबत कडे साठी जवळ मागे पुढे समोर शिवाय पर्यंत पासून विषयी मुळे वरून भोवती").split()
ATTRACTORS = [stem + suffix for g in ("m", "f") for n in NOUNS[g]
              for stem, dative in ((n[2], "ला"), (n[3], "ना"))
              for suffix in (dative, "च्या", "बरोबर", "साठी", "कडे")]
POOL = ADVERBS + PLACES + ATTRACTORS
VOCAB = [w for c in CUES for w in c] + POOL + QUERIES + [w for f in FORMS for w in f]
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
CUE_IDS = np.array([[WORD_ID[w] for w in c] for c in CUES])  # (classes, nouns)
POOL_IDS = np.array([WORD_ID[w] for w in POOL])
QUERY_IDS = np.array([WORD_ID[w] for w in QUERIES])
FORM_IDS = np.array([[WORD_ID[w] for w in f] for f in FORMS])  # (verbs, classes)
CHANCE = 1 / len(CLASSES)
SUCCESS = 0.95  # accuracy on the test items that counts as solved; fixed, like the scoring
TASK = hashlib.sha256(json.dumps([CLASSES, CUES, FORMS, QUERIES, POOL, 1], ensure_ascii=False).encode()).hexdigest()[:12]

# The cells: the recurrence and what sets it apart; all get the same embedding and hidden sizes. The names are
# pipeline.config.LONGRANGE_CELLS (a test keeps them equal).
CELLS: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh"},
    "irnn": {"cell": "rnn_relu", "init": "identity"},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True},
    "gru_z1": {"cell": "gru", "gate_bias": 1.0},
    "gru_z3": {"cell": "gru", "gate_bias": 3.0},
    "lstm_f1": {"cell": "lstm", "gate_bias": 1.0},
    "lstm_f3": {"cell": "lstm", "gate_bias": 3.0},
}
COST = {"rnn_tanh": 1.0, "rnn_relu": 1.0, "lstm": 1.3, "gru": 2.9}  # measured time per step relative to rnn_tanh


# ------------------------------------------------------------------------------------------------ the generator

def draws(rng: np.random.Generator, d: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything random about n examples but their class: (noun (n,), verb (n,), distractors (n, d−2))."""
    if d < 2:
        raise ValueError(f"distance d={d}: the task needs d >= 2 (cue, query word, verb); use d in 2, 3, …")
    return (rng.integers(len(CUES[0]), size=n), rng.integers(len(VERBS), size=n),
            rng.integers(len(POOL), size=(n, d - 2)))


def assemble(cue_class: np.ndarray, target_class: np.ndarray, noun, verb, fill) -> np.ndarray:
    """ids (n, d+1): cue, distractors, query, target."""
    return np.concatenate([CUE_IDS[cue_class, noun][:, None], POOL_IDS[fill], QUERY_IDS[verb][:, None],
                           FORM_IDS[verb, target_class][:, None]], axis=1)


def example(rng: np.random.Generator, d: int, cls: int) -> tuple[list[str], list[str]]:
    """(words (d+1), the query verb's 4 forms); words[0] is the cue, words[d] the target."""
    noun, verb, fill = draws(rng, d, 1)
    ids = assemble(np.array([cls]), np.array([cls]), noun, verb, fill)[0]
    return [VOCAB[i] for i in ids], FORMS[int(verb[0])]


def batch(rng: np.random.Generator, d: int, n: int, balanced: bool = False,
          independent_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, d) inputs, y (n,) target ids, cand (n, 4) the query verb's forms. `balanced`: n/4 items per class;
    `independent_labels`: the target's class drawn apart from the cue's (the chance guard)."""
    k = len(CLASSES)
    cls = np.arange(n) % k if balanced else rng.integers(k, size=n)
    target = rng.integers(k, size=n) if independent_labels else cls
    noun, verb, fill = draws(rng, d, n)
    ids = torch.from_numpy(assemble(cls, target, noun, verb, fill))  # (n, d+1)
    return ids[:, :-1], ids[:, -1], torch.from_numpy(FORM_IDS[verb])


def stream(seed: int, d: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, d, ("train", "validation", "test").index(name)])


# ------------------------------------------------------------------------------------------------------ one job

def build(spec: dict[str, Any], embedding_dim: int, hidden_dim: int) -> RecurrentLM:
    return RecurrentLM(len(VOCAB), spec["cell"], embedding_dim, hidden_dim, spec.get("num_layers", 1), 0.0,
                       tie_weights=False, init=spec.get("init", "default"), residual=spec.get("residual", False),
                       gate_bias=spec.get("gate_bias"))


@torch.no_grad()
def correct(model: RecurrentLM, x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, chunk: int = 256) -> int:
    """How many targets score highest among their verb's forms."""
    model.eval()
    right = 0
    for i in range(0, len(y), chunk):
        features, _ = model(x[i:i + chunk])
        lp = model.log_probs(features[:, -1:])[:, 0]  # (n, V)
        c = cand[i:i + chunk]
        right += int((c.gather(1, lp.gather(1, c).argmax(1, keepdim=True)).squeeze(1) == y[i:i + chunk]).sum())
    model.train()
    return right


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """One fresh model of `job['cell']` trained at `job['d']` with `job['seed']`; its test accuracy."""
    torch.set_num_threads(1)
    d, seed, s = job["d"], job["seed"], job["settings"]
    torch.manual_seed(seed)
    model = build(CELLS[job["cell"]], s["embedding_dim"], s["hidden_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    train, n = stream(seed, d, "train"), s["n_test"]
    val = batch(stream(seed, d, "validation"), d, n, balanced=True)
    test = batch(stream(seed, d, "test"), d, n, balanced=True)
    t0, step, losses, diverged, val_acc = time.perf_counter(), 0, [], None, None
    for step in range(1, s["steps"] + 1):
        x, y, _ = batch(train, d, s["batch_size"], independent_labels=job.get("independent_labels", False))
        features, _ = model(x)  # (B, d, H), full BPTT
        loss = model.loss(features[:, -1:], y[:, None])  # the query position only
        if not torch.isfinite(loss):
            diverged = step
            break
        opt.zero_grad()
        loss.backward()
        if s["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip"])
        opt.step()
        losses.append(float(loss.detach()))
        if step % s["eval_every"] == 0:
            val_acc = correct(model, *val) / n
            if val_acc >= SUCCESS:
                break
    right = correct(model, *test)
    low, high = wilson(right, n)
    ok = right / n >= SUCCESS
    out = {"cell": job["cell"], "d": d, "seed": seed, "steps_run": step, "steps_to_success": step if ok else None,
           "success": ok, "n": n, "correct": right, "accuracy": right / n, "low": low, "high": high,
           "val_accuracy": val_acc, "diverged_at": diverged, "seconds": round(time.perf_counter() - t0, 2),
           "final_loss": float(np.mean(losses[-20:])) if losses else math.nan,
           "parameters": sum(p.numel() for p in model.parameters())}
    if job.get("gradient"):  # measured in the parent process (pipeline.experiments.gradients imports Lightning)
        out["weights"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    return out


def gradient_curves(job: dict[str, Any], weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """g(d) on 64 of the job's test sequences, at initialisation (rebuilt from the seed) and trained."""
    from pipeline.experiments.gradients import (
        decay_rate,
        gradient_by_distance,
        half_life,
    )

    s = job["settings"]
    x, y, _ = batch(stream(job["seed"], job["d"], "test"), job["d"], s["n_test"], balanced=True)
    torch.manual_seed(job["seed"])
    model = build(CELLS[job["cell"]], s["embedding_dim"], s["hidden_dim"])
    out = {}
    for when in ("init", "trained"):
        if when == "trained":
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        g = gradient_by_distance(model, x[:64], y[:64])
        out[when] = {"g": g.tolist(), "decay_rate": decay_rate(g), "half_life": half_life(decay_rate(g))}
    return out


# ------------------------------------------------------------------------------------------------ the whole grid

def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def summarise(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """One (cell, d): success rate over seeds [Wilson], median steps to success (failures count as never)."""
    k, n = sum(r["success"] for r in runs), len(runs)
    low, high = wilson(k, n)
    median = statistics.median([r["steps_to_success"] if r["success"] else math.inf for r in runs])
    return {"seeds": runs, "successes": k, "runs": n, "success_rate": k / n, "low": low, "high": high,
            "median_steps": median if math.isfinite(median) else None, "budget_steps": steps,
            "mean_accuracy": float(np.mean([r["accuracy"] for r in runs]))}


def run_longrange(cells, out_dir: str | Path, *, distances=(5, 10, 20, 50, 100, 200), seeds: int = 3,
                  steps: int = 1500, seed: int = 0, eval_every: int = 50, batch_size: int = 32,
                  embedding_dim: int = 32, hidden_dim: int = 64, lr: float = 2e-3, clip: float | None = 1.0,
                  n_test: int = 500, workers: int = 2, reuse: bool = True, log=print) -> dict[str, Any]:
    """Every (cell, d, seed) a fresh model; per cell and d the summary; longrange.json + longrange.png in out_dir."""
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"unknown long-range cell {unknown[0]!r}; choose from {', '.join(CELLS)}")
    if not cells:
        raise ValueError(f"long-range cells {list(cells)}: give at least one of {', '.join(CELLS)}")
    for name, v, lo, fix in (("steps", steps, 1, "give at least one training step"),
                             ("seeds", seeds, 1, "give at least one seed"),
                             ("eval_every", eval_every, 1, "evaluate at least every step"),
                             ("n_test", n_test, len(CLASSES), f"give at least {len(CLASSES)} test items"),
                             ("workers", workers, 1, "use at least one worker process")):
        if v < lo:
            raise ValueError(f"long-range {name}={v}: {fix}")
    if not distances or min(distances) < 2:
        raise ValueError(f"long-range distances {list(distances)}: each d must be >= 2 (cue, query word, verb)")
    settings = {"cells": {c: CELLS[c] for c in cells}, "distances": sorted(set(distances)), "seeds": seeds,
                "first_seed": seed, "steps": steps, "eval_every": eval_every, "batch_size": batch_size,
                "embedding_dim": embedding_dim, "hidden_dim": hidden_dim, "optimizer": "adam", "lr": lr,
                "clip": clip, "n_test": n_test, "success": SUCCESS, "task": TASK}
    h = settings_hash(settings)
    out = Path(out_dir)
    f = out / "longrange.json"
    if reuse and f.is_file():
        old = json.loads(f.read_text(encoding="utf-8"))
        if old.get("settings_hash") == h:
            log(f"    long-range: reusing {f} (same settings, hash {h})")
            old["plot"] = str(out / "longrange.png") if (out / "longrange.png").is_file() else \
                str(plot_longrange(old, out / "longrange.png"))
            return old
    ds = settings["distances"]
    jobs = [{"cell": c, "d": d, "seed": seed + i, "settings": settings, "gradient": d == ds[-1] and i == 0}
            for c in cells for d in ds for i in range(seeds)]
    jobs.sort(key=lambda j: -j["d"] * COST[CELLS[j["cell"]]["cell"]] * CELLS[j["cell"]].get("num_layers", 1))
    t0, results = time.perf_counter(), []

    def done(r: dict[str, Any], job: dict[str, Any]) -> None:
        if "weights" in r:
            r["gradient"] = gradient_curves(job, r.pop("weights"))
        results.append(r)
        log(f"    [{len(results):>3}/{len(jobs)}] {r['cell']:>17} d={r['d']:<4} seed {r['seed']}: "
            f"{r['accuracy']:.3f} after {r['steps_run']} steps" + (" solved" if r["success"] else "")
            + f" ({r['seconds']:.0f} s)")

    if workers == 1:
        for j in jobs:
            done(train_job(j), j)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_job, j): j for j in jobs}
            for fut in as_completed(futures):
                done(fut.result(), futures[fut])
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {"settings": settings, "settings_hash": h, "chance": CHANCE, "classes": list(CLASSES),
                              "vocab": len(VOCAB), "pool": len(POOL), "attractors": len(ATTRACTORS),
                              "timing": {"wall_seconds": round(wall, 1), "workers": workers,
                                         "job_seconds": round(sum(r["seconds"] for r in results), 1)},
                              "cells": {}}
    for c in cells:
        mine = [r for r in results if r["cell"] == c]
        grad = next((r.pop("gradient") for r in mine if "gradient" in r), None)
        result["cells"][c] = {"spec": CELLS[c], "parameters": mine[0]["parameters"], "gradient": grad,
                              "by_d": {str(d): summarise(sorted((r for r in mine if r["d"] == d),
                                                                key=lambda r: r["seed"]), steps) for d in ds}}
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=True))
    result["plot"] = str(plot_longrange(result, out / "longrange.png"))
    return result


def format_table(result: dict[str, Any]) -> str:
    """Per cell × d: successes/seeds [Wilson], median steps to success, mean final accuracy."""
    s = result["settings"]
    ds = s["distances"]
    lines = [f"{'cell':>17} " + " ".join(f"{'d=' + str(d):>24}" for d in ds)]
    for name, c in result["cells"].items():
        cols = []
        for d in ds:
            b = c["by_d"][str(d)]
            med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f">{s['steps']}"
            cols.append(f"{b['successes']}/{b['runs']} [{b['low']:.2f},{b['high']:.2f}] {med:>5} {b['mean_accuracy']:.2f}")
        lines.append(f"{name:>17} " + " ".join(f"{x:>24}" for x in cols))
    lines.append(f"successes/seeds [95 % Wilson], median steps to success (> {s['steps']}: half or more failed), "
                 f"mean test accuracy (n = {s['n_test']}, chance {result['chance']:.2f}, success >= {SUCCESS})")
    return "\n".join(lines)


def plot_longrange(result: dict[str, Any], path: str | Path) -> Path:
    """Left: seeds solved per cell × d (colour: success rate; text: k/n, [Wilson], median steps). Middle: final
    accuracy by d, seeds as dots. Right: gradient by distance at the longest d, at init (dashed) and trained."""
    from pipeline.experiments.gradients import _pyplot, _save

    plt = _pyplot()
    fig, (ax, ax1, ax2) = plt.subplots(1, 3, figsize=(19, 5.2), gridspec_kw={"width_ratios": [1.25, 1, 1]})
    s = result["settings"]
    ds, names = s["distances"], list(result["cells"])
    rate = np.array([[result["cells"][n]["by_d"][str(d)]["success_rate"] for d in ds] for n in names])  # (cells, ds)
    ax.imshow(rate, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", alpha=0.5)
    for i, n in enumerate(names):
        for j, d in enumerate(ds):
            b = result["cells"][n]["by_d"][str(d)]
            med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f">{s['steps']}"
            ax.text(j, i, f"{b['successes']}/{b['runs']} [{b['low']:.2f}, {b['high']:.2f}]\n{med} steps",
                    ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(ds)), [str(d) for d in ds])
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="distance d (each model trained at that d only)",
           title=f"seeds solved (test accuracy ≥ {SUCCESS}) within {s['steps']} steps; median steps")
    jitter = np.linspace(-0.06, 0.06, len(names))
    for i, (name, c) in enumerate(result["cells"].items()):
        b = [c["by_d"][str(d)] for d in ds]
        x = np.array(ds, dtype=float) * np.exp(jitter[i])  # side by side on the log axis
        ax1.plot(x, [v["mean_accuracy"] for v in b], marker="o", ms=4, color=f"C{i}", label=name)
        for x_, v in zip(x, b):
            ax1.scatter([x_] * len(v["seeds"]), [r["accuracy"] for r in v["seeds"]], s=9, color=f"C{i}", alpha=0.5)
        for when, style in (("init", "--"), ("trained", "-")):
            if c.get("gradient"):
                g = np.asarray(c["gradient"][when]["g"], dtype=np.float64)
                ax2.semilogy(np.arange(len(g)), np.where(g > 0, g, np.nan), style, color=f"C{i}",
                             label=name if when == "trained" else None)
    ax1.set_xscale("log")
    ax1.set_xticks(ds, [str(d) for d in ds])
    ax1.set_ylim(-0.02, 1.02)
    ax1.axhline(result["chance"], color="grey", ls=":", label="chance")
    ax1.axhline(SUCCESS, color="grey", ls="--", lw=0.8)
    ax1.set(xlabel="distance d", ylabel="test accuracy (verb form, 1 of 4)", title="final accuracy: mean; dots: seeds")
    ax2.set(xlabel="distance d (words back from the query)", ylabel="mean ‖∂L_T / ∂e_{T−d}‖",
            title=f"gradient by distance at d = {ds[-1]}, seed {s['first_seed']} (dashed: init)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------------------------------ command

def config_args(cfg) -> dict[str, Any]:
    """run_longrange's keyword arguments from a Config's `experiment.longrange_*` keys."""
    e = cfg.experiment
    return {"cells": list(e.longrange_cells), "distances": tuple(e.longrange_distances), "seeds": e.longrange_seeds,
            "steps": e.longrange_steps, "seed": cfg.train.seed, "eval_every": e.longrange_eval_every,
            "batch_size": e.longrange_batch, "embedding_dim": e.longrange_embedding, "hidden_dim": e.longrange_hidden,
            "lr": e.longrange_lr, "n_test": e.longrange_n_test, "workers": e.longrange_workers}


def cli(args, cfg) -> int:
    """`python -m pipeline longrange`: the task alone; JSON + PNG into --out (default <report_dir>/experiment/longrange)."""

    torch.set_num_threads(1)
    out = Path(args.out) if args.out else Path(cfg.experiment.report_dir) / "experiment" / "longrange"
    t0 = time.perf_counter()
    result = run_longrange(out_dir=out, **config_args(cfg))
    print(format_table(result))
    print(f"{out / 'longrange.json'} and {result['plot']} ({time.perf_counter() - t0:.0f} s; "
          f"{result['timing']['wall_seconds']:.0f} s when trained)")
    return 0
