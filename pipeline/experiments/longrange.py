"""The long-range task, controlled (DESIGN §8): does a cell *learn* a dependency across a gap of d words?

    position   0        1 … d−2                         d−1        d
    words      <cue>    <distractor> × (d−2)            <query>    [verb form]      e.g. d = 5:
               मुली      बागेत  मुलाबरोबर  अचानक           घरी        [गेल्या]
               ^ subject noun: class = gender × number   ^ says which verb; the cue says which of its 4 forms

    x = words[:, :d] (B, d) -> features[:, d−1] -> decoder rows of the verb's 4 forms (B, 4) -> loss against the
    target's form                                    (the query position only; full BPTT)

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

What is trained is what is scored (protocol 2). The loss is the cross-entropy over the query verb's 4 forms, read
from the LM's own decoder rows (the full-vocabulary log-probabilities at the query, gathered at the 4 form ids,
renormalised). The embedding starts from `nn.Embedding`'s N(0, 1), not the word LM's ±0.1, which was meant for wide
embeddings and makes a 32-dimensional cue a tiny write. Protocol 1 trained every cell through the whole 296-word
softmax with a zero decoder bias from ±0.1 embeddings: then a model must first learn "the target is one of this
verb's 4 forms" (4.3 of the 5.7 initial nats do not depend on the cue), and an LSTM learns it by piling it up in its
cell: |c| grows, the readout h = o·tanh(c) saturates (its slope 1 − tanh²(c) falls towards 0), and the cue's
gradient, which crosses the gap through c and so through that slope, vanishes beside the last distractor's, which
also reaches the loss through the output gate. Under protocol 1 both LSTMs failed from d = 10 on: a vanishing
gradient from saturation, caused by the loss, not by the gap (the ablation row shows it beside `lstm_f3`). That
protocol stays as one ablation row, `lstm_f3_fullvocab` (full-vocabulary loss, ±0.1 embeddings, otherwise
`lstm_f3`). It takes forget bias 3 because the review that found the artifact measured it there, and because the
larger keep gate is the LSTM's better chance: a failure of that row cannot be laid on the forget gate.

Mechanism, measured beside the result: per (cell, d, seed), at the first step (before any update) and at the end of
training, on the first `diagnostic_items` validation items, (a) how saturated the top layer is at the query:
`lstm_readout_slope` = mean over units and items of 1 − tanh²(c_T) (the slope of h = o·tanh(c) in c);
`tanh_state_slope` = mean 1 − h_T² (tanh RNN: its last tanh's slope; GRU: h is a mix of tanh outputs);
`relu_zero_share` = the share of IRNN units at 0; and (b) `cue_grad_ratio` = mean ‖∂L/∂e_cue‖ / mean
‖∂L/∂e_{d−2}‖, the cue's input-embedding gradient relative to the last distractor's, L the loss the cell trains
at the query. Per cell and d the medians over seeds go into the JSON, the table and the plot.

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
is reused when its settings hash matches (the settings carry `protocol`, so a protocol-1 result is never reused;
`python -m pipeline longrange` run first saves the experiment's time).
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
import torch.nn.functional as F

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

PROTOCOL = 2  # 1: full-vocabulary loss, ±0.1 embeddings, no diagnostics; 2: see the docstring. In the settings hash.
DIAGNOSTIC_ITEMS = 64  # validation items the diagnostics are measured on (the first of the fixed validation set)

# The cells: the recurrence and what sets it apart; all get the same embedding and hidden sizes. `loss`: "forms"
# (cross-entropy over the query verb's 4 forms) or "vocab" (over all 296 words); `embedding_init`: "normal"
# (N(0, 1)) or "uniform" (±0.1, RecurrentLM's word-LM init). (`init` is RecurrentLM's recurrent init.) The names are
# pipeline.config.LONGRANGE_CELLS (a test keeps them equal).
_NEW = {"loss": "forms", "embedding_init": "normal"}
CELLS: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh", **_NEW},
    "irnn": {"cell": "rnn_relu", "init": "identity", **_NEW},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True, **_NEW},
    "gru_z1": {"cell": "gru", "gate_bias": 1.0, **_NEW},
    "gru_z3": {"cell": "gru", "gate_bias": 3.0, **_NEW},
    "lstm_f1": {"cell": "lstm", "gate_bias": 1.0, **_NEW},
    "lstm_f3": {"cell": "lstm", "gate_bias": 3.0, **_NEW},
    # the ablation: protocol 1 (see the docstring for why forget bias 3)
    "lstm_f3_fullvocab": {"cell": "lstm", "gate_bias": 3.0, "loss": "vocab", "embedding_init": "uniform"},
}
# what each cell's saturation field measures at the query (top layer): see the docstring
SATURATION = {"lstm": "lstm_readout_slope", "rnn_tanh": "tanh_state_slope", "gru": "tanh_state_slope",
              "rnn_relu": "relu_zero_share"}
RATIO = "cue_grad_ratio"
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
    model = RecurrentLM(len(VOCAB), spec["cell"], embedding_dim, hidden_dim, spec.get("num_layers", 1), 0.0,
                        tie_weights=False, init=spec.get("init", "default"), residual=spec.get("residual", False),
                        gate_bias=spec.get("gate_bias"))
    if spec["embedding_init"] == "normal":  # nn.Embedding's own default; "uniform" keeps RecurrentLM's ±0.1
        torch.nn.init.normal_(model.embedding.weight, 0.0, 1.0)
    elif spec["embedding_init"] != "uniform":
        raise ValueError(f"embedding_init={spec['embedding_init']!r} is not 'normal' or 'uniform'")
    return model


def task_loss(model: RecurrentLM, features: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, loss: str,
              reduction: str = "mean") -> torch.Tensor:
    """features (n, H) at the query -> cross-entropy of the target y (n,): over the query verb's forms cand (n, 4)
    ("forms": the decoder's log-probabilities of the 4 forms, renormalised) or over the whole vocabulary ("vocab")."""
    lp = model.log_probs(features[:, None])[:, 0]  # (n, V)
    if loss == "vocab":
        return F.nll_loss(lp, y, reduction=reduction)
    if loss != "forms":
        raise ValueError(f"loss={loss!r} is not 'forms' or 'vocab'")
    return F.cross_entropy(lp.gather(1, cand), (cand == y[:, None]).int().argmax(1), reduction=reduction)  # (n, 4)


def saturation(cell: str, state) -> float:
    """The top layer's saturation at the last position, named by SATURATION[cell] (see the docstring)."""
    if cell == "lstm":
        return float((1 - torch.tanh(state[1][-1].detach()) ** 2).mean())  # c_T (n, H)
    h = state[-1].detach()  # (n, H)
    return float((h == 0).float().mean()) if cell == "rnn_relu" else float((1 - h ** 2).mean())


def diagnose(model: RecurrentLM, spec: dict[str, Any], x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor,
             curve: bool = False) -> dict[str, Any]:
    """On items x (n, d): {SATURATION[cell]: …, RATIO: mean ‖∂L/∂e_0‖ / mean ‖∂L/∂e_{d−2}‖ (None when d < 3)}, L
    the cell's own loss at the query; with `curve`, also "g": the mean gradient norm by distance back from the query
    (index k = position d−1−k), as in pipeline.experiments.gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            e = model.embed(x).detach().requires_grad_(True)  # (n, d, E)
            s0 = model.init_state(x.size(0))  # zeros in the embeddings' dtype (float64 in tests)
            s0 = tuple(t.to(e.dtype) for t in s0) if isinstance(s0, tuple) else s0.to(e.dtype)
            features, state = model.recur(e, s0)  # (n, d, H)
            # the loss summed over items: each item's gradient is its own
            loss = task_loss(model, features[:, -1], y, cand, spec["loss"], reduction="sum")
            (grad,) = torch.autograd.grad(loss, e)  # (n, d, E)
    finally:
        model.train(was_training)
    g = grad.norm(dim=-1).mean(0).double()  # (d,) by position
    d = x.size(1)
    out: dict[str, Any] = {SATURATION[spec["cell"]]: saturation(spec["cell"], state),
                           RATIO: float(g[0] / g[d - 2]) if d >= 3 else None}
    if curve:
        out["g"] = g.flip(0).tolist()
    return out


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
    """One fresh model of `job['cell']` trained at `job['d']` with `job['seed']`; its test accuracy and diagnostics."""
    torch.set_num_threads(1)
    d, seed, s = job["d"], job["seed"], job["settings"]
    spec = CELLS[job["cell"]]
    torch.manual_seed(seed)
    model = build(spec, s["embedding_dim"], s["hidden_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    train, n = stream(seed, d, "train"), s["n_test"]
    val = batch(stream(seed, d, "validation"), d, n, balanced=True)
    test = batch(stream(seed, d, "test"), d, n, balanced=True)
    probe = tuple(t[:s.get("diagnostic_items", DIAGNOSTIC_ITEMS)] for t in val)  # balanced too: classes cycle
    first = diagnose(model, spec, *probe, curve=job.get("gradient", False))
    t0, cpu0, step, losses, diverged, val_acc = time.perf_counter(), time.process_time(), 0, [], None, None
    for step in range(1, s["steps"] + 1):
        x, y, cand = batch(train, d, s["batch_size"], independent_labels=job.get("independent_labels", False))
        features, _ = model(x)  # (B, d, H), full BPTT
        loss = task_loss(model, features[:, -1], y, cand, spec["loss"])  # the query position only
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
    end = diagnose(model, spec, *probe, curve=job.get("gradient", False))
    low, high = wilson(right, n)
    ok = right / n >= SUCCESS
    out = {"cell": job["cell"], "d": d, "seed": seed, "steps_run": step, "steps_to_success": step if ok else None,
           "success": ok, "n": n, "correct": right, "accuracy": right / n, "low": low, "high": high,
           "val_accuracy": val_acc, "diverged_at": diverged, "seconds": round(time.perf_counter() - t0, 2),
           "cpu_seconds": round(time.process_time() - cpu0, 2),  # apart from other processes' load
           "final_loss": float(np.mean(losses[-20:])) if losses else math.nan,
           "parameters": sum(p.numel() for p in model.parameters()),
           "diagnostics": {"first": {k: v for k, v in first.items() if k != "g"},
                           "end": {k: v for k, v in end.items() if k != "g"}}}
    if job.get("gradient"):
        out["g"] = {"init": first["g"], "trained": end["g"]}
    return out


def gradient_curves(g: dict[str, list[float]]) -> dict[str, Any]:
    """g(d) at the first step ("init") and the end ("trained") with its decay rate and half-life."""
    from pipeline.experiments.gradients import (  # imports Lightning: the parent process only
        decay_rate,
        half_life,
    )

    return {when: {"g": v, "decay_rate": decay_rate(np.asarray(v)), "half_life": half_life(decay_rate(np.asarray(v)))}
            for when, v in g.items()}


# ------------------------------------------------------------------------------------------------ the whole grid

def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def longrange_settings(cells, *, distances=(5, 10, 20, 50, 100, 200), seeds: int = 3, steps: int = 1500,
                       seed: int = 0, eval_every: int = 50, batch_size: int = 32, embedding_dim: int = 32,
                       hidden_dim: int = 64, lr: float = 2e-3, clip: float | None = 1.0,
                       n_test: int = 500) -> dict[str, Any]:
    """Everything that decides a result (what its hash covers): the cells' specs, the budget, the task, the protocol."""
    return {"cells": {c: CELLS[c] for c in cells}, "distances": sorted(set(distances)), "seeds": seeds,
            "first_seed": seed, "steps": steps, "eval_every": eval_every, "batch_size": batch_size,
            "embedding_dim": embedding_dim, "hidden_dim": hidden_dim, "optimizer": "adam", "lr": lr,
            "clip": clip, "n_test": n_test, "success": SUCCESS, "task": TASK, "protocol": PROTOCOL,
            "diagnostic_items": min(DIAGNOSTIC_ITEMS, n_test)}


def _median(values: list[Any]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return statistics.median(v) if v else None


def summarise(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """One (cell, d): success rate over seeds [Wilson], median steps to success (failures count as never), and the
    diagnostics' medians over seeds at the first step and the end."""
    k, n = sum(r["success"] for r in runs), len(runs)
    low, high = wilson(k, n)
    median = statistics.median([r["steps_to_success"] if r["success"] else math.inf for r in runs])
    out = {"seeds": runs, "successes": k, "runs": n, "success_rate": k / n, "low": low, "high": high,
           "median_steps": median if math.isfinite(median) else None, "budget_steps": steps,
           "mean_accuracy": float(np.mean([r["accuracy"] for r in runs]))}
    if all("diagnostics" in r for r in runs):
        out["diagnostics"] = {key: {when: _median([r["diagnostics"][when][key] for r in runs])
                                    for when in ("first", "end")} for key in runs[0]["diagnostics"]["first"]}
    return out


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
    settings = longrange_settings(cells, distances=distances, seeds=seeds, steps=steps, seed=seed,
                                  eval_every=eval_every, batch_size=batch_size, embedding_dim=embedding_dim,
                                  hidden_dim=hidden_dim, lr=lr, clip=clip, n_test=n_test)
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

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        e = r["diagnostics"]["end"]
        sat = next(k for k in e if k != RATIO)
        log(f"    [{len(results):>3}/{len(jobs)}] {r['cell']:>17} d={r['d']:<4} seed {r['seed']}: "
            f"{r['accuracy']:.3f} after {r['steps_run']} steps" + (" solved" if r["success"] else "")
            + f" ({r['seconds']:.0f} s; end {sat} {e[sat]:.3f}, {RATIO} {_fmt_ratio(e[RATIO])})")

    if workers == 1:
        for j in jobs:
            done(train_job(j))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(train_job, j) for j in jobs]):
                done(fut.result())
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {"settings": settings, "settings_hash": h, "chance": CHANCE, "classes": list(CLASSES),
                              "vocab": len(VOCAB), "pool": len(POOL), "attractors": len(ATTRACTORS),
                              "timing": {"wall_seconds": round(wall, 1), "workers": workers,
                                         "job_seconds": round(sum(r["seconds"] for r in results), 1),
                                         "job_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1)},
                              "cells": {}}
    for c in cells:
        mine = [r for r in results if r["cell"] == c]
        g = next((r.pop("g") for r in mine if "g" in r), None)
        result["cells"][c] = {"spec": CELLS[c], "parameters": mine[0]["parameters"],
                              "gradient": gradient_curves(g) if g is not None else None,
                              "by_d": {str(d): summarise(sorted((r for r in mine if r["d"] == d),
                                                                key=lambda r: r["seed"]), steps) for d in ds}}
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=True))
    result["plot"] = str(plot_longrange(result, out / "longrange.png"))
    return result


# ------------------------------------------------------------------------------------------------ what it shows

def _fmt_ratio(v: float | None) -> str:
    """0: the cue's gradient fell below float32's range (it underflowed)."""
    if v is None or not math.isfinite(v):
        return "—"
    return "0" if v == 0 else f"{v:.2g}" if 0.01 <= v < 100 else f"{v:.1e}"


def _fmt_sat(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}"


def ablation(spec: dict[str, Any]) -> str | None:
    """What sets a cell apart from the protocol (None for a protocol cell)."""
    what = [w for k, w in (("loss", "full-vocabulary loss"), ("embedding_init", "±0.1 embeddings"))
            if spec[k] != _NEW[k]]
    return ", ".join(what) if what else None


def _twin(result: dict[str, Any], name: str) -> str | None:
    """The protocol cell with the same recurrence as ablation row `name`, if it ran."""
    base = {k: v for k, v in result["cells"][name]["spec"].items() if k not in _NEW}
    return next((n for n, c in result["cells"].items() if ablation(c["spec"]) is None
                 and {k: v for k, v in c["spec"].items() if k not in _NEW} == base), None)


def _saturation_key(c: dict[str, Any]) -> str:
    return SATURATION[c["spec"]["cell"]]


def _diag(b: dict[str, Any], key: str, fmt) -> str:
    v = b.get("diagnostics", {}).get(key)
    return "—" if v is None else f"{fmt(v['first'])} → {fmt(v['end'])}"


def format_table(result: dict[str, Any]) -> str:
    """Per cell × d: successes/seeds [Wilson], median steps to success, mean final accuracy; then the diagnostics
    (medians over seeds, first step → end)."""
    s = result["settings"]
    ds = s["distances"]
    mark = {n: "*" if ablation(c["spec"]) else "" for n, c in result["cells"].items()}
    lines = [f"{'cell':>18} " + " ".join(f"{'d=' + str(d):>24}" for d in ds)]
    for name, c in result["cells"].items():
        cols = []
        for d in ds:
            b = c["by_d"][str(d)]
            med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f">{s['steps']}"
            cols.append(f"{b['successes']}/{b['runs']} [{b['low']:.2f},{b['high']:.2f}] {med:>5} {b['mean_accuracy']:.2f}")
        lines.append(f"{name + mark[name]:>18} " + " ".join(f"{x:>24}" for x in cols))
    lines.append(f"successes/seeds [95 % Wilson], median steps to success (> {s['steps']}: half or more failed), "
                 f"mean test accuracy (n = {s['n_test']}, chance {result['chance']:.2f}, success >= {SUCCESS})")
    for name, c in result["cells"].items():
        if mark[name]:
            lines.append(f"* {name}: the old protocol ({ablation(c['spec'])})")
    lines += ["", f"diagnostics at the query, median over seeds, first step → end ({s.get('diagnostic_items')} "
                  "validation items)", f"{'cell':>18} {'measure':>18} " + " ".join(f"{'d=' + str(d):>15}" for d in ds)]
    for name, c in result["cells"].items():
        for key, fmt in ((_saturation_key(c), _fmt_sat), (RATIO, _fmt_ratio)):
            lines.append(f"{(name + mark[name]) if key != RATIO else '':>18} {key:>18} "
                         + " ".join(f"{_diag(c['by_d'][str(d)], key, fmt):>15}" for d in ds))
    lines.append(f"lstm_readout_slope: mean 1 − tanh²(c_T); tanh_state_slope: mean 1 − h_T²; relu_zero_share: share "
                 f"of units at 0 (top layer); {RATIO}: ‖∂L/∂e_cue‖ / ‖∂L/∂e_(d−2)‖ (the last distractor; 0: the "
                 "cue's gradient underflowed float32)")
    return "\n".join(lines)


def solved_up_to(c: dict[str, Any], ds: list[int]) -> tuple[int | None, int | None]:
    """(the largest d up to which every seed solved every d, the first d not solved by every seed)."""
    last = None
    for d in ds:
        b = c["by_d"][str(d)]
        if b["successes"] < b["runs"]:
            return last, d
        last = d
    return last, None


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def what_it_says(result: dict[str, Any]) -> str:
    """The results in plain words, generated from the numbers."""
    s = result["settings"]
    ds = s["distances"]
    parts = []
    for name, c in result["cells"].items():
        if ablation(c["spec"]):
            continue
        last, fail = solved_up_to(c, ds)
        if fail is None:
            parts.append(f"{name} at every d up to {ds[-1]}")
            continue
        b = c["by_d"][str(fail)]
        failed = [r["diagnostics"]["end"] for r in b["seeds"] if not r["success"] and "diagnostics" in r]
        key = _saturation_key(c)
        ratio, sat = (_median([f[k] for f in failed]) for k in (RATIO, key))
        parts.append((f"{name} up to d = {last}" if last is not None else f"{name} at no d")
                     + f" ({b['successes']}/{b['runs']} at d = {fail}"
                     + (f"; its failed seeds ended with the cue's gradient {_fmt_ratio(ratio)} of the last "
                        f"distractor's, {key} {_fmt_sat(sat)}" if failed else "") + ")")
    text = ["Every seed solved: " + "; ".join(parts) + "."]
    for name, c in result["cells"].items():
        if not ablation(c["spec"]):
            continue
        twin = _twin(result, name)
        key = _saturation_key(c)
        mine = [d for d in ds if c["by_d"][str(d)]["successes"] == c["by_d"][str(d)]["runs"]]
        head = (f"The old protocol, {name} ({ablation(c['spec'])}), was solved by every seed at "
                + (f"d ∈ {{{', '.join(map(str, mine))}}}" if mine else "no d"))
        if twin is None:
            text.append(head + " (its protocol twin did not run).")
            continue
        t = result["cells"][twin]
        gap = [d for d in ds if t["by_d"][str(d)]["successes"] == t["by_d"][str(d)]["runs"]
               and c["by_d"][str(d)]["successes"] < c["by_d"][str(d)]["runs"]]
        if not gap:
            text.append(head + f"; it did not fail where {twin} (same cell, protocol loss and init) succeeded.")
            continue
        d = next((d for d in gap if d >= 3), gap[0])  # the first with a last distractor
        b, bt = c["by_d"][str(d)], t["by_d"][str(d)]
        line = (head + f"; it failed at d ∈ {{{', '.join(map(str, gap))}}}, where {twin} (same cell, protocol loss "
                f"and init) was solved by every seed. At d = {d} ({b['successes']}/{b['runs']} seeds, mean accuracy "
                f"{b['mean_accuracy']:.2f}) its {key} went {_diag(b, key, _fmt_sat)} from the first step to the end "
                f"({twin}: {_diag(bt, key, _fmt_sat)}), and the cue's gradient relative to the last distractor's "
                f"{_diag(b, RATIO, _fmt_ratio)} ({twin}: {_diag(bt, RATIO, _fmt_ratio)}).")
        r, rt = (x.get("diagnostics", {}).get(RATIO, {}).get("end") for x in (b, bt))
        if r and rt:
            line += (f" At the end the cue's relative gradient was {rt / r:,.0f} times smaller than {twin}'s."
                     if r < rt else f" At the end the cue's relative gradient was not smaller than {twin}'s.")
        text.append(line)
    return " ".join(text)


def _timing(t: dict[str, Any]) -> str:
    """'12.3 min wall with 2 worker processes (the jobs' CPU time: 20.1 min)'."""
    out = f"{t['wall_seconds'] / 60:.1f} min wall with {t['workers']} worker process{'es' if t['workers'] != 1 else ''}"
    if t.get("job_cpu_seconds") is not None:
        out += f" (the jobs' CPU time: {t['job_cpu_seconds'] / 60:.1f} min, one thread each)"
    return out


def report_lines(result: dict[str, Any], assets: str) -> list[str]:
    """The experiment report's markdown section for this task; `assets` is the folder holding longrange/."""
    s = result["settings"]
    ds = s["distances"]
    L = ["## Long-range task (controlled)", "",
         f"Verb agreement (4 forms: gender × number, chance {result['chance']:.2f}) with a subject d words back, "
         f"{result['pool']} distractor words ({result['attractors']} of them attractor nouns) between. One fresh "
         f"model per cell, d and seed, trained at that d only: {s['seeds']} seeds, at most {s['steps']} steps (batch "
         f"{s['batch_size']}, embedding {s['embedding_dim']}, hidden {s['hidden_dim']}, Adam {s['lr']}, clip "
         f"{s['clip']}), stopped once {s['success']:.0%} of {s['n_test']} validation items are right. Protocol "
         f"{s.get('protocol', 1)}: the loss is the cross-entropy over the query verb's 4 forms (what is scored), read "
         "from the LM's own decoder rows; embeddings start from N(0, 1). Rows marked *old protocol* keep the "
         "full-vocabulary loss and ±0.1 embeddings of protocol 1, as an ablation. Each cell: seeds solved (test "
         f"accuracy ≥ {s['success']} on {s['n_test']} fresh items; items are independent) [95 % Wilson]; median "
         f"steps to success (> {s['steps']}: half the seeds or more never solved it); mean final test accuracy. "
         f"{_timing(result['timing'])}.", ""]

    def cell(b: dict[str, Any]) -> str:
        med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f"> {s['steps']}"
        return f"{b['successes']}/{b['runs']} [{b['low']:.2f}, {b['high']:.2f}]; {med}; {b['mean_accuracy']:.3f}"

    def label(name: str, c: dict[str, Any]) -> str:
        return f"{name} (*old protocol: {ablation(c['spec'])}*)" if ablation(c["spec"]) else name

    L += _md_table(["cell", "params", *(f"d={d}" for d in ds)],
                   [[label(n, c), f"{c['parameters']:,}", *(cell(c["by_d"][str(d)]) for d in ds)]
                    for n, c in result["cells"].items()])
    L += ["", f"Mechanism, median over seeds, at the first step → at the end of training, on "
              f"{s.get('diagnostic_items')} validation items at the query position (top layer). Saturation: "
              "`lstm_readout_slope` = mean 1 − tanh²(c_T), the slope of the LSTM's readout h = o·tanh(c) (near 0: "
              "saturated); `tanh_state_slope` = mean 1 − h_T² (tanh RNN, GRU); `relu_zero_share` = share of IRNN "
              f"units at 0. `{RATIO}` = ‖∂L/∂e_cue‖ / ‖∂L/∂e_(d−2)‖: the cue's input gradient relative to the last "
              "distractor's, L the loss the cell trains (0: the cue's gradient underflowed float32).", ""]
    rows = []
    for n, c in result["cells"].items():
        key = _saturation_key(c)
        rows.append([label(n, c), f"`{key}`", *(_diag(c["by_d"][str(d)], key, _fmt_sat) for d in ds)])
        rows.append(["", f"`{RATIO}`", *(_diag(c["by_d"][str(d)], RATIO, _fmt_ratio) for d in ds)])
    L += _md_table(["cell", "measure", *(f"d={d}" for d in ds)], rows)
    L += ["", f"**What it says.** {what_it_says(result)}", "", f"![longrange]({assets}/longrange/longrange.png)", ""]
    return L


def plot_longrange(result: dict[str, Any], path: str | Path) -> Path:
    """Left: seeds solved per cell × d (colour: success rate; text: k/n, [Wilson], median steps). Top: final accuracy
    by d, seeds as dots; gradient by distance at the longest d, first step (dashed) and end. Bottom: the diagnostics
    by d, medians over seeds, first step (dashed) and end: the cue/last-distractor gradient ratio; the saturation."""
    from pipeline.experiments.gradients import _pyplot, _save

    plt = _pyplot()
    fig = plt.figure(figsize=(20, 10))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.3, 1, 1])
    ax, ax1, ax2 = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[0, 2])
    ax3, ax4 = fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[1, 2])
    s = result["settings"]
    ds, names = s["distances"], list(result["cells"])
    labels = [n + (" (old protocol)" if ablation(result["cells"][n]["spec"]) else "") for n in names]
    rate = np.array([[result["cells"][n]["by_d"][str(d)]["success_rate"] for d in ds] for n in names])  # (cells, ds)
    ax.imshow(rate, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", alpha=0.5)
    for i, n in enumerate(names):
        for j, d in enumerate(ds):
            b = result["cells"][n]["by_d"][str(d)]
            med = f"{b['median_steps']:.0f}" if b["median_steps"] is not None else f">{s['steps']}"
            ax.text(j, i, f"{b['successes']}/{b['runs']} [{b['low']:.2f}, {b['high']:.2f}]\n{med} steps\n"
                    f"acc {b['mean_accuracy']:.2f}", ha="center", va="center", fontsize=7.5)
    ax.set_xticks(range(len(ds)), [str(d) for d in ds])
    ax.set_yticks(range(len(names)), [lb.replace(" (", "\n(") for lb in labels])
    ax.set(xlabel="distance d (each model trained at that d only)",
           title=f"seeds solved (test accuracy ≥ {SUCCESS}) within {s['steps']} steps; median steps")
    jitter = np.linspace(-0.06, 0.06, len(names))
    for i, (name, c) in enumerate(result["cells"].items()):
        b = [c["by_d"][str(d)] for d in ds]
        x = np.array(ds, dtype=float) * np.exp(jitter[i])  # side by side on the log axis
        style = ":" if ablation(c["spec"]) else "-"
        ax1.plot(x, [v["mean_accuracy"] for v in b], style, marker="o", ms=4, color=f"C{i}", label=labels[i])
        for x_, v in zip(x, b):
            ax1.scatter([x_] * len(v["seeds"]), [r["accuracy"] for r in v["seeds"]], s=9, color=f"C{i}", alpha=0.5)
        for when, ls in (("init", "--"), ("trained", "-")):
            if c.get("gradient"):
                g = np.asarray(c["gradient"][when]["g"], dtype=np.float64)
                ax2.semilogy(np.arange(len(g)), np.where(g > 0, g, np.nan), ls, color=f"C{i}",
                             label=name if when == "trained" else None)
        for axis, key in ((ax3, RATIO), (ax4, _saturation_key(c))):
            for when, ls in (("first", "--"), ("end", "-")):
                v = [(b_.get("diagnostics", {}).get(key) or {}).get(when) for b_ in b]
                axis.plot(x, [np.nan if u is None or (axis is ax3 and u <= 0) else u for u in v], ls, marker="o" if when == "end" else None,
                          ms=4, color=f"C{i}", label=f"{name}: {key}" if when == "end" and axis is ax4 else None)
    for axis in (ax1, ax3, ax4):
        axis.set_xscale("log")
        axis.set_xticks(ds, [str(d) for d in ds])
        axis.set_xticks([], minor=True)
    ax1.set_ylim(-0.02, 1.02)
    ax1.axhline(result["chance"], color="grey", ls=":", label="chance")
    ax1.axhline(SUCCESS, color="grey", ls="--", lw=0.8)
    ax1.set(xlabel="distance d", ylabel="test accuracy (verb form, 1 of 4)", title="final accuracy: mean; dots: seeds")
    ax2.set(xlabel="distance back from the query", ylabel="mean ‖∂L / ∂e‖",
            title=f"gradient by distance at d = {ds[-1]}, seed {s['first_seed']}\n(dashed: first step)")
    ax3.set_yscale("log")
    ax3.set(xlabel="distance d", ylabel="‖∂L/∂e_cue‖ / ‖∂L/∂e_(d−2)‖",
            title="cue vs last distractor gradient, median over seeds\n(dashed: first step; 0, float32 underflow, "
                  "not drawn)")
    ax4.set_ylim(-0.02, 1.02)
    ax4.set(xlabel="distance d", ylabel="saturation measure (legend: which)")
    ax4.set_title("saturation at the query, median over seeds (dashed: first step)\nLSTM 1 − tanh²(c_T); tanh RNN and "
                  "GRU 1 − h_T²; IRNN share at 0", fontsize=10)
    ax1.legend(fontsize=7, loc="lower left")
    ax2.legend(fontsize=7)
    ax4.legend(fontsize=6.5)
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
    print(f"{out / 'longrange.json'} and {result['plot']} ({time.perf_counter() - t0:.0f} s; when trained: "
          f"{_timing(result['timing'])})")
    return 0
