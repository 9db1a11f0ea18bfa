"""Assembly of an evaluation: models loaded from their references (MLflow run, registry URI, checkpoint, export)
into scorers, the n-gram baseline, the documents and probes to score, every measurement of every scorer on the same
words, and where each model's figures are logged (its provenance)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.checkpoints import ModelBundle
from pipeline.config import Config
from pipeline.evaluation.ablation import train_counts
from pipeline.evaluation.loop import ablate_scorer, evaluate_scorer
from pipeline.evaluation.keystrokes import run_scorer, typist_sample
from pipeline.evaluation.mixture import mixture_of
from pipeline.evaluation.mixture_scorer import MixtureScorer
from pipeline.evaluation.network_scorer import NeuralScorer
from pipeline.evaluation.ngram import KneserNey
from pipeline.evaluation.ngram_scorer import NgramScorer
from pipeline.evaluation.probes import Probe, ProbeError, load_probes, score_probes, summarize
from pipeline.evaluation.scorer import Scorer
from pipeline.evaluation.tables import add_kind_tables, flat_metrics


@dataclass(frozen=True)
class Provenance:
    """Where a scorer's figures are logged: its model's MLflow run (None: not logged), under `metric_prefix`
    ("mixture/" for a model's mixture, which shares the network's run)."""
    run_id: str | None
    metric_prefix: str = ""


def load_model(ref: str, cfg: Config | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """Resolve a --model reference: MLflow run id, models:/ URI, checkpoint or export directory."""
    from pipeline.tracking import load_bundle

    return load_bundle(ref, cfg)


def model_name(bundle: ModelBundle, ref: str) -> str:
    a = bundle.model_args
    return f"{a.get('cell', 'model')}-{a.get('num_layers', '?')}x{a.get('hidden_dim', '?')}"


def eval_documents(cfg: Config, data: str | None) -> tuple[list[str], list[str], str]:
    """The documents to score, their sources, and the name their metrics go under: the config's split, or
    `data-<file stem>` for a corpus file, so evaluations of different files never overwrite each other in MLflow."""
    from pipeline.corpus.prepare import document_sources, documents, file_documents

    if data:
        docs, sources = file_documents(data, cfg)
        return docs, sources, "data-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem)
    return documents(cfg, cfg.eval.split), document_sources(cfg, cfg.eval.split), cfg.eval.split


def run_id_of_checkpoint(ref: str) -> str | None:
    """A checkpoint under runs/<run>/checkpoints/ belongs to the MLflow run recorded in runs/<run>/mlflow_run_id."""
    f = Path(ref).resolve().parent.parent / "mlflow_run_id"
    return f.read_text().strip() if Path(ref).suffix == ".ckpt" and f.is_file() else None


def build_baseline(cfg, log=print) -> KneserNey:
    """The baseline for a config: eval.ngram_order on the cleaned train split (the same documents the models saw)."""
    from pipeline.corpus.prepare import documents

    lm = KneserNey(cfg.eval.ngram_order).fit(documents(cfg, "train"))
    log(f"{lm.order}-gram Kneser-Ney: {lm.n_tokens} tokens, {len(lm.vocab)} types, built in "
        f"{lm.build_seconds:.1f} s")
    return lm


def build_scorers(cfg: Config, refs: list[str], baseline: bool, mix: str = "net"
                  ) -> tuple[list[Scorer], dict[str, Provenance]]:
    """A NeuralScorer per model reference and, with mix="mixture", the model's registered mixture beside it (what
    its server suggests from; a model without one is scored alone), then the n-gram when `baseline`; and where each
    scorer's metrics go (by name)."""
    torch.set_grad_enabled(False)
    scorers: list[Scorer] = []
    where: dict[str, Provenance] = {}
    for ref in refs:
        bundle, info = load_model(ref, cfg)
        name = model_name(bundle, ref)
        while name in where:
            name += "'"
        scorer = NeuralScorer(bundle, cfg.eval, name)
        scorers.append(scorer)
        where[name] = Provenance(info.get("run_id") or run_id_of_checkpoint(ref))
        mixture = mixture_of(bundle) if mix == "mixture" else None
        if mixture is not None:
            mixed = MixtureScorer(scorer, mixture.lm, mixture.weights, mixture.candidates)
            scorers.append(mixed)
            where[mixed.name] = Provenance(where[name].run_id, "mixture/")
    if baseline:
        scorers.append(NgramScorer(build_baseline(cfg)))
    return scorers, where


def train_word_counts(cfg: Config):
    """Word counts of the config's train split: the copy test's frequency classes."""
    from pipeline.corpus.prepare import documents

    return train_counts(documents(cfg, "train"))


def probes_of(cfg: Config) -> list[Probe] | None:
    """The probe set named by eval.probes (None when it names none). A named file that is missing is an error
    everywhere (evaluate, make run, the experiment), before any model is trained or read."""
    if not cfg.eval.probes:
        return None
    path = Path(cfg.eval.probes)
    if not path.is_file():
        raise ProbeError(f"eval.probes names {path}, which does not exist: generate the project's set with "
                         "`python -m pipeline probe --generate`, point eval.probes at a probe file, or set "
                         "`--set eval.probes=null` to evaluate without probes")
    return load_probes(path)


def _part_key(identity: str, scorer: Scorer, docs: list[str], cfg: Config, probes: list[Probe] | None) -> str:
    blob = json.dumps([identity, scorer.name, cfg.to_dict()["eval"], len(docs), [repr(p) for p in probes or []]],
                      ensure_ascii=False, default=str)
    docs_hash = hashlib.sha256("\x1e".join(docs).encode("utf-8")).hexdigest()
    return hashlib.sha256((blob + docs_hash).encode("utf-8")).hexdigest()[:24]


def _part_file(parts: Path, scorer: Scorer) -> Path:
    return parts / (re.sub(r"[^0-9A-Za-z_.-]+", "_", scorer.name) + ".json")


def evaluate(scorers: list[Scorer], docs: list[str], cfg: Config, split: str, probes: list[Probe] | None = None,
             sources: list[str] | None = None, parts: Path | None = None, identity: str = "") -> dict[str, Any]:
    """Every measurement of every scorer on the same words, then the tables over them (tables.py). The context
    ablation runs for every scorer but a mixture: a mixture's probabilities come with its ranking, so it would cost a
    full search per ablated context.

    `parts`: a directory where each scorer's measurements are kept as it finishes, under a key of `identity` (what
    the caller's model is, e.g. its checkpoint), the scorer's name, the eval settings, the documents and the probes:
    an evaluation killed and started again (the served model's takes over an hour) reuses every scorer whose key
    still matches and measures the rest."""
    results: dict[str, Any] = {"split": split, "k": cfg.eval.k, "documents": len(docs), "models": {}}
    counts = None
    # Mixtures last: they are the slowest, so a kill during one loses the least; the tables keep the caller's order.
    for scorer in sorted(scorers, key=lambda s: isinstance(s, MixtureScorer)):
        key = _part_key(identity, scorer, docs, cfg, probes) if parts is not None else ""
        kept = _part_file(parts, scorer) if parts is not None else None
        if kept is not None and kept.is_file():
            try:
                blob = json.loads(kept.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a file cut short by the kill: measure again
                blob = {}
            if blob.get("key") == key:
                print(f"    {scorer.name}: reusing its measurements from {kept}", flush=True)
                results["models"][scorer.name] = blob["result"]
                continue
        r = evaluate_scorer(scorer, docs, cfg.eval, split, sources)
        if cfg.eval.ablation and len(docs) > 1 and not isinstance(scorer, MixtureScorer):  # it replaces with other docs
            counts = counts or train_word_counts(cfg)
            r["ablation"] = ablate_scorer(scorer, docs, cfg.eval, sources, counts)
        if cfg.eval.keystrokes:
            tokens, targets, chosen, _ = typist_sample(docs, cfg.eval)
            r["keystrokes"] = run_scorer(scorer, tokens, targets, chosen, cfg.eval.keystroke_slots,
                                         cfg.eval.workers)
        if probes:
            r["probes"] = summarize(probes, score_probes(scorer, probes))
        r["metrics"] = flat_metrics(r, split, cfg.eval.k)
        results["models"][scorer.name] = r
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            tmp = kept.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "result": r}, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, kept)  # whole or not at all
    results["models"] = {s.name: results["models"][s.name] for s in scorers}
    add_kind_tables(results, docs, sources, cfg.eval)
    return results



def log_to_runs(cfg: Config, where: dict[str, Provenance], results: dict[str, Any], out: Path) -> None:
    """Metrics, tables and plots go to each evaluated model's own MLflow run (when it has one)."""
    from pipeline import tracking

    targets = [(p.run_id, name, p.metric_prefix) for name, p in where.items() if p.run_id and name in results["models"]]
    if not targets:
        return
    client = tracking.open_store(cfg)
    for run_id, name, prefix in targets:
        tracking.log_metrics(client, run_id, {prefix + k: v for k, v in results["models"][name]["metrics"].items()})
        if not prefix:  # one copy of the tables per run
            tracking.log_artifacts(client, run_id, out, f"evaluation/{out.name}")
        print(f"logged {name} to MLflow run {run_id}")
