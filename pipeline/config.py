"""YAML -> typed, frozen config. The only place a config file is read or checked.

Every user mistake (unknown key, wrong type, value out of range) is a `ConfigError` naming the file, the key and
what is allowed; nothing downstream re-validates.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class DataConfig:
    # `hub` names a Hugging Face dataset (needs internet); otherwise train/validation/test are local files or globs,
    # relative to the project root unless absolute. Without validation/test files, train is split by a seeded hash.
    hub: str | None = None
    hub_config: str | None = None
    train: str = "data/corpus/train.jsonl"
    validation: str | None = "data/corpus/validation.jsonl"
    test: str | None = "data/corpus/test.jsonl"
    format: Literal["auto", "json", "text", "csv", "parquet"] = "auto"
    text_field: str = "text"
    text_unit: Literal["line", "paragraph"] = "line"  # plain text: one document per line or per blank-line block
    split_fractions: tuple[float, float] = (0.05, 0.05)  # validation, test shares when splitting by hash
    split_seed: int = 1234
    min_devanagari: float = 0.5
    min_words: int = 2
    max_documents: int | None = None  # per split, for quick runs
    streaming: bool = False
    num_proc: int = 1
    cache_dir: str = "data/cache"
    batch_size: int = 32
    eval_batch_size: int = 16
    bptt: int = 64
    variable_bptt: bool = False


@dataclass(frozen=True)
class TokenizerConfig:
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    input_sentence_size: int = 2_000_000
    seed: int = 1234


@dataclass(frozen=True)
class ModelConfig:
    cell: Literal["rnn_tanh", "rnn_relu", "lstm", "gru"] = "lstm"
    embedding_dim: int = 256
    hidden_dim: int = 256
    num_layers: int = 2
    dropout: float = 0.2
    tie_weights: bool = True
    init: Literal["default", "identity", "scaled"] = "default"
    init_scale: float = 1.0  # for init=scaled: recurrent weights = init_scale * orthogonal
    gate_bias: float | None = None  # lstm / gru: initial bias of the forget / update gate; null: torch's default
    residual: bool = False
    output: Literal["softmax", "adaptive"] = "softmax"
    cutoffs: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    warmup_steps: int = 0
    max_epochs: int = 3
    max_steps: int = -1
    max_time_minutes: float | None = None
    gradient_clip_val: float | None = 0.25
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    checkpoint_every_n_steps: int = 200
    early_stopping_patience: int = 3
    val_check_interval: float | int = 1.0
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = 10
    allow_divergence: bool = False
    num_threads: int | None = None
    runs_dir: str = "runs"
    trainer: dict[str, Any] = field(default_factory=dict)  # passed to lightning.Trainer unchanged


@dataclass(frozen=True)
class EvalConfig:
    split: Literal["validation", "test"] = "test"
    k: int = 5
    beam_width: int = 8
    max_beam_width: int = 128  # a row the width-8 search cannot prove exact is searched again, 4x wider, up to this
    max_word_pieces: int = 12
    # Which words are scored: null = every word of the split; else a seeded sample of this many words, stratified by
    # document length so that long documents keep their share (pipeline/evaluation/sampling.py). Never "the first N documents".
    max_words: int | None = None
    sample_seed: int = 1234
    context_lengths: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    # Context-length curve per text kind on every scored position with at least this many words before it; the curve
    # reads c = each context_length up to that many words. A kind left out gets no curve; {} draws none.
    context_curves: dict[str, int] = field(default_factory=lambda: {"verse": 256, "prose": 64, "all": 256})
    # Text kinds (pipeline/evaluation/text_kinds.py): a document's `source_field` value is matched against each
    # kind's glob patterns in order, the first match wins; a document without one is of kind "all".
    source_field: str | None = "source"
    kinds: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "prose": ("mahasquad-wiki-paragraphs",), "verse": ("wikisource-*",), "short": ("*",)})
    # Intervals on natural text: a document-clustered bootstrap (pipeline/evaluation/bootstrap.py); a document is cut
    # into blocks of this many words, each block a cluster (0: whole documents).
    cluster_block_words: int = 256
    bootstrap_replicates: int = 1000
    bootstrap_seed: int = 1234
    paired_reference: str = "rnn_tanh"  # every other model's paired difference is taken against this one, if scored
    long_document_words: int = 512
    probes: str | None = "data/probes/probes.jsonl"
    ngram_order: int = 4
    batch_size: int = 64
    # Keystroke savings (pipeline/evaluation/keystrokes.py): a typist with a bar of this many suggestions replays the
    # scored words; off, evaluation skips it (it costs about as much as the top-k pass)
    keystrokes: bool = True
    keystroke_slots: int = 3


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str | None = None  # default: the config file's name
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    artifact_location: str = "mlartifacts"
    register: bool = True


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "models:/marathi-nwp-lstm@champion"
    max_text_chars: int = 10_000
    max_batch: int = 64
    max_request_chars: int = 50_000   # all texts of one request together
    max_context_pieces: int = 512     # a longer text is read from its last word that fits (no bos: mid-document)
    max_word_chars: int = 40          # a typed prefix longer than this is refused (422): no word completes it
    cache_entries: int = 256
    cache_megabytes: float = 64.0
    # POST /explain and the page's side-by-side panel: these networks, alone, with the reach of their top suggestion
    explain: tuple[str, ...] = ("models:/marathi-nwp-rnn_tanh@champion", "models:/marathi-nwp-lstm@champion")
    # "looks back N words": the farthest word with at least this share of the largest influence; the page shades on a
    # log scale from it (influence spans decades: a tanh RNN's falls ~10^-8 over 37 words)
    explain_threshold: float = 0.001


GRID_MODELS = ("rnn_tanh", "rnn_tanh_noclip", "irnn", "rnn_tanh_residual", "gru", "lstm")
LONGRANGE_CELLS = ("rnn_tanh", "irnn", "rnn_tanh_residual", "gru_z1", "gru_z3", "lstm_f1", "lstm_f3",
                   "lstm_f3_fullvocab")


@dataclass(frozen=True)
class MixtureConfig:
    """The network mixed with the n-gram and a neural cache (pipeline/evaluation/mixture.py), fitted on validation."""
    candidates: int = 20          # K: each part's top K words are re-scored under the mixture
    thetas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)   # cache sharpness θ, chosen on validation
    windows: tuple[int, ...] = (100, 500, 2000)          # cache length W in words, chosen on validation
    # the cache leaves out the last s words (what was just typed), s chosen on validation for the best (θ, W)
    cache_skips: tuple[int, ...] = (0, 1, 2, 3)
    rank_words: int = 2000        # validation words (a seeded sample) the skip is chosen on, by the bar's top 3
    fit_words: int = 20000        # validation words (seeded, word-weighted sample) the weights are fitted on
    em_iterations: int = 100


@dataclass(frozen=True)
class ExperimentConfig:
    # The comparison grid (`python -m pipeline experiment`, pipeline/experiments/grid.py). Every model gets the parameter
    # count of `model` (its cell, hidden_dim × scale, num_layers) by choosing its own hidden size.
    models: tuple[Literal["rnn_tanh", "rnn_tanh_noclip", "irnn", "rnn_tanh_residual", "gru", "lstm"], ...] = GRID_MODELS
    residual_layers: int = 3  # layers of the residual rnn_tanh stack (skip connections around layers 2…)
    baseline: bool = True  # the eval.ngram_order Kneser-Ney row
    parameter_tolerance: float = 0.10  # relative; an unreachable match is an error
    scale: float | None = None  # hidden/embedding multiplier; null: 1 on CPU, gpu_scale when the Trainer uses a GPU
    gpu_scale: float = 4.0
    # The budget: whole grid in budget_minutes. Fixed reserves first, then shares of the rest; training gets what is
    # left, the same train.max_time_minutes for every model.
    budget_minutes: float = 120.0
    overhead_minutes: float = 6.0  # prepare, baseline build + evaluation, report
    eval_minutes_per_model: float = 3.0  # test-split evaluation, probes, gradient curves, model logging (estimate)
    longrange_minutes: float = 15.0  # fixed reserve for the long-range task (measured: 29.8 CPU min in 2 processes)
    exploding_share: float = 0.04
    exploding_steps: int = 400  # per run (unclipped, clipped); also bounded by its time share
    exploding_init_scale: float = 1.5
    exploding_lr: float = 5.0
    exploding_clip: float = 0.25  # the clipped demo run: bounds each SGD step to lr x clip
    gradient_windows: int = 64
    # The long-range task (pipeline/experiments/longrange.py, `python -m pipeline longrange`): one fresh model per (cell, d,
    # seed) trained at that d only, at most longrange_steps steps, stopped once solved; lstm_f3_fullvocab is the
    # ablation (the old protocol: full-vocabulary loss, ±0.1 embeddings).
    longrange_cells: tuple[Literal["rnn_tanh", "irnn", "rnn_tanh_residual", "gru_z1", "gru_z3", "lstm_f1",
                                   "lstm_f3", "lstm_f3_fullvocab"], ...] = LONGRANGE_CELLS
    longrange_distances: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    longrange_seeds: int = 3
    longrange_steps: int = 1500
    longrange_eval_every: int = 50
    longrange_hidden: int = 64
    longrange_embedding: int = 32
    longrange_batch: int = 32
    longrange_lr: float = 0.002
    longrange_n_test: int = 500  # test items per (cell, d, seed); validation the same number, another stream
    longrange_workers: int = 2  # processes, one torch thread each
    # Which grid models get the context-length curves (null: all): on the full test split they are the costliest
    # part of a model's evaluation (~5 min each on 2 cores); the others get the tables by kind without them.
    curve_models: tuple[str, ...] | None = None
    # Keystroke savings of every grid model on one seeded sample of this many test words (null: every word; off with
    # eval.keystrokes=false); the typist replays a word up to its length in searches: 5,000 words take 2-3 minutes
    # per model on 2 cores, beyond eval_minutes_per_model
    keystroke_words: int | None = 5000
    log_models: bool = True  # log each trained model as a pyfunc (so `--model RUN_ID` works); no registration
    report_dir: str = "reports"  # writes <report_dir>/experiment.md and <report_dir>/experiment/*.png


@dataclass(frozen=True)
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out

    def hash(self, *sections: str, without: tuple[str, ...] = ()) -> str:
        """SHA-256 (16 hex) of the given sections (all when none): equal hash, same run. Paths count relative to the
        project root, so a clone elsewhere finds its own runs under the same names. `without`: "section.key"s left
        out (settings that do not change what the hashed run holds)."""
        d = self.to_dict()
        for dotted in without:
            section, key = dotted.split(".", 1)
            d.get(section, {}).pop(key, None)
        for section, key in PATH_FIELDS:
            if d[section].get(key) is not None:
                d[section][key] = os.path.relpath(d[section][key], PROJECT_ROOT)
        chosen = {s: d[s] for s in sections} if sections else d
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


# ---------------------------------------------------------------------------------------------- parsing and checks

_RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.batch_size": (1, None), "data.eval_batch_size": (1, None), "data.bptt": (2, None),
    "data.min_devanagari": (0.0, 1.0), "data.min_words": (1, None), "data.num_proc": (1, None),
    "data.max_documents": (1, None),
    "tokenizer.vocab_size": (16, 1_000_000), "tokenizer.input_sentence_size": (1, None),
    "model.embedding_dim": (1, None), "model.hidden_dim": (1, None), "model.num_layers": (1, None),
    "model.dropout": (0.0, 0.99), "model.init_scale": (0.0, None),
    "train.lr": (0.0, None), "train.weight_decay": (0.0, None), "train.momentum": (0.0, 1.0),
    "train.max_epochs": (1, None), "train.checkpoint_every_n_steps": (1, None), "train.warmup_steps": (0, None),
    "train.early_stopping_patience": (0, None), "train.log_every_n_steps": (1, None), "train.num_threads": (1, None),
    "train.gradient_clip_val": (0.0, None), "train.max_time_minutes": (0.0, None),
    "eval.k": (1, 100), "eval.beam_width": (1, 1000), "eval.max_beam_width": (1, 10000), "eval.max_word_pieces": (1, 64), "eval.ngram_order": (1, 10), "eval.keystroke_slots": (1, 10),
    "eval.batch_size": (1, None), "eval.long_document_words": (1, None), "eval.max_words": (1, None),
    "eval.cluster_block_words": (0, None),
    "eval.bootstrap_replicates": (100, None),
    "serve.port": (0, 65535), "serve.max_text_chars": (1, None), "serve.max_batch": (1, None), "serve.max_request_chars": (1, None),
    "serve.max_context_pieces": (1, None), "serve.max_word_chars": (1, 1000),
    "serve.cache_entries": (0, None), "serve.cache_megabytes": (0.0, None), "serve.explain_threshold": (1e-12, 1.0),
    "experiment.residual_layers": (2, None), "experiment.parameter_tolerance": (0.0, 1.0),
    "experiment.scale": (0.01, None), "experiment.gpu_scale": (0.01, None), "experiment.budget_minutes": (0.01, None),
    "experiment.overhead_minutes": (0.0, None), "experiment.eval_minutes_per_model": (0.0, None),
    "experiment.longrange_minutes": (0.0, None), "experiment.exploding_share": (0.0, 0.9),
    "experiment.exploding_steps": (1, None), "experiment.exploding_init_scale": (0.0, None),
    "experiment.exploding_lr": (0.0, None), "experiment.exploding_clip": (0.0, None), "experiment.gradient_windows": (1, None),
    "experiment.longrange_hidden": (1, None), "experiment.longrange_embedding": (1, None),
    "experiment.longrange_batch": (1, None), "experiment.longrange_n_test": (4, None),
    "experiment.longrange_seeds": (1, None), "experiment.longrange_steps": (1, None),
    "experiment.longrange_eval_every": (1, None), "experiment.longrange_lr": (0.0, None),
    "experiment.longrange_workers": (1, None),
    "mixture.candidates": (1, 1000), "mixture.fit_words": (1, None), "mixture.em_iterations": (1, None), "mixture.rank_words": (1, None),
}


_RENAMED = {"experiment.longrange_share": "use experiment.longrange_minutes (a fixed reserve: the long-range task "
                                         "has a fixed step budget, experiment.longrange_steps)",
            "eval.context_positions": "the context-length curve now scores every eligible position: set "
                                      "eval.context_curves (text kind -> words of context needed), {} for none",
            "eval.max_documents": "use eval.max_words (a seeded sample of that many words, long documents keeping "
                                  "their share; null scores every word) instead of the first N documents"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: got {value!r} ({type(value).__name__}); expected {_describe(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item, *rest) = typing.get_args(tp)
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Any:
        return value
    raise bad


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    for key in unknown:
        if f"{where}.{key}" in _RENAMED:
            raise ConfigError(f"{source}: key '{where}.{key}' was replaced: {_RENAMED[f'{where}.{key}']}")
    if unknown:
        raise ConfigError(f"{source}: unknown key '{where}.{unknown[0]}' (allowed in '{where}': "
                          f"{', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{where}.{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, source)
            continue
        kwargs[name] = _coerce(value, tp, f"{source}: key '{key}'")
        lo, hi = _RANGES.get(key, (None, None))
        v = kwargs[name]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                span = f"[{lo}, {hi if hi is not None else '∞'}]"
                raise ConfigError(f"{source}: key '{key}' = {v} is out of range; allowed {span}")
    return cls(**kwargs)


def _check(cfg: Config, source: str) -> None:
    m = cfg.model
    if m.gate_bias is not None and m.cell not in ("lstm", "gru"):
        raise ConfigError(f"{source}: model.gate_bias={m.gate_bias} sets the LSTM forget gate or the GRU update gate; "
                          f"model.cell '{m.cell}' has neither: use lstm or gru, or gate_bias: null")
    if m.init == "identity" and m.cell not in ("rnn_relu", "rnn_tanh"):
        raise ConfigError(f"{source}: model.init='identity' (IRNN) needs model.cell 'rnn_relu' (or 'rnn_tanh'), "
                          f"got '{m.cell}'")
    if m.output == "adaptive":
        if not m.cutoffs or list(m.cutoffs) != sorted(set(m.cutoffs)) or m.cutoffs[-1] >= cfg.tokenizer.vocab_size:
            raise ConfigError(f"{source}: model.output='adaptive' needs model.cutoffs, increasing and below "
                              f"tokenizer.vocab_size={cfg.tokenizer.vocab_size}, e.g. [1000, 3000]")
    if sum(cfg.data.split_fractions) >= 1.0 or min(cfg.data.split_fractions) < 0:
        raise ConfigError(f"{source}: data.split_fractions {list(cfg.data.split_fractions)} must be >= 0 "
                          "and sum to less than 1")
    e = cfg.experiment
    if not e.models or len(set(e.models)) != len(e.models):
        raise ConfigError(f"{source}: experiment.models {list(e.models)} must name at least one model, each once "
                          f"(allowed: {', '.join(GRID_MODELS)})")
    if e.curve_models is not None and not set(e.curve_models) <= set(e.models):
        raise ConfigError(f"{source}: experiment.curve_models {list(e.curve_models)} must name models of "
                          f"experiment.models {list(e.models)} (or be null for all)")
    if not e.longrange_cells or len(set(e.longrange_cells)) != len(e.longrange_cells):
        raise ConfigError(f"{source}: experiment.longrange_cells {list(e.longrange_cells)} must name at least one "
                          f"cell, each once (allowed: {', '.join(LONGRANGE_CELLS)})")
    if not e.longrange_distances or min(e.longrange_distances) < 2:
        raise ConfigError(f"{source}: experiment.longrange_distances {list(e.longrange_distances)} must be "
                          "non-empty and each >= 2 (cue, query word, verb)")
    if cfg.data.hub is None and not cfg.data.train:
        raise ConfigError(f"{source}: set data.train (a file or glob) or data.hub (a dataset name)")
    ev = cfg.eval
    for kind, patterns in ev.kinds.items():
        if not isinstance(patterns, (list, tuple)) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{source}: eval.kinds.{kind} must be a non-empty list of source patterns (globs), "
                              "e.g. kinds: {verse: ['wikisource-*'], short: ['*']}")
    for kind, words in ev.context_curves.items():
        if isinstance(words, bool) or not isinstance(words, int) or words < 1:
            raise ConfigError(f"{source}: eval.context_curves.{kind} = {words!r} must be a whole number of words >= 1 "
                              "(the context a position needs to be on that kind's curve), e.g. {verse: 256}")
    mx = cfg.mixture
    if not mx.thetas or min(mx.thetas) < 0 or not mx.windows or min(mx.windows) < 1:
        raise ConfigError(f"{source}: mixture.thetas {list(mx.thetas)} must be non-empty and >= 0, mixture.windows "
                          f"{list(mx.windows)} non-empty and >= 1 (words), e.g. thetas: [0.1, 0.3], windows: [500]")
    if not mx.cache_skips or min(mx.cache_skips) < 0 or max(mx.cache_skips) >= min(mx.windows):
        raise ConfigError(f"{source}: mixture.cache_skips {list(mx.cache_skips)} must be non-empty, >= 0 and below "
                          f"every window ({min(mx.windows)}), e.g. [0, 1, 2, 3]")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set model.cell=gru")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults), apply `--set key=value` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass one of configs/*.yaml with --config")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections (data, model, train, ...)")
        raw.setdefault("name", p.stem)
    return build_config(raw, overrides, source)


def build_config(raw: dict[str, Any], overrides: list[str] = (), source: str = "defaults") -> Config:
    """A validated Config from a plain mapping (a YAML file's content, or `Config.to_dict()`) and overrides."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
    if not isinstance(raw.get("name", "default"), str):
        raise ConfigError(f"{source}: key 'name' must be a string")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown section '{unknown[0]}' (allowed: {', '.join(sections)})")
    hints = typing.get_type_hints(Config)
    kwargs = {"name": raw.get("name", "default")}
    for name in sections:
        if name != "name" and name in raw:
            kwargs[name] = _build(hints[name], raw[name], name, source)
    cfg = Config(**kwargs)
    _check(cfg, source)
    return _with_resolved_paths(cfg)


# Every file or directory a config names: resolved once, here, so later code opens them as they are.
PATH_FIELDS = (("data", "train"), ("data", "validation"), ("data", "test"), ("data", "cache_dir"),
               ("train", "runs_dir"), ("eval", "probes"), ("tracking", "artifact_location"),
               ("experiment", "report_dir"))


def _with_resolved_paths(cfg: Config) -> Config:
    sections: dict[str, Any] = {}
    for section, key in PATH_FIELDS:
        current = sections.get(section, getattr(cfg, section))
        value = getattr(current, key)
        if value is not None:
            sections[section] = dataclasses.replace(current, **{key: os.path.normpath(resolve_path(value))})
    return cfg.replace(**sections)


def resolve_path(path: str | Path) -> Path:
    """A relative path means the current directory when it exists there, else the project root (so the shipped
    configs work from any directory)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.absolute()
    return PROJECT_ROOT / p
