"""Gradients made visible (DESIGN §8): gradient by distance, and the exploding-gradient demonstration.

Gradient by distance. Only the loss at the last position T counts; the curve is

    g(d) = mean over windows of ‖∂L_T / ∂e_{T−d}‖,   d = 0 … T−1,

where e_t is the embedded input at position t (after `model.embed`, dropout off). A vanilla RNN whose recurrent
Jacobian has norm < 1 shows a straight falling line on a log scale; `decay_rate` is its slope per step.

    windows (N, T+1):  x = windows[:, :T] -> embed -> e (N, T, E) -> recur -> features[:, T-1] -> loss vs windows[:, T]
    grad (N, T, E) -> norm over E -> (N, T) -> mean over N -> reversed, so index d = T-1-t

Exploding gradients. The same `rnn_tanh` with a large orthogonal recurrent init (`init='scaled'`) trained with plain
SGD twice, without clipping (`allow_divergence`, so the blow-up is recorded, not raised) and with clipping; a
callback keeps the loss and the pre-clip gradient norm of every step.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from pipeline.config import Config
from pipeline.corpus.prepare import Prepared
from pipeline.experiments.figures import pyplot, save_figure

# ------------------------------------------------------------------------------------------ gradient by distance


def gradient_by_distance(model: nn.Module, windows: Tensor, targets: Tensor | None = None, state=None) -> np.ndarray:
    """g(d) for d = 0 … T−1 (index d), from the last position's loss only.

    `windows` is (N, T+1) when `targets` is None (the last column is the target), else (N, T) with `targets` (N,).
    `model` needs `embed(tokens) -> (N, T, E)`, `recur(x, state) -> (features, state)` and
    `loss(features, targets) -> mean NLL` (RecurrentLM has them). The model is put in eval mode (no dropout) and
    restored afterwards; its parameters receive no gradient.
    """
    if targets is None:
        if windows.size(1) < 2:
            raise ValueError(f"windows of shape {tuple(windows.shape)}: need T+1 >= 2 columns (inputs + target)")
        windows, targets = windows[:, :-1], windows[:, -1]
    n = windows.size(0)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            e = model.embed(windows).detach().requires_grad_(True)  # (N, T, E)
            if state is None and hasattr(model, "init_state"):  # zeros in the inputs' dtype (float64 in tests)
                state = _cast(model.init_state(n, e.device), e.dtype)
            features, _ = model.recur(e, state)  # (N, T, H)
            # Each window's loss depends on its own inputs only, so the gradient of the sum is per window.
            loss = model.loss(features[:, -1:], targets.view(n, 1)) * n
            (grad,) = torch.autograd.grad(loss, e)  # (N, T, E)
    finally:
        model.train(was_training)
    g = grad.norm(dim=-1).mean(0)  # (T,) indexed by position t
    return g.flip(0).detach().double().cpu().numpy()  # index d = T-1-t


def _cast(state, dtype):
    return tuple(s.to(dtype) for s in state) if isinstance(state, tuple) else state.to(dtype)


# The fit's range: the window's interior. The nearest distances carry the target's own local inputs, and the
# farthest sit at the window's start, where the carried state enters and the curve bends (a fit through them gave the
# LSTM a half-life of 27.4 pieces against ~10 in the interior); both ends are left out.
NEAR_EXCLUDED = 2


def fit_range(length: int) -> tuple[int, int]:
    """[lo, hi] (inclusive) of the distances a decay rate is fitted on, for windows of `length` pieces."""
    return NEAR_EXCLUDED, max(NEAR_EXCLUDED + 1, length - 1 - max(2, length // 8))


def decay_rate(g: np.ndarray, lo: int = 0, hi: int | None = None) -> float:
    """Least-squares slope of log g(d) against d, per step, over the distances lo … hi where g(d) > 0 and finite.

    Negative = vanishing (g shrinks by a factor exp(rate) per step; half-life = log 2 / −rate steps), positive =
    growing. NaN when fewer than two distances qualify.
    """
    g = np.asarray(g, dtype=np.float64)
    d = np.arange(len(g))
    ok = np.isfinite(g) & (g > 0) & (d >= lo) & (d <= (len(g) - 1 if hi is None else hi))
    if ok.sum() < 2:
        return math.nan
    slope, _ = np.polyfit(d[ok], np.log(g[ok]), 1)
    return float(slope)


def half_life(rate: float) -> float:
    """Steps for g(d) to halve at a given decay rate (inf when it does not fall)."""
    return math.log(2) / -rate if rate < 0 else math.inf


def validation_windows(prepared: Prepared, n: int, length: int, seed: int = 0, split: str = "validation") -> Tensor:
    """`n` windows of `length + 1` pieces (inputs + the target) at seeded random offsets of a split's stream."""
    stream = prepared.stream(split)
    if len(stream) < length + 2:
        raise ValueError(f"the {split} stream has {len(stream)} pieces, fewer than a window of {length + 1}; "
                         "use a shorter length (data.bptt) or a larger corpus")
    starts = np.random.default_rng(seed).integers(0, len(stream) - length - 1, size=n)
    return torch.from_numpy(np.stack([np.asarray(stream[s:s + length + 1], dtype=np.int64) for s in starts]))


def gradient_curves(bundle, prepared: Prepared, n_windows: int = 64, length: int | None = None, seed: int = 0
                    ) -> dict[str, Any]:
    """g(d) at initialisation (the bundle's model arguments, weights drawn with `seed`) and for the bundle's trained
    weights, on the same seeded validation windows (`length` defaults to the run's data.bptt)."""
    from models.build import build_model

    length = length or int(bundle.config["data"]["bptt"])
    windows = validation_windows(prepared, n_windows, length, seed)
    torch.manual_seed(seed)
    fresh = build_model(bundle.model_args)
    lo, hi = fit_range(length)
    out: dict[str, Any] = {"length": length, "n_windows": n_windows, "seed": seed, "fit_range": [lo, hi],
                           "excluded_from_fit": length - (hi - lo + 1)}
    for when, model in (("init", fresh), ("trained", bundle.model)):
        g = gradient_by_distance(model, windows)
        rate = decay_rate(g, lo, hi)
        whole = decay_rate(g)
        out[when] = {"g": g.tolist(), "decay_rate": rate, "half_life": half_life(rate),
                     "decay_rate_whole_window": whole, "half_life_whole_window": half_life(whole)}
    return out


def gradient_metrics(curves: dict[str, Any]) -> dict[str, float]:
    """Flat metrics for MLflow: `grad/decay_rate_{init,trained}`, `grad/half_life_{init,trained}`."""
    out = {}
    for when in ("init", "trained"):
        if when in curves:
            out[f"grad/decay_rate_{when}"] = curves[when]["decay_rate"]
            out[f"grad/half_life_{when}"] = curves[when]["half_life"]
    return out


def plot_gradient_by_distance(curves: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """One colour per model; dashed = at initialisation, solid = after training; log y; the fitted range shaded
    (the rate in the legend is fitted there, the window's ends left out)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    spans = {tuple(c["fit_range"]) for c in curves.values() if c.get("fit_range")}
    for lo, hi in spans:
        ax.axvspan(lo, hi, color="grey", alpha=0.08, label=f"fit range d = {lo}…{hi}")
    for i, (name, c) in enumerate(curves.items()):
        colour = f"C{i}"
        for when, style in (("init", "--"), ("trained", "-")):
            if when in c:
                g = np.asarray(c[when]["g"], dtype=np.float64)
                ax.semilogy(np.arange(len(g)), np.where(g > 0, g, np.nan), style, color=colour,
                            label=f"{name} {when} (rate {c[when]['decay_rate']:.3f}/step)")
    ax.set_xlabel("distance d (pieces back from the predicted position)")
    ax.set_ylabel("mean ‖∂L_T / ∂e_{T−d}‖")
    ax.set_title("gradient by distance (dashed: at init, solid: trained)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------- exploding


class StepRecorder(pl.Callback):
    """Per optimizer step: the training loss (NaN when it was not finite) and the pre-clip total gradient norm."""

    def __init__(self):
        self.losses: list[float] = []
        self.grad_norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Runs before the Trainer clips, so this is the pre-clip norm (same as the module's train/grad_norm).
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.nn.utils.get_total_norm(grads, norm_type=2.0)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # a step whose loss was not finite returns nothing (the module records the blow-up and stops)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else math.nan)


def exploding_configs(cfg: Config, steps: int, init_scale: float = 2.0, lr: float = 20.0, clip: float = 0.25,
                      cell: str = "rnn_tanh") -> dict[str, Config]:
    """The two runs: same model, data, seed and optimizer (plain SGD); only the clipping differs."""
    model = dataclasses.replace(cfg.model, cell=cell, init="scaled", init_scale=init_scale, dropout=0.0,
                                gate_bias=None)  # a plain tanh RNN: no gate to bias
    out = {}
    for name, clip_val in (("unclipped", None), ("clipped", clip)):
        train_cfg = dataclasses.replace(cfg.train, optimizer="sgd", lr=lr, momentum=0.0, schedule="constant",
                                        warmup_steps=0, max_steps=steps, max_epochs=max(cfg.train.max_epochs, 1000),
                                        gradient_clip_val=clip_val, gradient_clip_algorithm="norm",
                                        allow_divergence=True, early_stopping_patience=0, limit_val_batches=1,
                                        val_check_interval=1.0)
        out[name] = cfg.replace(name=f"{cfg.name}-explode-{name}", model=model, train=train_cfg)
    return out


def exploding_demo(cfg: Config, prepared: Prepared, steps: int, init_scale: float = 2.0, lr: float = 20.0,
                   clip: float = 0.25, cell: str = "rnn_tanh", out_dir: str | Path | None = None,
                   log=print) -> dict[str, Any]:
    """Train the same model without and with clipping; per-step loss and pre-clip norm of both (+ PNG, JSON)."""
    from pipeline.training.train import train

    result: dict[str, Any] = {"settings": {"cell": cell, "init": "scaled", "init_scale": init_scale, "lr": lr,
                                           "optimizer": "sgd", "clip": clip, "steps": steps,
                                           "bptt": cfg.data.bptt, "batch_size": cfg.data.batch_size,
                                           "hidden_dim": cfg.model.hidden_dim, "num_layers": cfg.model.num_layers}}
    for name, run_cfg in exploding_configs(cfg, steps, init_scale, lr, clip, cell).items():
        rec = StepRecorder()
        tr = train(run_cfg, prepared, fresh=True, log=log, extra_callbacks=[rec])
        norms = np.asarray(rec.grad_norms, dtype=np.float64)
        finite = norms[np.isfinite(norms)]
        result[name] = {"losses": rec.losses, "grad_norms": rec.grad_norms, "diverged_at": tr.diverged_at,
                        "steps_run": len(rec.losses), "seconds": round(tr.seconds, 2),
                        "max_grad_norm": float(finite.max()) if len(finite) else math.nan,
                        "median_grad_norm": float(np.median(finite)) if len(finite) else math.nan,
                        "share_above_clip": float((finite > clip).mean()) if len(finite) else math.nan}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "exploding.json").write_text(json.dumps(result, indent=1, allow_nan=True))
        result["plot"] = str(plot_exploding(result, out / "exploding.png"))
    return result


def plot_exploding(result: dict[str, Any], path: str | Path) -> Path:
    """Loss and pre-clip gradient norm per step (log y) for both runs, and the histogram of pre-clip norms."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    s = result["settings"]
    for name, colour in (("unclipped", "C3"), ("clipped", "C0")):
        r = result[name]
        label = name + (f" (diverged at step {r['diverged_at']})" if r["diverged_at"] is not None else "")
        losses = np.asarray(r["losses"], dtype=np.float64)
        norms = np.asarray(r["grad_norms"], dtype=np.float64)
        axes[0].semilogy(np.arange(len(losses)), losses, color=colour, label=label)
        axes[1].semilogy(np.arange(len(norms)), norms, color=colour, label=name)
        finite = norms[np.isfinite(norms) & (norms > 0)]
        if len(finite):
            bins = np.logspace(np.log10(finite.min()), np.log10(finite.max()) + 1e-9, 40)
            axes[2].hist(finite, bins=bins, alpha=0.6, color=colour, label=name)
    axes[1].axhline(s["clip"], color="grey", ls=":", label=f"clip = {s['clip']}")
    axes[2].axvline(s["clip"], color="grey", ls=":")
    axes[2].set_xscale("log")
    axes[0].set(xlabel="step", ylabel="training loss (nats/piece)", title="loss")
    axes[1].set(xlabel="step", ylabel="pre-clip gradient norm", title="pre-clip gradient norm")
    axes[2].set(xlabel="pre-clip gradient norm", ylabel="steps", title="histogram of pre-clip norms")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"{s['cell']} init=scaled×{s['init_scale']}, SGD lr {s['lr']}, bptt {s['bptt']}", fontsize=9)
    return save_figure(fig, path)
