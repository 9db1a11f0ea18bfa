"""Shared tiny fixtures: a slice of the embedded corpus, a small config, a prepared corpus and a trained model.

Everything lives in pytest's temporary directories, so tests never touch the project's own caches or MLflow store,
and nothing needs ../shared.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pipeline.config import PROJECT_ROOT, load_config

CORPUS = PROJECT_ROOT / "data" / "corpus"


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "source": "test", "doc_id": str(i)}, ensure_ascii=False) + "\n" for i, t in enumerate(texts))
    return path


def sample_texts(split: str, n: int) -> list[str]:
    with open(CORPUS / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """Commands turn autograd off for the process (evaluation); a test that runs one must not leave it off."""
    mode = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(mode)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """400 / 60 / 60 documents of the embedded corpus."""
    d = tmp_path_factory.mktemp("corpus")
    for split, n in (("train", 400), ("validation", 60), ("test", 60)):
        write_jsonl(d / f"{split}.jsonl", sample_texts(split, n))
    return d


def tiny_overrides(corpus: Path, work: Path) -> list[str]:
    return [f"data.train={corpus / 'train.jsonl'}", f"data.validation={corpus / 'validation.jsonl'}",
            f"data.test={corpus / 'test.jsonl'}", f"data.cache_dir={work / 'cache'}", f"train.runs_dir={work / 'runs'}",
            "data.batch_size=4", "data.eval_batch_size=4", "data.bptt=16", "tokenizer.vocab_size=600",
            "model.embedding_dim=32", "model.hidden_dim=32", "model.num_layers=1", "model.dropout=0.0",
            "train.max_epochs=1", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=5",
            "train.early_stopping_patience=0", "train.num_threads=1", "eval.max_words=300",
            "eval.beam_width=4", "eval.max_word_pieces=6"]


@pytest.fixture(scope="session")
def tiny_config(tiny_corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return load_config(None, ["name=tiny", *tiny_overrides(tiny_corpus, work)])


@pytest.fixture(scope="session")
def prepared(tiny_config):
    from pipeline.corpus.prepare import prepare

    return prepare(tiny_config, log=lambda *a: None)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_config, prepared) -> Path:
    """A tiny LSTM trained for 40 steps; its best checkpoint path."""
    from pipeline.training.train import train

    cfg = load_config(None, ["name=tiny", *_overrides_of(tiny_config), "train.max_steps=40", "model.cell=lstm"])
    result = train(cfg, prepared, fresh=True, log=lambda *a: None)
    return Path(result.last_checkpoint)


@pytest.fixture(scope="session")
def tiny_rnn_checkpoint(tiny_config, prepared) -> Path:
    """A tiny tanh RNN trained like trained_checkpoint's LSTM (40 steps): the other column of the side-by-side."""
    from pipeline.training.train import train

    cfg = load_config(None, ["name=tiny", *_overrides_of(tiny_config), "train.max_steps=40", "model.cell=rnn_tanh"])
    return Path(train(cfg, prepared, fresh=True, log=lambda *a: None).last_checkpoint)


@pytest.fixture(scope="session")
def mixed_checkpoint(tiny_config, trained_checkpoint, tmp_path_factory) -> Path:
    """A copy of the tiny LSTM's checkpoint with its network + 4-gram + cache mixture, fitted on the tiny validation
    split and stored the way `make run` stores it (runs/<run>/mixture/ beside runs/<run>/checkpoints/)."""
    import shutil

    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation.evaluate import NeuralScorer, build_baseline
    from pipeline.evaluation.mixture import MIXES, fit, save_mixture

    run = tmp_path_factory.mktemp("mixed-run")
    ckpt = run / "checkpoints" / trained_checkpoint.name
    ckpt.parent.mkdir()
    shutil.copy2(trained_checkpoint, ckpt)
    lm = build_baseline(tiny_config, log=lambda *a: None)
    net = NeuralScorer(load_local(ckpt), tiny_config.eval, "lstm")
    with torch.no_grad():
        weights, about = fit(net, lm, MIXES["net + 4-gram + cache"], documents(tiny_config, "validation"),
                             tiny_config.mixture, tiny_config.eval)
    save_mixture(run / "mixture", lm, weights, tiny_config.mixture.candidates, about)
    return ckpt


def _overrides_of(cfg) -> list[str]:
    out = []
    for key, value in cfg.flat().items():
        if key == "train.trainer" or key == "name":
            continue
        out.append(f"{key}={json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value}")
    return out


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


def hand_scored_probes(rows):
    """Hand-made probes and scores: rows of (kind, distance, right, n, candidates) -> (probes, scores), the first
    candidate being the right one and `right` of the n probes scoring it highest."""
    from pipeline.evaluation.probes import Probe

    probes, scores = [], []
    for kind, d, right, n, k in rows:
        for i in range(n):
            probes.append(Probe("संदर्भ", tuple(f"श{j}" for j in range(k)), 0, d, kind))
            scores.append([0.0] + [-1.0] * (k - 1) if i < right else [-1.0, 0.0] + [-1.0] * (k - 2))
    return probes, scores
