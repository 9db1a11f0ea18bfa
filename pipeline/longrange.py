"""The long-range task, controlled (DESIGN §8): a verb that must agree with a subject d words back.

    काल <subject> <filler × (d−2)> <completion> <verb>        e.g. d = 4:  काल राणी पुन्हा हळूहळू घरी [गेली]
         ^ cue, position 1                         ^ target, position 1 + d

The past tense of an intransitive Marathi verb agrees with its subject's gender: masculine subject -> गेला / आला …,
feminine -> गेली / आली …. The completion word right before the target says which verb; only the subject says which
form. Fillers are gender-invariant adverbs drawn from one pool, independently of the subject: the subject is the
only token before the target that depends on the class (`example` draws the same random numbers for both genders,
which the tests check). Answering needs the gender carried over d steps; chance is 1/2 (the two forms of the verb).

Word level with a closed vocabulary (the task tests the recurrence, not the tokenizer): every word is one id of its
own `RecurrentLM`. Training examples are generated fresh at every step from `seed` (an endless stream, the same for
every model); the test set comes from a separate seed, n_test per distance, exactly balanced by gender. Every model
gets the same number of steps; each step is one batch of a single d, cycling through the distances, so every
distance gets the same share of the budget. The loss is taken at the target position only; full BPTT over the
whole sequence (≤ d + 2 words).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.recurrent import RecurrentLM
from pipeline.gradients import _pyplot, _save, decay_rate, gradient_by_distance, half_life

DISTANCES = (2, 5, 10, 20, 50, 100, 200)
START = "काल"
SUBJECTS = {"m": ["मुलगा", "शेतकरी", "राजा", "शिक्षक", "भाऊ", "म्हातारा"],
            "f": ["मुलगी", "आई", "राणी", "शिक्षिका", "बहीण", "म्हातारी"]}
VERBS = [("घरी", "गेला", "गेली"), ("परत", "आला", "आली"), ("मोठ्याने", "हसला", "हसली"),
         ("खाली", "बसला", "बसली"), ("तिथेच", "थांबला", "थांबली")]  # (completion, masculine, feminine)
FILLERS = ["अचानक", "शांतपणे", "हळूहळू", "पुन्हा", "शेवटी", "लगेच", "नेहमीप्रमाणे", "मग", "नंतर", "तेव्हा",
           "सकाळी", "दुपारी", "संध्याकाळी", "रात्री", "आज", "पटकन", "सावकाश", "आनंदाने", "कदाचित", "खरोखर"]
VOCAB = [START, *SUBJECTS["m"], *SUBJECTS["f"], *FILLERS, *(v[0] for v in VERBS), *(v[1] for v in VERBS),
         *(v[2] for v in VERBS)]
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
CHANCE = 0.5

# The models of the grid: the cell and what sets it apart. All share the sizes given to `run_longrange`.
MODELS: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh"},
    "irnn": {"cell": "rnn_relu", "init": "identity"},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True},
    "gru": {"cell": "gru"},
    "lstm": {"cell": "lstm"},
    "rnn_tanh_noclip": {"cell": "rnn_tanh", "clip": None},
}


def example(rng: random.Random, d: int, gender: str) -> tuple[list[str], list[str]]:
    """(words, [masculine, feminine] candidates); words[-1] is the target, words[1] the cue, d apart.

    The random draws do not depend on `gender`: with the same rng state, the two genders give sequences that differ
    only at the cue and the target."""
    if d < 2:
        raise ValueError(f"distance {d}: the task needs d >= 2 (subject, completion word, verb)")
    subject = rng.randrange(len(SUBJECTS["m"]))
    completion, masc, fem = VERBS[rng.randrange(len(VERBS))]
    fillers = [FILLERS[rng.randrange(len(FILLERS))] for _ in range(d - 2)]
    target = masc if gender == "m" else fem
    return [START, SUBJECTS[gender][subject], *fillers, completion, target], [masc, fem]


def encode(words: list[str]) -> list[int]:
    return [WORD_ID[w] for w in words]


def batch(rng: random.Random, d: int, n: int, balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, d+1) inputs, y (n,) target ids, cand (n, 2) ids of [masculine, feminine]."""
    rows, cands = [], []
    for k in range(n):
        gender = ("m", "f")[k % 2] if balanced else rng.choice("mf")
        words, c = example(rng, d, gender)
        rows.append(encode(words))
        cands.append(encode(c))
    ids = torch.tensor(rows)  # (n, d+2): START cue fillers completion target
    return ids[:, :-1], ids[:, -1], torch.tensor(cands)


def make_test_set(seed: int, distances=DISTANCES, n: int = 200) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed, balanced test batches per distance, from a seed stream apart from training's."""
    rng = random.Random(f"longrange-test-{seed}")
    return {d: batch(rng, d, n, balanced=True) for d in distances}


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def build(spec: dict[str, Any], embedding_dim: int, hidden_dim: int) -> RecurrentLM:
    return RecurrentLM(len(VOCAB), spec["cell"], embedding_dim, hidden_dim, spec.get("num_layers", 1), 0.0,
                       tie_weights=False, init=spec.get("init", "default"), residual=spec.get("residual", False))


@torch.no_grad()
def accuracy(model: RecurrentLM, tests: dict[int, tuple]) -> dict[int, dict[str, Any]]:
    """Per distance: the target form must score above the other form of the same verb."""
    model.eval()
    out = {}
    for d, (x, y, cand) in tests.items():
        features, _ = model(x)
        lp = model.log_probs(features[:, -1:])[:, 0]  # (n, V)
        pick = cand.gather(1, lp.gather(1, cand).argmax(1, keepdim=True)).squeeze(1)  # (n,)
        correct, n = int((pick == y).sum()), len(y)
        low, high = wilson(correct, n)
        out[d] = {"n": n, "correct": correct, "accuracy": correct / n, "low": low, "high": high}
    model.train()
    return out


def train_one(name: str, spec: dict[str, Any], steps: int, seed: int, distances, tests, batch_size: int,
              embedding_dim: int, hidden_dim: int, lr: float, clip: float | None) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build(spec, embedding_dim, hidden_dim)
    grad_windows = torch.cat([tests[max(distances)][0][:64], tests[max(distances)][1][:64, None]], 1)
    g_init = gradient_by_distance(model, grad_windows)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    clip = spec.get("clip", clip)
    rng = random.Random(f"longrange-train-{seed}")  # the same training stream for every model
    order = list(distances)
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        x, y, _ = batch(rng, order[step % len(order)], batch_size)
        features, _ = model(x)  # (B, d+1, H); full BPTT over the sequence
        loss = model.loss(features[:, -1:], y[:, None])  # the target position only
        opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    g_trained = gradient_by_distance(model, grad_windows)
    tail = [v for v in losses[-len(order) * 5:] if math.isfinite(v)]
    return {"spec": spec, "parameters": sum(p.numel() for p in model.parameters()), "steps": steps,
            "seconds": round(seconds, 2), "final_loss": float(np.mean(tail)) if tail else math.nan,
            "by_d": accuracy(model, tests),
            "gradient": {when: {"g": g.tolist(), "decay_rate": decay_rate(g), "half_life": half_life(decay_rate(g))}
                         for when, g in (("init", g_init), ("trained", g_trained))}}


def run_longrange(cells, budget_steps: int, seed: int, out_dir: str | Path, *, distances=DISTANCES,
                  batch_size: int = 32, embedding_dim: int = 32, hidden_dim: int = 64, lr: float = 2e-3,
                  clip: float | None = 1.0, n_test: int = 200, log=print) -> dict[str, Any]:
    """Train every model in `cells` (names in MODELS) for `budget_steps` steps; accuracy per d; PNG + JSON."""
    unknown = [c for c in cells if c not in MODELS]
    if unknown:
        raise ValueError(f"unknown long-range model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if budget_steps < 1:
        raise ValueError(f"budget_steps={budget_steps}: give at least one step")
    tests = make_test_set(seed, distances, n_test)
    result: dict[str, Any] = {
        "settings": {"budget_steps": budget_steps, "seed": seed, "distances": list(distances),
                     "batch_size": batch_size, "embedding_dim": embedding_dim, "hidden_dim": hidden_dim,
                     "optimizer": "adam", "lr": lr, "clip": clip, "n_test": n_test, "vocab": len(VOCAB),
                     "loss": "target position only"},
        "chance": CHANCE, "models": {}}
    for name in cells:
        r = train_one(name, MODELS[name], budget_steps, seed, distances, tests, batch_size, embedding_dim,
                      hidden_dim, lr, clip)
        result["models"][name] = r
        log(f"{name:>18} " + " ".join(f"d{d}={r['by_d'][d]['accuracy']:.2f}" for d in distances)
            + f"  ({r['seconds']:.0f} s)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "longrange.json").write_text(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=True))
    result["plot"] = str(plot_longrange(result, out / "longrange.png"))
    return result


def format_table(result: dict[str, Any]) -> str:
    ds = result["settings"]["distances"]
    lines = [f"{'model':>18} {'params':>7} " + " ".join(f"{'d=' + str(d):>17}" for d in ds)]
    for name, r in result["models"].items():
        cells = [f"{b['accuracy']:.2f} [{b['low']:.2f},{b['high']:.2f}]" for b in (r["by_d"][d] for d in ds)]
        lines.append(f"{name:>18} {r['parameters']:>7} " + " ".join(f"{c:>17}" for c in cells))
    lines.append(f"chance {result['chance']}, n = {result['settings']['n_test']} per d, 95 % Wilson intervals")
    return "\n".join(lines)


def plot_longrange(result: dict[str, Any], path: str | Path) -> Path:
    """Left: accuracy against d (log x) with 95 % intervals and chance. Right: the models' gradient by distance."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ds = result["settings"]["distances"]
    for i, (name, r) in enumerate(result["models"].items()):
        acc = np.array([r["by_d"][d]["accuracy"] for d in ds])
        err = np.array([[acc[j] - r["by_d"][d]["low"], r["by_d"][d]["high"] - acc[j]] for j, d in enumerate(ds)]).T
        err = np.clip(err, 0.0, None)  # rounding at 0 / 1
        ax.errorbar(ds, acc, yerr=err, marker="o", capsize=3, color=f"C{i}", label=name)
        for when, style in (("init", "--"), ("trained", "-")):
            g = np.asarray(r["gradient"][when]["g"], dtype=np.float64)
            ax2.semilogy(np.arange(len(g)), np.where(g > 0, g, np.nan), style, color=f"C{i}",
                         label=f"{name} {when}" if when == "trained" else None)
    ax.axhline(result["chance"], color="grey", ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(ds, [str(d) for d in ds])
    ax.set_ylim(0, 1.02)
    ax.set(xlabel="distance d (words from the subject to the verb)", ylabel="accuracy (verb form)",
           title=f"long-range agreement, {result['settings']['budget_steps']} steps per model")
    ax.legend(fontsize=7)
    ax2.set(xlabel="distance d (words back from the verb)", ylabel="mean ‖∂L_T / ∂e_{T−d}‖",
            title="gradient by distance on d = %d sequences (dashed: init)" % max(ds))
    ax2.legend(fontsize=7)
    return _save(fig, Path(path))
