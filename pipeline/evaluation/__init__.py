"""Evaluation (DESIGN §7), in one-way layers (an import-linter contract in pyproject.toml keeps them so):

    primitives        typed (what was typed: context and prefix, the pieces that spell it), then predict (whole
                      words from pieces), ngram, sampling, distance, bootstrap, intervals, text_kinds, attribution,
                      probe_constructions, probe_generation, warm (warm starts), shards (whole-split passes over
                      forked workers)
    the served model  mixture: weights, storage, cache, mixing; then mixture_search: its exact top k (`mixed_top`)
                      and the typist's settling (all the server imports of this package besides predict, typed and
                      attribution)
    the protocol      scorer: `Scorer`, `TargetBatch`, `Reading`, `read_all`
    adapters          network_scorer, ngram_scorer, then mixture_scorer
    consumers         ablation (context ablation, copy test), then loop (the evaluation loop, context curves);
                      keystrokes (the typist), mixture_fit, probes
    tables and plots  keystroke_figures, ablation_tables, plots, then tables
    assembly          assembly: models from references, scorers and their provenance, documents, probes, logging
    commands          commands (imported by pipeline/cli.py on use; not re-exported here)

Imports from outside the package: `models`, `pipeline.corpus`, `pipeline.checkpoints`, `pipeline.config`, and
`pipeline.tracking` (to resolve model references and log results). Never Lightning or `pipeline.training`.
The names below are the package's public API, each loaded from its module on first use (PEP 562), so that
the server, which imports the served model alone, does not load the evaluation's consumers, tables or plots.
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ablation": ("context_ablation", "train_counts"),
    "ablation_tables": ("ablation_lines", "ablation_metrics"),  # its function of the same name: import the module
    "assembly": (
        "Provenance", "build_baseline", "build_scorers", "eval_documents", "evaluate", "load_model", "log_to_runs",
        "model_name", "probes_of"
    ),
    "loop": ("ablate_scorer", "context_curves", "evaluate_scorer", "warm_starts", "word_perplexity"),
    "keystroke_figures": ("keystroke_lines", "keystroke_metrics", "keystroke_tables", "ksr_text"),
    "keystrokes": ("run_scorer", "simulate", "type_documents"),
    "mixture": ("Mixture", "MixtureError", "MixtureWeights", "load_mixture", "mixture_of", "save_mixture"),
    "mixture_fit": ("MIXES", "SERVED", "fit", "fit_all"),
    "mixture_scorer": ("MixtureScorer",),
    "network_scorer": ("NeuralScorer",),
    "ngram": ("KneserNey",),
    "ngram_scorer": ("NgramScorer",),
    "probes": ("Probe", "ProbeError", "load_probes", "score_probes", "summarize"),
    "sampling": ("sample_line", "sampled_documents", "sampled_targets"),
    "scorer": ("Reading", "Scorer", "TargetBatch", "read_all"),
    "tables": (
        "acc_text", "add_kind_tables", "diff_text", "flat_metrics", "format_tables", "keystroke_block",
        "kind_lines", "kind_metrics", "pooled_kind", "print_table", "write_outputs"
    ),
    "text_kinds": ("scored_words",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
