"""YAML -> typed, frozen config. The only place a config file is read or checked.

Every section is a frozen pydantic dataclass whose fields carry their type and range, so a section is checked
whenever one is built: on load, on `--set key=value`, and on `dataclasses.replace(...)` / `Config.replace(...)`.
Every mistake (unknown key, wrong type, value out of range, settings that contradict each other) is a
`ConfigError` naming the file (or the --set), the key, the value and what is allowed; nothing downstream re-checks.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.config_check import Bool, ConfigError, Float, Int, Str, explain, section
# the experiment's sections (the mixture, the grid, the long-range task) live in config_experiment.py; re-exported
from pipeline.config_experiment import (  # noqa: F401
    GRID_MODELS,
    LONGRANGE_CELLS,
    LONGRANGE_GRID,
    ExperimentConfig,
    MixtureConfig,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@section("data")
class DataConfig:
    # `hub` names a Hugging Face dataset (needs internet); otherwise train/validation/test are local files or globs,
    # relative to the project root unless absolute. Without validation/test files, train is split by a seeded hash.
    hub: Str | None = None
    hub_config: Str | None = None
    train: Str | None = "data/corpus/train.jsonl"
    validation: Str | None = "data/corpus/validation.jsonl"
    test: Str | None = "data/corpus/test.jsonl"
    format: Literal["auto", "json", "text", "csv", "parquet"] = "auto"
    text_field: Str = "text"
    text_unit: Literal["line", "paragraph"] = "line"  # plain text: one document per line or per blank-line block
    split_fractions: tuple[Float, Float] = (0.05, 0.05)  # validation, test shares when splitting by hash
    split_seed: Int = 1234
    min_devanagari: Float = Field(0.5, ge=0.0, le=1.0)
    min_words: Int = Field(2, ge=1)
    max_documents: Int | None = Field(None, ge=1)  # per split, for quick runs
    # Train on a seeded share of the training documents (the data one-factor check): the tokenizer is still trained on
    # every training document, so only the data the network reads changes; validation and test are untouched
    train_fraction: Float = Field(1.0, gt=0.0, le=1.0)
    streaming: Bool = False
    num_proc: Int = Field(1, ge=1)
    cache_dir: Str = "data/cache"
    batch_size: Int = Field(32, ge=1)
    eval_batch_size: Int = Field(16, ge=1)
    bptt: Int = Field(64, ge=2)
    variable_bptt: Bool = False

    @model_validator(mode="after")
    def _rules(self) -> DataConfig:
        if sum(self.split_fractions) >= 1.0 or min(self.split_fractions) < 0:
            raise ConfigError(f"data.split_fractions {list(self.split_fractions)} must be >= 0 and sum to less than 1")
        if self.hub is None and not self.train:
            raise ConfigError("set data.train (a file or glob) or data.hub (a dataset name)")
        return self


@section("tokenizer")
class TokenizerConfig:
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: Int = Field(8000, ge=16, le=1_000_000)
    input_sentence_size: Int = Field(2_000_000, ge=1)
    seed: Int = 1234


@section("model")
class ModelConfig:
    cell: Literal["rnn_tanh", "rnn_relu", "lstm", "gru"] = "lstm"
    embedding_dim: Int = Field(256, ge=1)
    hidden_dim: Int = Field(256, ge=1)
    num_layers: Int = Field(2, ge=1)
    dropout: Float = Field(0.2, ge=0.0, le=0.99)
    tie_weights: Bool = True
    init: Literal["default", "identity", "orthogonal", "scaled"] = "default"
    init_scale: Float = Field(1.0, ge=0.0)  # for init=scaled: recurrent weights = init_scale * orthogonal
    gate_bias: Float | None = None  # lstm / gru: initial bias of the forget / update gate; null: torch's default
    residual: Bool = False
    output: Literal["softmax", "adaptive"] = "softmax"
    cutoffs: tuple[Int, ...] = ()  # adaptive: increasing, below tokenizer.vocab_size (checked by Config)

    @model_validator(mode="after")
    def _rules(self) -> ModelConfig:
        if self.gate_bias is not None and self.cell not in ("lstm", "gru"):
            raise ConfigError(f"model.gate_bias={self.gate_bias} sets the LSTM forget gate or the GRU update gate; "
                              f"model.cell '{self.cell}' has neither: use lstm or gru, or gate_bias: null")
        if self.init == "identity" and self.cell not in ("rnn_relu", "rnn_tanh"):
            raise ConfigError(f"model.init='identity' (IRNN) needs model.cell 'rnn_relu' (or 'rnn_tanh'), "
                              f"got '{self.cell}'")
        if self.output == "adaptive" and (not self.cutoffs or list(self.cutoffs) != sorted(set(self.cutoffs))):
            raise ConfigError(f"model.output='adaptive' needs model.cutoffs, increasing and below "
                              f"tokenizer.vocab_size, e.g. [1000, 3000]; got {list(self.cutoffs)}")
        return self


# Lightning Trainer arguments `train.trainer` may set: where and how to train (hardware, precision, distribution,
# profiling). They are passed on unchanged and win over the pipeline's accelerator="cpu", devices=1. Named here,
# not read from Lightning, because the server loads configs without it; tests/pipeline/test_config.py checks that
# each is a parameter of `Trainer.__init__`.
TRAINER_KEYS = ("accelerator", "strategy", "devices", "num_nodes", "precision", "sync_batchnorm",
                "accumulate_grad_batches", "benchmark", "deterministic", "inference_mode", "detect_anomaly",
                "profiler", "enable_progress_bar")
# The other Trainer arguments are the pipeline's (pipeline/training/train.py make_trainer): set from these keys,
# or fixed because the run needs them (its logger, callbacks and checkpoints, run directory, data sampler).
_TRAINER_OWNED = {"max_epochs": "train.max_epochs", "max_steps": "train.max_steps",
                  "max_time": "train.max_time_minutes", "gradient_clip_val": "train.gradient_clip_val",
                  "gradient_clip_algorithm": "train.gradient_clip_algorithm",
                  "val_check_interval": "train.val_check_interval", "limit_val_batches": "train.limit_val_batches",
                  "log_every_n_steps": "train.log_every_n_steps", "default_root_dir": "train.runs_dir"}


@section("train")
class TrainConfig:
    seed: Int = 1234
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: Float = Field(3e-3, ge=0.0)
    weight_decay: Float = Field(0.0, ge=0.0)
    momentum: Float = Field(0.0, ge=0.0, le=1.0)
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    warmup_steps: Int = Field(0, ge=0)
    max_epochs: Int = Field(3, ge=1)
    max_steps: Int = -1
    max_time_minutes: Float | None = Field(None, ge=0.0)
    gradient_clip_val: Float | None = Field(0.25, ge=0.0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    checkpoint_every_n_steps: Int = Field(200, ge=1)
    early_stopping_patience: Int = Field(3, ge=0)
    # up to 1: a fraction of an epoch (of the validation split); above: a whole number of windows (batches)
    val_check_interval: Float | Int = Field(1.0, ge=0.0)
    limit_val_batches: Float | Int = Field(1.0, ge=0.0)
    log_every_n_steps: Int = Field(10, ge=1)
    allow_divergence: Bool = False
    num_threads: Int | None = Field(None, ge=1)
    runs_dir: Str = "runs"
    trainer: dict[Str, Any] = field(default_factory=dict)  # passed to lightning.Trainer unchanged (TRAINER_KEYS)

    @field_validator("val_check_interval", "limit_val_batches", mode="before")
    @classmethod
    def _file_numbers_are_floats(cls, value: Any, info: ValidationInfo) -> Any:
        """A number from a file or --set has always been read as a float: 1000 as 1000.0 (Lightning counts a whole
        float above 1 as batches), 1 as 1.0 (the whole epoch). Run hashes depend on it. In code an int 1 is one
        batch, as in Lightning."""
        from_file = info.context and info.context.get("from_file")
        return float(value) if from_file and type(value) is int else value

    @model_validator(mode="after")
    def _rules(self) -> TrainConfig:
        for key in ("val_check_interval", "limit_val_batches"):
            value = getattr(self, key)
            if value > 1 and value % 1:
                raise ConfigError(f"train.{key}={value}: above 1 it counts windows and must be whole; "
                                  "a fraction of an epoch is at most 1 (e.g. 0.5)")
        for key, value in self.trainer.items():
            if key in _TRAINER_OWNED:
                raise ConfigError(f"train.trainer.{key}={value!r}: the pipeline sets the Trainer's {key} from "
                                  f"{_TRAINER_OWNED[key]}; set that instead")
            if key not in TRAINER_KEYS:
                raise ConfigError(f"train.trainer.{key}={value!r} is not a Trainer argument the pipeline passes on; "
                                  f"allowed: {', '.join(TRAINER_KEYS)} (the others are set by the pipeline)")
        return self


@section("eval")
class EvalConfig:
    split: Literal["validation", "test"] = "test"
    k: Int = Field(5, ge=1, le=100)
    beam_width: Int = Field(8, ge=1, le=1000)
    # a row the width-8 search cannot prove exact is searched again, 4x wider, up to this
    max_beam_width: Int = Field(128, ge=1, le=10000)
    max_word_pieces: Int = Field(12, ge=1, le=64)
    # Which words are scored: null = every word of the split; else a seeded sample of this many words, stratified by
    # document length so that long documents keep their share (pipeline/evaluation/sampling.py). Never "the first N documents".
    max_words: Int | None = Field(None, ge=1)
    sample_seed: Int = 1234
    context_lengths: tuple[Int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    # Context-length curve per text kind on every scored position with at least this many words before it; the curve
    # reads c = each context_length up to that many words. A kind left out gets no curve; {} draws none.
    context_curves: dict[Str, Int] = field(default_factory=lambda: {"verse": 256, "prose": 64, "all": 256})
    # At most this many of those positions per kind, a seeded sample, the same for every model (null: all). Each
    # truncated context is a read of its own: a mixture reads ~100 a second, so a long file's curves took hours.
    curve_positions: Int | None = Field(None, ge=1)
    # Text kinds (pipeline/evaluation/text_kinds.py): a document's `source_field` value is matched against each
    # kind's glob patterns in order, the first match wins; a document without one is of kind "all".
    source_field: Str | None = "source"
    kinds: dict[Str, tuple[Str, ...]] = field(default_factory=lambda: {
        "prose": ("mahasquad-wiki-paragraphs",), "verse": ("wikisource-*",), "short": ("*",)})
    # Intervals on natural text: a document-clustered bootstrap (pipeline/evaluation/bootstrap.py); a document is cut
    # into blocks of this many words, each block a cluster (0: whole documents).
    cluster_block_words: Int = Field(256, ge=0)
    bootstrap_replicates: Int = Field(1000, ge=100)
    bootstrap_seed: Int = 1234
    paired_reference: Str = "rnn_tanh"  # every other model's paired difference is taken against this one, if scored
    probes: Str | None = "data/probes/probes.jsonl"
    ngram_order: Int = Field(4, ge=1, le=10)
    batch_size: Int = Field(64, ge=1)
    # The whole-split passes (top-k and log-probabilities, the typist) split the documents over this many forked
    # processes of one torch thread each (pipeline/evaluation/shards.py): the same results, ~cores x faster
    workers: Int = Field(1, ge=1, le=64)
    # Score with int8 weights (models/build.py int8_copy): the server reads this key from the model's own config, so
    # a model evaluated int8 is served int8 and what is served is what was evaluated
    int8: Bool = False
    # Keystroke savings (pipeline/evaluation/keystrokes.py): a typist with a bar of this many suggestions replays the
    # scored words; off, evaluation skips it (it costs about as much as the top-k pass)
    keystrokes: Bool = True
    keystroke_slots: Int = Field(3, ge=1, le=10)
    # The typist's words: null = the evaluation's own (every word, or max_words); else a seeded sample of at most this
    # many (sampling.py, stratified like max_words). The typist costs ~4 searches a word, so `make run` samples.
    keystroke_words: Int | None = Field(None, ge=1)
    # Warm starts (pipeline/evaluation/warm.py): every document and truncated context is read after real text of other
    # documents of the same split (whole documents, at least warm_words words, from one of warm_pool seeded streams),
    # never from a zero state, which training never sees; false: zero states (the old behaviour, for comparison).
    warm_start: Bool = True
    warm_words: Int = Field(256, ge=1)
    warm_pool: Int = Field(32, ge=1)
    # Context ablation in nats and copy test (pipeline/evaluation/ablation.py): per kind, every position with at least
    # ablation_contexts[kind] words before it, at each c of ablation_lengths up to that; off, evaluation skips both.
    ablation: Bool = True
    ablation_contexts: dict[Str, Int] = field(default_factory=lambda: {"verse": 256, "prose": 64, "all": 256})
    ablation_lengths: tuple[Int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    ablation_shuffle_lengths: tuple[Int, ...] = (4, 16, 64)  # c at which the context beyond c is also shuffled
    ablation_shuffle_positions: Int = Field(1000, ge=1)     # per kind: a seeded sample of the ablation's positions
    copy_targets: Int | None = Field(2000, ge=1)            # per kind: a seeded sample of repeated words; null: all
    # effective context: the smallest c whose Δ(c) is at most this many nats (and, second figure, this share of the
    # full-context loss: Khandelwal et al.'s 1 %)
    effective_nats: Float = Field(0.01, gt=0)
    effective_share: Float = Field(0.01, gt=0, lt=1)

    @model_validator(mode="after")
    def _rules(self) -> EvalConfig:
        for kind, patterns in self.kinds.items():
            if not patterns:
                raise ConfigError(f"eval.kinds.{kind} must be a non-empty list of source patterns (globs), "
                                  "e.g. kinds: {verse: ['wikisource-*'], short: ['*']}")
        for kind, words in self.context_curves.items():
            if words < 1:
                raise ConfigError(f"eval.context_curves.{kind} = {words!r} must be a whole number of words >= 1 "
                                  "(the context a position needs to be on that kind's curve), e.g. {verse: 256}")
        return self


@section("tracking")
class TrackingConfig:
    experiment: Str | None = None  # default: the config file's name
    tracking_uri: Str | None = None  # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    artifact_location: Str = "mlartifacts"
    register: Bool = True
    # the registry name a trained network goes to; default marathi-nwp-<cell> (make run's demo models). The served
    # model (configs/served.yaml) has its own, so its champion is never weighed against a demo's
    registered_name: Str | None = None


@section("serve")
class ServeConfig:
    host: Str = "127.0.0.1"
    port: Int = Field(8000, ge=0, le=65535)
    model: Str = "models:/marathi-nwp-lstm@champion"
    max_text_chars: Int = Field(10_000, ge=1)
    max_k: Int = Field(20, ge=1, le=1000)            # the most words one request may ask for (k)
    max_batch: Int = Field(64, ge=1)
    max_request_chars: Int = Field(50_000, ge=1)   # all texts of one request together
    # a longer text is read from its last word that fits (no bos: mid-document)
    max_context_pieces: Int = Field(512, ge=1)
    # a typed prefix longer than this is refused (422): no word completes it
    max_word_chars: Int = Field(40, ge=1, le=1000)
    cache_entries: Int = Field(256, ge=0)
    cache_megabytes: Float = Field(64.0, ge=0.0)
    # POST /explain and the page's side-by-side panel: these networks, alone, with the reach of their top suggestion
    explain: tuple[Str, ...] = ("models:/marathi-nwp-rnn_tanh@champion", "models:/marathi-nwp-lstm@champion")
    # "looks back N words": the farthest word with at least this share of the largest influence; the page shades on a
    # log scale from it (influence spans decades: a tanh RNN's falls ~10^-8 over 37 words)
    explain_threshold: Float = Field(0.001, ge=1e-12, le=1.0)


# Settings that change how fast a result comes, never the result: no hash holds them (a cached run or evaluation is
# found again whatever they are)
NEVER_HASHED = ("eval.workers",)
# Settings added after runs were cached: hashed only when set away from their default, so the runs and caches made
# before them are found again under the hashes they have
HASHED_UNLESS_DEFAULT = {"data.train_fraction": 1.0}


@section("")
class Config:
    name: Str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)

    @model_validator(mode="after")
    def _rules(self) -> Config:
        m, vocab = self.model, self.tokenizer.vocab_size
        if m.output == "adaptive" and m.cutoffs[-1] >= vocab:
            raise ConfigError(f"model.output='adaptive' needs model.cutoffs, increasing and below "
                              f"tokenizer.vocab_size={vocab}, e.g. [1000, 3000]; got {list(m.cutoffs)}")
        return self

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
        dropped = (*without, *NEVER_HASHED, *(k for k, v in HASHED_UNLESS_DEFAULT.items()
                                              if d.get(k.split(".")[0], {}).get(k.split(".")[1]) == v))
        for dotted in dropped:
            section, key = dotted.split(".", 1)
            d.get(section, {}).pop(key, None)
        for section, key in PATH_FIELDS:
            if d[section].get(key) is not None:
                d[section][key] = os.path.relpath(d[section][key], PROJECT_ROOT)
        chosen = {s: d[s] for s in sections} if sections else d
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


# ---------------------------------------------------------------------------------------------- parsing

def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


_CONFIG = pydantic.TypeAdapter(Config)


def build_config(raw: dict[str, Any], overrides: list[str] = (), source: str = "defaults") -> Config:
    """A validated Config from a plain mapping (a YAML file's content, or `Config.to_dict()`) and overrides."""
    raw = {k: {} if v is None and k != "name" else v for k, v in copy.deepcopy(raw).items()}  # `model:` = defaults
    applied: list[tuple[str, str]] = []  # (dotted key, the --set text)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
        applied.append((".".join(keys), text))

    def origin(key: str, cross_field: bool) -> str:
        """The --set that gave the key its value, else the file; for a rule between keys, the file and any --set
        under the section (or config) the rule belongs to."""
        sets = [text for k, text in applied
                if not key or k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.")]
        if not sets:
            return source
        if cross_field:
            return f"{source} with " + ", ".join(f"--set {t}" for t in sets)
        return f"--set {sets[-1]} (over {source})"

    try:
        cfg = _CONFIG.validate_python(raw, context={"from_file": True})
    except pydantic.ValidationError as e:
        raise ConfigError(explain(e, Config, origin)) from None
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
