"""The comparison experiment's grid (`python -m pipeline experiment`): its models, their matched sizes and the budget.
Each model is trained and evaluated in grid_models.py; experiment.py runs the whole and writes
`reports/experiment.md`.

    budget_minutes ─ overhead (prepare, baseline, report) ─ eval_minutes_per_model × models ─ longrange_minutes
                   └ rest ─ exploding_share (two demo runs)
                          └ what is left / models = train.max_time_minutes of every model (the same for all)

Every model of the grid gets the parameter count of `model` (its cell at hidden_dim × scale) by choosing its own
hidden size. A nested run is reused when a FINISHED run carries the same cell-config hash and the `done` tag (set as
its very last step), so a re-run after an interruption retrains only what is missing; the parent run and its
long-range / exploding / baseline results are reused the same way.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from pipeline.config import Config, ConfigError

# The grid's models: the cell and what sets it apart. All share the sizes chosen by `match_parameters`. `rate_of`:
# a one-factor variant trains at the learning rate swept for the model it varies, so that factor is the only change.
GRID: dict[str, dict[str, Any]] = {
    "rnn_tanh": {"cell": "rnn_tanh"},
    "irnn": {"cell": "rnn_relu", "init": "identity"},
    "rnn_tanh_residual": {"cell": "rnn_tanh", "num_layers": 2, "residual": True, "rate_of": "rnn_tanh"},
    "gru": {"cell": "gru"},
    "lstm": {"cell": "lstm"},
    "rnn_tanh_noclip": {"cell": "rnn_tanh", "clip": None, "rate_of": "rnn_tanh"},
}
CELL_HASH_TAG = "marathi_nwp.experiment_cell_hash"
EXPERIMENT_HASH_TAG = "marathi_nwp.experiment_hash"
VARIANT_TAG = "marathi_nwp.experiment_model"
DONE_TAG = "marathi_nwp.experiment_done"
TRAIN_HASH_TAG = "marathi_nwp.experiment_train_hash"
TRAINED_TAG = "marathi_nwp.experiment_trained"
EVAL_VERSION = 3  # what a row holds; bump it when the evaluation changes, so trained models are scored again
KEYSTROKES_HASH_TAG = "marathi_nwp.experiment_keystrokes_hash"
KEYSTROKE_VERSION = 1  # what experiment/keystrokes.json holds (pipeline/evaluation/keystrokes.py run_scorer)
# Settings no cached piece depends on: the keystroke simulation is cached apart (KEYSTROKES_HASH_TAG), and serving
# limits change nothing measured; they are left out of the parent's and the rows' hashes.
UNHASHED = ("eval.keystrokes", "eval.keystroke_slots", "eval.keystroke_words", "experiment.keystroke_words",
            "serve.max_word_chars", "serve.max_k")


# --------------------------------------------------------------------------------------------- grid and budget

def scale_of(cfg: Config) -> float:
    ec = cfg.experiment
    if ec.scale is not None:
        return ec.scale
    accel = str(cfg.train.trainer.get("accelerator", "cpu")).lower()
    on_gpu = accel in ("gpu", "cuda") or accel == "auto" and torch.cuda.is_available()
    return ec.gpu_scale if on_gpu else 1.0


def base_name(name: str) -> str:
    """The grid model a seed replicate belongs to: "lstm_s2" -> "lstm"."""
    m = re.fullmatch(r"(.+)_s(\d+)", name)
    return m.group(1) if m and m.group(1) in GRID else name


def rate_source(name: str) -> str:
    """The grid model whose swept learning rate `name` trains at: itself, or the model it is a variant of."""
    base = base_name(name)
    return GRID[base].get("rate_of", base)


def replicate_names(cfg: Config, models: tuple[str, ...] | None = None) -> list[str]:
    """Every grid model and its seed replicates (experiment.seeds): lstm, lstm_s2, …"""
    out = []
    for name in models or cfg.experiment.models:
        out += [name] + [f"{name}_s{k}" for k in range(2, cfg.experiment.seeds.get(name, 1) + 1)]
    return out


def pieces_per_step(cfg: Config) -> int:
    return cfg.data.batch_size * cfg.data.bptt


def variant_config(cfg: Config, name: str, hidden: int | None = None, train_minutes: float | None = None,
                   lr: float | None = None, pieces: int | None = None, validate_every: int | None = None) -> Config:
    """The config of one grid model (or seed replicate, "lstm_s2": train.seed + 1): the cell and what sets it apart
    (GRID), its hidden size, learning rate, budget (`pieces` read: max_steps, no time limit; else train_minutes),
    validation every `validate_every` pieces, the experiment's MLflow experiment and its own run directory name."""
    base = base_name(name)
    spec = GRID[base]
    s = scale_of(cfg)
    layers = cfg.experiment.residual_layers if spec.get("residual") else cfg.model.num_layers
    init = spec.get("init", cfg.experiment.rnn_init if spec["cell"] == "rnn_tanh" else "default")
    model = dataclasses.replace(cfg.model, cell=spec["cell"], init=init,
                                gate_bias=cfg.model.gate_bias if spec["cell"] in ("lstm", "gru") else None,
                                residual=bool(spec.get("residual", False)), num_layers=layers,
                                embedding_dim=max(1, round(cfg.model.embedding_dim * s)),
                                hidden_dim=hidden or max(1, round(cfg.model.hidden_dim * s)))
    clip = None if "clip" in spec and spec["clip"] is None else cfg.train.gradient_clip_val
    seed = cfg.train.seed + (int(name.rsplit("_s", 1)[1]) - 1 if base != name else 0)
    train = dataclasses.replace(cfg.train, gradient_clip_val=clip, seed=seed, lr=cfg.train.lr if lr is None else lr,
                                max_time_minutes=train_minutes if train_minutes is not None else
                                cfg.train.max_time_minutes)
    if pieces is not None:  # equal data: a number of steps, no clock
        step = pieces_per_step(cfg)
        every = max(1, round((validate_every or pieces) / step))
        train = dataclasses.replace(train, max_steps=max(1, round(pieces / step)), max_time_minutes=None,
                                    max_epochs=10_000, val_check_interval=float(every),
                                    checkpoint_every_n_steps=min(train.checkpoint_every_n_steps, every))
    tracking = dataclasses.replace(cfg.tracking, experiment=cfg.tracking.experiment or cfg.name)
    return cfg.replace(name=f"{cfg.name}-{name}", model=model, train=train, tracking=tracking)


def count_parameters(cfg: Config, vocab_size: int) -> tuple[int, int]:
    """(all parameters, those of the recurrent layers) of the config's model, by building it."""
    from models.build import build_model, model_args

    m = build_model(model_args(cfg.model, vocab_size))
    return sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.layers.parameters())


def match_parameters(cfg: Config, vocab_size: int) -> dict[str, dict[str, Any]]:
    """Per grid model the hidden size whose parameter count is closest to the reference model's (`model` at
    hidden_dim × scale); an error when one cannot get within experiment.parameter_tolerance."""
    s = scale_of(cfg)
    ref_cfg = cfg.replace(model=dataclasses.replace(cfg.model, hidden_dim=max(1, round(cfg.model.hidden_dim * s)),
                                                    embedding_dim=max(1, round(cfg.model.embedding_dim * s))))
    target, _ = count_parameters(ref_cfg, vocab_size)
    out: dict[str, dict[str, Any]] = {}
    for name in cfg.experiment.models:
        def total(h: int) -> int:
            return count_parameters(variant_config(cfg, name, h), vocab_size)[0]

        lo, hi = 1, max(8, 16 * ref_cfg.model.hidden_dim)
        while lo < hi:  # smallest h with total(h) >= target (the count grows with h)
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if total(mid) < target else (lo, mid)
        h = min((c for c in (lo - 1, lo) if c >= 1), key=lambda c: abs(total(c) - target))
        params, recurrent = count_parameters(variant_config(cfg, name, h), vocab_size)
        off = params / target - 1
        if abs(off) > cfg.experiment.parameter_tolerance:
            raise ConfigError(f"experiment: {name} cannot match {target} parameters within "
                              f"{cfg.experiment.parameter_tolerance:.0%} (best: hidden {h}, {params}); change "
                              "model.hidden_dim or experiment.parameter_tolerance")
        out[name] = {"hidden_dim": h, "num_layers": variant_config(cfg, name, h).model.num_layers,
                     "parameters": params, "recurrent_parameters": recurrent, "relative_to_target": off}
    return {"target": target, "models": out}


def plan_budget(cfg: Config, n_models: int | None = None) -> dict[str, float]:
    """Minutes for each part of the grid; every model gets the same `train_minutes`."""
    ec = cfg.experiment
    n = n_models if n_models is not None else len(ec.models)
    fixed = ec.overhead_minutes + n * ec.eval_minutes_per_model + ec.longrange_minutes
    rest = ec.budget_minutes - fixed
    if rest <= 0:
        raise ConfigError(f"experiment.budget_minutes={ec.budget_minutes} leaves no training time after the "
                          f"reserves ({fixed:.1f} min: overhead {ec.overhead_minutes} + {n} × eval "
                          f"{ec.eval_minutes_per_model} + long-range {ec.longrange_minutes}); give more minutes or "
                          "lower the reserves")
    lr_min, ex_min = ec.longrange_minutes, rest * ec.exploding_share
    return {"budget_minutes": ec.budget_minutes, "models": n, "overhead_minutes": ec.overhead_minutes,
            "eval_minutes_per_model": ec.eval_minutes_per_model, "longrange_minutes": lr_min,
            "exploding_minutes": ex_min, "train_minutes": (rest - ex_min) / n}
