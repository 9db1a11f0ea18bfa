"""The experiment's config sections (re-exported by pipeline/config.py, which reads and checks every config): the
mixture fitted with each network, and the comparison experiment with its controlled long-range task."""
from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config_check import Bool, ConfigError, Float, Int, Str, section

GRID_MODELS = ("rnn_tanh", "rnn_tanh_noclip", "irnn", "rnn_tanh_residual", "gru", "lstm")
# every cell of pipeline/experiments/longrange_train.py (a test keeps them equal); the default grid leaves out the
# residual stack (not a start of the plain cell) and holds the 2 × 2 ablation's three non-protocol rows
LONGRANGE_CELLS = ("rnn_tanh", "rnn_tanh_orth", "irnn", "rnn_tanh_residual", "gru_z1", "gru_z3", "gru_chrono",
                   "lstm_f1", "lstm_f3", "lstm_chrono", "lstm_f3_vocabloss", "lstm_f3_smallemb", "lstm_f3_fullvocab")
LONGRANGE_GRID = tuple(c for c in LONGRANGE_CELLS if c != "rnn_tanh_residual")


@section("mixture")
class MixtureConfig:
    """The network mixed with the n-gram and a neural cache (pipeline/evaluation/mixture.py), fitted on validation."""
    candidates: Int = Field(20, ge=1, le=1000)  # K: each part's top K words are re-scored under the mixture
    thetas: tuple[Float, ...] = (0.03, 0.1, 0.3, 1.0)   # cache sharpness θ, chosen on validation
    windows: tuple[Int, ...] = (100, 500, 2000)          # cache length W in words, chosen on validation
    # the cache leaves out the last s words (what was just typed), s chosen on validation for the best (θ, W)
    cache_skips: tuple[Int, ...] = (0, 1, 2, 3)
    rank_words: Int = Field(2000, ge=1)   # validation words (a seeded sample) the skip is chosen on, by the bar's top 3
    # ... among the skips whose bar repeats one of the last 3 words at most this many times as often as the text does
    # (a bar that echoes what was just typed wastes its slots); none qualifying: the skip that echoes least
    echo_limit: Float = Field(2.0, gt=0)
    fit_words: Int = Field(20000, ge=1)   # validation words (seeded, word-weighted sample) the weights are fitted on
    em_iterations: Int = Field(100, ge=1)

    @model_validator(mode="after")
    def _rules(self) -> MixtureConfig:
        if not self.thetas or min(self.thetas) < 0 or not self.windows or min(self.windows) < 1:
            raise ConfigError(f"mixture.thetas {list(self.thetas)} must be non-empty and >= 0, mixture.windows "
                              f"{list(self.windows)} non-empty and >= 1 (words), e.g. thetas: [0.1, 0.3], windows: [500]")
        if not self.cache_skips or min(self.cache_skips) < 0 or max(self.cache_skips) >= min(self.windows):
            raise ConfigError(f"mixture.cache_skips {list(self.cache_skips)} must be non-empty, >= 0 and below "
                              f"every window ({min(self.windows)}), e.g. [0, 1, 2, 3]")
        return self


@section("experiment")
class ExperimentConfig:
    # The comparison grid (`python -m pipeline experiment`, pipeline/experiments/grid.py). Every model gets the parameter
    # count of `model` (its cell, hidden_dim × scale, num_layers) by choosing its own hidden size.
    models: tuple[Literal["rnn_tanh", "rnn_tanh_noclip", "irnn", "rnn_tanh_residual", "gru", "lstm"], ...] = GRID_MODELS
    residual_layers: Int = Field(3, ge=2)  # layers of the residual rnn_tanh stack (skip connections around layers 2…)
    baseline: Bool = True  # the eval.ngram_order Kneser-Ney row
    parameter_tolerance: Float = Field(0.10, ge=0.0, le=1.0)  # relative; an unreachable match is an error
    # hidden/embedding multiplier; null: 1 on CPU, gpu_scale when the Trainer uses a GPU
    scale: Float | None = Field(None, ge=0.01)
    gpu_scale: Float = Field(4.0, ge=0.01)
    # The budget: whole grid in budget_minutes. Fixed reserves first, then shares of the rest; training gets what is
    # left, the same train.max_time_minutes for every model.
    budget_minutes: Float = Field(120.0, ge=0.01)
    overhead_minutes: Float = Field(6.0, ge=0.0)  # prepare, baseline build + evaluation, report
    # test-split evaluation, probes, gradient curves, model logging (estimate)
    eval_minutes_per_model: Float = Field(3.0, ge=0.0)
    # fixed reserve for the long-range task (measured: 29.8 CPU min in 2 processes)
    longrange_minutes: Float = Field(15.0, ge=0.0)
    exploding_share: Float = Field(0.04, ge=0.0, le=0.9)
    exploding_steps: Int = Field(400, ge=1)  # per run (unclipped, clipped); also bounded by its time share
    exploding_init_scale: Float = Field(1.5, ge=0.0)
    exploding_lr: Float = Field(5.0, ge=0.0)
    exploding_clip: Float = Field(0.25, ge=0.0)  # the clipped demo run: bounds each SGD step to lr x clip
    gradient_windows: Int = Field(64, ge=1)
    # The long-range task (pipeline/experiments/longrange*.py, `python -m pipeline longrange`): one fresh model per
    # (cell, d, seed) trained at that d only, at most longrange_steps steps, stopped once solved; a cell climbs the
    # distances in order and stops after a d no seed solves. Each cell's learning rate: the best of longrange_lrs in
    # a sweep at longrange_sweep_d (longrange_sweep_seeds seeds apart from the grid's, ≤ longrange_sweep_steps steps).
    # lstm_f3_vocabloss / _smallemb / _fullvocab: the 2 × 2 ablation of the old protocol (full-vocabulary loss,
    # ±0.1 embeddings) around lstm_f3, at longrange_ablation_distances only.
    longrange_cells: tuple[Literal["rnn_tanh", "rnn_tanh_orth", "irnn", "rnn_tanh_residual", "gru_z1", "gru_z3",
                                   "gru_chrono", "lstm_f1", "lstm_f3", "lstm_chrono", "lstm_f3_vocabloss",
                                   "lstm_f3_smallemb", "lstm_f3_fullvocab"], ...] = LONGRANGE_GRID
    longrange_distances: tuple[Int, ...] = (5, 10, 20, 50, 100, 200, 400)
    longrange_seeds: Int = Field(5, ge=1)
    longrange_steps: Int = Field(4000, ge=1)
    longrange_eval_every: Int = Field(50, ge=1)
    longrange_hidden: Int = Field(64, ge=1)
    longrange_embedding: Int = Field(32, ge=1)
    longrange_batch: Int = Field(32, ge=1)
    # chrono init (Tallec & Ollivier 2018) of the *_chrono cells: keep-gate biases log U(1, T_max − 1)
    longrange_t_max: Float = Field(400.0, gt=2.0)
    longrange_lrs: tuple[Float, ...] = (0.001, 0.002, 0.005)
    longrange_sweep_d: Int = Field(20, ge=2)
    longrange_sweep_seeds: Int = Field(2, ge=1)
    longrange_sweep_steps: Int = Field(1000, ge=1)
    longrange_ablation_distances: tuple[Int, ...] = (10, 50)
    # test items per (cell, d, seed); validation the same number, another stream
    longrange_n_test: Int = Field(500, ge=4)
    longrange_workers: Int = Field(2, ge=1)  # processes, one torch thread each
    # the jobs' CPU time in all (sweep included); a (cell, d) whose worst case does not fit is "not run"
    longrange_cpu_minutes: Float = Field(60.0, gt=0.0)
    longrange_wall_minutes: Float | None = Field(None, gt=0.0)  # also stop an invocation after this long
    # Which grid models get the context-length curves (null: all): on the full test split they are the costliest
    # part of a model's evaluation (~5 min each on 2 cores); the others get the tables by kind without them.
    curve_models: tuple[Str, ...] | None = None
    # Keystroke savings of every grid model on one seeded sample of this many test words (null: every word; off with
    # eval.keystrokes=false); the typist replays a word up to its length in searches: 5,000 words take 2-3 minutes
    # per model on 2 cores, beyond eval_minutes_per_model
    keystroke_words: Int | None = 5000
    log_models: Bool = True  # log each trained model as a pyfunc (so `--model RUN_ID` works); no registration
    # Training parity (issue 27). Equal data: every grid model reads train_pieces pieces (its time is reported; null:
    # the old equal-time budget, train.max_time_minutes from budget_minutes). Validation loss, and a kept checkpoint,
    # every validation_every_pieces pieces (the matched-quality pair is chosen among them).
    train_pieces: Int | None = Field(4_000_000, ge=1)
    validation_every_pieces: Int = Field(500_000, ge=1)
    # Each model of lr_sweep_models gets the learning rate of lr_sweep with the lowest validation loss after
    # lr_sweep_pieces pieces (one seed); the other grid models keep train.lr.
    lr_sweep: tuple[Float, ...] = (0.001, 0.002, 0.003, 0.005)
    lr_sweep_models: tuple[Str, ...] = ("rnn_tanh", "lstm", "gru")
    lr_sweep_pieces: Int = Field(1_000_000, ge=1)
    lr_sweep_extend: Int = Field(2, ge=0)  # rates tried past an edge optimum (half the lowest / twice the highest)
    # Seeds per grid model (train.seed, train.seed + 1, …): the comparison's verdict must hold in each
    seeds: dict[Str, Int] = field(default_factory=lambda: {"rnn_tanh": 2, "lstm": 2})
    # The tanh RNNs' recurrent init: orthogonal, the fairer start (on the controlled task it reached d = 20 against
    # the PyTorch default's d = 10: reports/experiment.md, long-range task)
    rnn_init: Literal["default", "orthogonal"] = "orthogonal"
    # Pre-registered decision rules (written before the run; the report prints them above its verdict): at matched
    # quality the LSTM "reads further" on a kind where, in every seed, its Δ(c) for c > decision_beyond exceeds the
    # tanh RNN's with a clustered interval excluding zero, its effective context is longer and its copy effect at
    # distances > decision_beyond is larger; "no difference" where every such paired interval lies within
    # ±decision_no_difference_nats; anything else is "unresolved", with its n.
    decision_beyond: Int = Field(16, ge=1)
    decision_no_difference_nats: Float = Field(0.02, gt=0)
    report_dir: Str = "reports"  # writes <report_dir>/experiment.md and <report_dir>/experiment/*.png

    @model_validator(mode="after")
    def _rules(self) -> ExperimentConfig:
        if not self.models or len(set(self.models)) != len(self.models):
            raise ConfigError(f"experiment.models {list(self.models)} must name at least one model, each once "
                              f"(allowed: {', '.join(GRID_MODELS)})")
        if self.curve_models is not None and not set(self.curve_models) <= set(self.models):
            raise ConfigError(f"experiment.curve_models {list(self.curve_models)} must name models of "
                              f"experiment.models {list(self.models)} (or be null for all)")
        if not self.longrange_cells or len(set(self.longrange_cells)) != len(self.longrange_cells):
            raise ConfigError(f"experiment.longrange_cells {list(self.longrange_cells)} must name at least one "
                              f"cell, each once (allowed: {', '.join(LONGRANGE_CELLS)})")
        if not self.longrange_distances or min(self.longrange_distances) < 2 \
                or min(self.longrange_ablation_distances, default=2) < 2:
            raise ConfigError(f"experiment.longrange_distances {list(self.longrange_distances)} must be "
                              "non-empty and each >= 2 (cue, query word, verb), and so must each of "
                              f"experiment.longrange_ablation_distances {list(self.longrange_ablation_distances)}")
        unknown = (set(self.lr_sweep_models) | set(self.seeds)) - set(GRID_MODELS)
        if unknown:
            raise ConfigError(f"experiment.lr_sweep_models / experiment.seeds name {sorted(unknown)}: not grid models "
                              f"({', '.join(GRID_MODELS)})")
        if not self.lr_sweep or min(self.lr_sweep) <= 0 or min(self.seeds.values(), default=1) < 1:
            raise ConfigError(f"experiment.lr_sweep {list(self.lr_sweep)} must name learning rates > 0 and every "
                              f"experiment.seeds count be >= 1, e.g. lr_sweep: [0.001, 0.003], seeds: {{lstm: 2}}")
        if not self.longrange_lrs or min(self.longrange_lrs) <= 0:
            raise ConfigError(f"experiment.longrange_lrs {list(self.longrange_lrs)} must name at least one learning "
                              "rate > 0 for the per-cell sweep, e.g. [0.001, 0.002, 0.005]")
        return self
