"""One job of the controlled long-range task (DESIGN §8): a fresh model of one cell, trained at one d with one seed
and one learning rate, its test accuracy and its diagnostics.

    x = words[:, :d] (B, d) -> features[:, d−1] -> decoder rows of the verb's 4 forms (B, 4) -> loss against the
    target's form                                    (the query position only; full BPTT)

What is trained is what is scored (protocol 2): the cross-entropy over the query verb's 4 forms, read from the LM's
own decoder rows, from N(0, 1) embeddings. Protocol 1 trained through the whole 296-word softmax from ±0.1 embeddings:
a model must then first learn "the target is one of this verb's 4 forms", and an LSTM learns it by piling it up in
its cell, saturating the readout h = o·tanh(c) so that the cue's gradient, which crosses the gap through c, vanishes.
The 2 × 2 ablation (loss × embedding init, LSTM forget bias 3) keeps each factor apart.

Diagnostics, at the first step and at the end, on the first `diagnostic_items` validation items: (a) the top layer's
saturation at the query (`lstm_readout_slope` = mean 1 − tanh²(c_T); `tanh_state_slope` = mean 1 − h_T² for the tanh
RNN and the GRU; `relu_zero_share` = the share of IRNN units at 0) and (b) `cue_grad_ratio` = mean ‖∂L/∂e_cue‖ /
mean ‖∂L/∂e_{d−2}‖, the cue's input-embedding gradient relative to the last distractor's, L the loss the cell trains.

Workers import this module: nothing here may pull in Lightning.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.recurrent import RecurrentLM
from pipeline.evaluation.intervals import wilson
from pipeline.experiments.longrange_task import SUCCESS, VOCAB, batch, stream

PROTOCOL = 2  # 1: full-vocabulary loss, ±0.1 embeddings, no diagnostics; 2: see the docstring. In every job's hash.
DIAGNOSTIC_ITEMS = 64  # validation items the diagnostics are measured on (the first of the fixed validation set)

# The cells: the recurrence and its start; all get the same embedding and hidden sizes. `loss`: "forms" (cross-entropy
# over the query verb's 4 forms) or "vocab" (over all 296 words); `embedding_init`: "normal" (N(0, 1)) or "uniform"
# (±0.1); `init`: RecurrentLM's recurrent init; `chrono`: the keep gate's biases by chrono init (T_max a setting).
# The names are pipeline.config.LONGRANGE_CELLS (a test keeps them equal).
_NEW = {"loss": "forms", "embedding_init": "normal"}
CELLS: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh", **_NEW},
    "rnn_tanh_orth": {"cell": "rnn_tanh", "init": "orthogonal", **_NEW},
    "irnn": {"cell": "rnn_relu", "init": "identity", **_NEW},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True, **_NEW},
    "gru_z1": {"cell": "gru", "gate_bias": 1.0, **_NEW},
    "gru_z3": {"cell": "gru", "gate_bias": 3.0, **_NEW},
    "gru_chrono": {"cell": "gru", "chrono": True, **_NEW},
    "lstm_f1": {"cell": "lstm", "gate_bias": 1.0, **_NEW},
    "lstm_f3": {"cell": "lstm", "gate_bias": 3.0, **_NEW},
    "lstm_chrono": {"cell": "lstm", "chrono": True, **_NEW},
    # the 2 × 2 ablation around lstm_f3 (forms loss, N(0, 1)): each factor of the old protocol alone, then both
    "lstm_f3_vocabloss": {"cell": "lstm", "gate_bias": 3.0, "loss": "vocab", "embedding_init": "normal"},
    "lstm_f3_smallemb": {"cell": "lstm", "gate_bias": 3.0, "loss": "forms", "embedding_init": "uniform"},
    "lstm_f3_fullvocab": {"cell": "lstm", "gate_bias": 3.0, "loss": "vocab", "embedding_init": "uniform"},
}
ABLATION_BASE = "lstm_f3"  # the protocol cell the ablation rows change
GATED = ("lstm", "gru")
# what each cell's saturation field measures at the query (top layer): see the docstring
SATURATION = {"lstm": "lstm_readout_slope", "rnn_tanh": "tanh_state_slope", "gru": "tanh_state_slope",
              "rnn_relu": "relu_zero_share"}
RATIO = "cue_grad_ratio"
# measured CPU seconds per training step per word of d (batch 32, hidden 64, one thread; the 2025 grid): the budget's
# worst-case estimate of a job (steps cap × d × this), replaced by what the finished jobs measured as they come in
COST = {"rnn_tanh": 0.09e-3, "rnn_relu": 0.09e-3, "lstm": 0.12e-3, "gru": 0.24e-3}


def start(spec: dict[str, Any], t_max: float) -> str:
    """The cell's start in words, for the tables."""
    if spec.get("chrono"):
        return f"chrono, T_max {t_max:g}"
    if spec.get("gate_bias") is not None:
        return f"{'forget' if spec['cell'] == 'lstm' else 'keep'} bias {spec['gate_bias']:g}"
    return {"identity": "identity W_hh, ReLU", "orthogonal": "orthogonal W_hh"}.get(
        spec.get("init", "default"), "PyTorch default" + (", 2 layers, residual" if spec.get("residual") else ""))


def ablation(spec: dict[str, Any]) -> str | None:
    """What sets a cell apart from the protocol (None for a protocol cell)."""
    what = [w for k, w in (("loss", "full-vocabulary loss"), ("embedding_init", "±0.1 embeddings"))
            if spec[k] != _NEW[k]]
    return ", ".join(what) if what else None


def build(spec: dict[str, Any], embedding_dim: int, hidden_dim: int, t_max: float | None = None) -> RecurrentLM:
    model = RecurrentLM(len(VOCAB), spec["cell"], embedding_dim, hidden_dim, spec.get("num_layers", 1), 0.0,
                        tie_weights=False, init=spec.get("init", "default"), residual=spec.get("residual", False),
                        gate_bias=spec.get("gate_bias"), chrono_t_max=t_max if spec.get("chrono") else None)
    if spec.get("chrono") and t_max is None:
        raise ValueError("a chrono cell needs T_max (experiment.longrange_t_max)")
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
    """One fresh model of `job['cell']` trained at `job['d']` with `job['seed']` and `job['lr']`: Adam, at most
    `steps` steps, every `eval_every` steps `n_test` validation items, stopped once ≥ SUCCESS of them are right;
    success = ≥ SUCCESS on `n_test` fresh test items. `cpu_limit` (CPU seconds) and `deadline` (time.time()) stop
    a job the budget cannot pay for: it comes back with `stopped` set and counts as not run, never as failed."""
    torch.set_num_threads(1)
    d, seed, s = job["d"], job["seed"], job["settings"]
    spec = CELLS[job["cell"]]
    cpu0, t0 = time.process_time(), time.perf_counter()
    torch.manual_seed(seed)
    model = build(spec, s["embedding_dim"], s["hidden_dim"], s.get("t_max"))
    opt = torch.optim.Adam(model.parameters(), lr=job["lr"])
    train, n = stream(seed, d, "train"), s["n_test"]
    val = batch(stream(seed, d, "validation"), d, n, balanced=True)
    test = batch(stream(seed, d, "test"), d, n, balanced=True)
    probe = tuple(t[:s.get("diagnostic_items", DIAGNOSTIC_ITEMS)] for t in val)  # balanced too: classes cycle
    first = diagnose(model, spec, *probe, curve=job.get("gradient", False))
    step, losses, diverged, val_acc, stopped = 0, [], None, None, None
    limit, deadline = job.get("cpu_limit"), job.get("deadline")
    for step in range(1, s["steps"] + 1):
        if (limit is not None and time.process_time() - cpu0 > limit) or (deadline is not None and
                                                                          time.time() > deadline):
            stopped = "cpu budget" if limit is not None and time.process_time() - cpu0 > limit else "deadline"
            step -= 1
            break
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
    out = {"cell": job["cell"], "d": d, "seed": seed, "lr": job["lr"], "steps_run": step, "stopped": stopped,
           "parameters": sum(p.numel() for p in model.parameters())}
    if stopped is None:
        right = correct(model, *test)
        end = diagnose(model, spec, *probe, curve=job.get("gradient", False))
        low, high = wilson(right, n)
        ok = right / n >= SUCCESS
        out.update({"steps_to_success": step if ok else None, "success": ok, "n": n, "correct": right,
                    "accuracy": right / n, "low": low, "high": high, "val_accuracy": val_acc, "diverged_at": diverged,
                    "final_loss": float(np.mean(losses[-20:])) if losses else math.nan,
                    "diagnostics": {"first": {k: v for k, v in first.items() if k != "g"},
                                    "end": {k: v for k, v in end.items() if k != "g"}}})
        if job.get("gradient"):
            out["g"] = {"init": first["g"], "trained": end["g"]}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["cpu_seconds"] = round(time.process_time() - cpu0, 2)  # apart from other processes' load
    return out
