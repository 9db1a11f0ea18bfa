"""`python -m pipeline <command> --config FILE [--set key=value ...]`: the only place arguments are parsed."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator

from pipeline.config import ConfigError, load_config

# Quiet output: a command prints the pipeline's own lines, the progress bars and the libraries' real warnings, not
# their chatter. Everything is matched by message (and, for warnings, by the module that warns), so a warning about
# a user's config or our own code still shows. Set up once per command by `main`, undone when it returns.
#
# Lightning's rank-zero notices that say nothing about this run: its product tips, the hardware lines (the devices
# are the ones the config asks for) and the restore lines of a resume (the pipeline prints its own "resuming from
# ..."). Kept: why fit stopped, early stopping, the precision and Tensor Core notes.
LIGHTNING_NOTICES = re.compile("|".join((
    r"💡 Tip: ",
    r"GPU available: ",
    r"TPU available: ",
    r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ",
    r"Restoring states from the checkpoint path at ",
    r"Restored all states from the checkpoint at ",
)))
# The loggers those notices come through (rank_zero_info writes on the rank_zero module's; a filter on a logger sees
# only records made on it). Named, not imported: `--help` and the server never load Lightning.
LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "pytorch_lightning.accelerators.cuda")
# (message, category, module): re.match'ed against the warning's text and the module it is attributed to.
QUIET_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Third-party deprecations the project cannot act on: torch deprecated LeafSpec, which Lightning still builds.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"(pytorch_lightning|lightning_fabric)\."),
    # torch.backends.mkldnn.flags(), which evaluation uses to pick the native RNN kernels, sets oneDNN's TF32
    # flag, and a CPU build of torch warns that it has no Intel GPU support.
    (r"TF32 acceleration on top of oneDNN", UserWarning, r"torch\.backends"),
    # MLflow's own deprecation and future notices (e.g. SQLAlchemy's inside its store); one about a call of ours is
    # attributed to our module and still shows.
    (r"", DeprecationWarning, r"mlflow\."),
    (r"", FutureWarning, r"mlflow\."),
    # Lightning warnings about what the pipeline does on purpose: a resumed run writes into its own checkpoint
    # directory (`--fresh` empties it), and with train.allow_divergence the diverged step returns None so the
    # optimizer step is skipped.
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"pytorch_lightning\.callbacks\."),
    (r"`training_step` returned `None`", UserWarning, r"pytorch_lightning\.loops\."),
)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not LIGHTNING_NOTICES.match(record.getMessage())


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the libraries' chatter (above) while a command runs; restore the warning filters and loggers after."""
    drop = _DropNotices()
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    with warnings.catch_warnings():
        for message, category, module in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


def _user_errors() -> tuple[type[BaseException], ...]:
    from pipeline.checkpoints import CheckpointError
    from pipeline.corpus.prepare import CorpusError
    from pipeline.corpus.tokenizer import TokenizerError
    from pipeline.evaluation.mixture import MixtureError
    from pipeline.evaluation.probes import ProbeError
    from pipeline.tracking import TrackingError

    errors = (ConfigError, CorpusError, TokenizerError, CheckpointError, TrackingError, ProbeError, MixtureError)
    # Only a command that trained can raise DivergenceError; importing it otherwise would load Lightning into the
    # server on its way out.
    training = sys.modules.get("pipeline.training.train")
    return errors + ((training.DivergenceError,) if training else ())


def cmd_prepare(args, cfg) -> int:
    from pipeline.corpus.prepare import prepare

    p = prepare(cfg)
    m = p.manifest
    print(f"prepared {cfg.name}: {'cache hit' if m['cached'] else 'built'} in {m['seconds']:.1f} s -> {p.directory}")
    for split, s in m["splits"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "none"
        print(f"  {split:<10} {s['documents']:>7} docs kept (dropped: {dropped}), {s['words']:>9} words, "
              f"{s['pieces']:>9} pieces, {s['pieces_per_word']:.2f} pieces/word")
    print(f"  tokenizer  {m['tokenizer']['model_type']} {m['tokenizer']['vocab_size']} pieces: {m['tokenizer']['path']}")
    print(f"  sha256     data {m['data_sha256'][:16]}…  tokenizer {m['tokenizer']['sha256'][:16]}…  "
          f"tokens {m['tokens_sha256'][:16]}…")
    return 0


def cmd_train(args, cfg) -> int:
    from pipeline.corpus.prepare import prepare
    from pipeline.experiments.trained_run import ValidationCheckpoints
    from pipeline.training.train import run_dir_for, train

    # the weights at every validation, as `make run` keeps them: the run's time-to-quality curve can be scored
    # afterwards (bench time_to_quality, TTQ_RUN)
    kept = ValidationCheckpoints(run_dir_for(cfg) / "checkpoints", cfg.data.batch_size * cfg.data.bptt)
    result = train(cfg, prepare(cfg), fresh=args.fresh, extra_callbacks=[kept])
    print(json.dumps({k: str(v) for k, v in vars(result).items()}, indent=1))
    return 0


def _lazy(target: str):
    """Commands live beside the stage they run (`module:function`, called with (args, cfg)); imported on use so
    `--help` and quick commands stay fast."""
    def run(args, cfg) -> int:
        import importlib

        module, fn = target.split(":")
        return getattr(importlib.import_module(module), fn)(args, cfg)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", default="configs/default.yaml", help="YAML config (default: %(default)s)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set model.cell=gru (repeatable)")
        p.set_defaults(fn=fn)
        return p

    model_help = "an MLflow run id, models:/NAME@ALIAS or models:/NAME/VERSION, a checkpoint or an export directory"
    add("prepare", cmd_prepare, "clean the corpus, train/load the tokenizer, encode all splits")
    add("train", cmd_train, "train (or resume) the configured model").add_argument(
        "--fresh", action="store_true", help="ignore an existing last.ckpt and start over")
    p = add("evaluate", _lazy("pipeline.evaluation.commands:evaluate_cli"), "next-word accuracy, word perplexity, distance tables")
    p.add_argument("--model", action="append", default=[], help=f"{model_help} (repeatable)")
    p.add_argument("--data", help="evaluate this corpus file instead of the config's split")
    p.add_argument("--baseline", action="store_true", help="add the Kneser-Ney n-gram row")
    p.add_argument("--mix", choices=("mixture", "net"), default="mixture",
                   help="mixture (default): also score each model's registered mixture, what its server suggests "
                        "from; net: the network alone")
    p.add_argument("--out", default=None, help="directory for the JSON/CSV tables and plots")
    p = add("ablate", _lazy("pipeline.evaluation.commands:ablate_cli"),
            "how far back each model reads: the context ablation and copy test in nats (no beam search)")
    p.add_argument("--model", action="append", default=[], help=f"{model_help} (repeatable)")
    p.add_argument("--data", help="ablate on this corpus file instead of the config's split")
    p.add_argument("--baseline", action="store_true", help="add the Kneser-Ney n-gram (its effective context is "
                   "at most eval.ngram_order - 1 words: a check of the method)")
    p.add_argument("--out", default=None, help="directory for ablation.json")
    p = add("keystrokes", _lazy("pipeline.evaluation.commands:keystrokes_cli"),
            "keystroke savings of a W-slot suggestion bar: the network, its mixture and the n-gram")
    p.add_argument("--model", action="append", default=[], help=f"{model_help} (repeatable)")
    p.add_argument("--data", help="replay this corpus file instead of the config's split")
    p.add_argument("--slots", type=int, default=None, help="suggestions in the bar, 1-10 (default: eval.keystroke_slots)")
    p.add_argument("--mix", choices=("mixture", "net"), default="mixture",
                   help="mixture (default): the model's registered mixture too; net: the network alone")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="the Kneser-Ney n-gram row (default: on)")
    p.add_argument("--out", default=None, help="directory for keystrokes.json and keystrokes.csv")
    p = add("probe", _lazy("pipeline.evaluation.commands:probe_cli"), "score a probe file (JSON Lines) with one or more models")
    p.add_argument("--model", action="append", default=[], help=f"{model_help} (repeatable)")
    p.add_argument("--probes", default=None, help="probe file (default: eval.probes)")
    p.add_argument("--generate", action="store_true", help="(re)write the project's own probe set first")
    p.add_argument("--count", action="store_true",
                   help="count in the train split how often each construction of the probes occurs")
    p.add_argument("--data", default=None, help="with --count: count this corpus file instead of the train split")
    p = add("baseline", _lazy("pipeline.evaluation.commands:baseline_cli"),
            "build and evaluate the Kneser-Ney word n-gram")
    p.add_argument("--data", help="evaluate this corpus file instead of the config's split")
    p.add_argument("--out", default=None, help="directory for the JSON/CSV tables and plots")
    p = add("mix", _lazy("pipeline.evaluation.commands:mix_cli"),
            "fit the network + n-gram + cache mixtures on validation and evaluate them beside the parts")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--data", help="evaluate on this corpus file instead of the config's split (fitting stays on "
                                  "the validation split)")
    p.add_argument("--save", action="store_true",
                   help="store the net + n-gram + cache mix as the checkpoint's own mixture (runs/<run>/mixture/), "
                        "the one serve, evaluate and keystrokes use")
    p.add_argument("--served-only", action="store_true",
                   help="fit and evaluate only that mix (network + n-gram + cache), not the comparison mixes")
    p.add_argument("--out", default=None, help="directory for the tables, plots and mixture_weights.json")
    p = add("report", _lazy("pipeline.experiments.report:cli"),
            "regenerate an experiment report from its summary.json (and <report>/mixture/results.json when there)")
    p.add_argument("--report", default="reports/experiment.md")
    add("served-report", _lazy("pipeline.experiments.served_report:cli"),
        "reports/served.md from the served run's evaluation and its time-to-quality record (make served writes it)"
        ).add_argument("--out", default="reports/served.md")
    p = add("predict", _lazy("pipeline.serving.app:predict_cli"),
            "next words after each text, or completions of the word it ends in (what /predict answers)")
    p.add_argument("text", nargs="*", help="texts (default: one per line on stdin); end one with a space for the "
                                           "next word, with a letter to complete the word being typed")
    p.add_argument("--model", default=None, help=f"{model_help} (default: serve.model)")
    p.add_argument("-k", type=int, default=5, help="words per text, 1-20 (default: %(default)s)")
    p.add_argument("--mix", choices=("mixture", "net"), default=None,
                   help="the model's mixture (default when it carries one) or the network alone")
    p.add_argument("--mode", choices=("auto", "next", "complete"), default="auto",
                   help="auto (default): complete a text that ends in a letter; next / complete force a reading")
    p = add("serve", _lazy("pipeline.serving.app:cli"), "HTTP API + live-suggestion page")
    p.add_argument("--model", default=None, help=f"{model_help} (default: serve.model)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p = add("run", _lazy("pipeline.job:cli"), "the main job: prepare, train RNN + LSTM, evaluate, register")
    p.add_argument("--cells", default="rnn_tanh,lstm", help="cells to train (default: %(default)s)")
    p = add("experiment", _lazy("pipeline.experiments.experiment:cli"),
            "the comparison grid (matched parameters, one budget), MLflow parent + nested runs, reports/experiment.md")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="fit the whole grid in this many minutes (default: experiment.budget_minutes)")
    p.add_argument("--train-only", action="store_true",
                   help="train the grid's models (and stop); a later run without it evaluates and reports")
    p.add_argument("--only", default=None, metavar="MODEL,...",
                   help="train (and unless --train-only, evaluate) these grid models only, then stop; the budget is "
                        "still the whole grid's")
    p = add("longrange", _lazy("pipeline.experiments.longrange:cli"),
            "the controlled long-range task alone (experiment.longrange_*): success rate per cell and distance")
    p.add_argument("--out", default=None,
                   help="directory for longrange.json and longrange.png (default: <experiment.report_dir>/experiment/"
                        "longrange, where the experiment reuses a result of equal settings)")
    p = add("gradients", _lazy("pipeline.experiments.experiment:gradients_cli"),
            "gradient by distance at init and trained for one or more models; plot and decay rates")
    p.add_argument("--model", action="append", default=[], help=f"{model_help} (repeatable)")
    p.add_argument("--windows", type=int, default=64, help="validation windows (default: %(default)s)")
    p.add_argument("--length", type=int, default=None, help="window length in pieces (default: data.bptt)")
    p.add_argument("--out", default=None, help="directory for gradients.png and gradients.json")
    p = add("bench", _lazy("pipeline.bench:cli"), "benchmarks; results appended to bench/results.json")
    p.add_argument("--only", action="append", default=[], help="run only these benchmarks (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with quiet_libraries():
        try:
            cfg = load_config(args.config, args.overrides)
            return args.fn(args, cfg)
        except _user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
