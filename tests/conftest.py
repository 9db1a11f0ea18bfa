"""Shared tiny fixtures: a slice of the embedded corpus, a small config, a prepared corpus and a trained model.

Everything lives in pytest's temporary directories, so tests never touch the project's own caches or MLflow store,
and nothing needs ../shared.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from tests.support import overrides_of, sample_texts, tiny_overrides, torch_settings, write_jsonl

# The tests' tiny models run fastest on one thread (CI has 2 cores), and one thread is what the tiny config trains
# and serves with; every test starts from it whatever ran before.
TEST_THREADS = 1


@pytest.fixture(autouse=True)
def _torch_settings_restored():
    """Every test starts with one thread, autograd on and float32, and leaves torch as it found it: commands change
    these for the process (train and serve set the threads, evaluation turns autograd off). Module and session
    fixtures that train or evaluate run before this, so their changes are undone here too."""
    with torch_settings(TEST_THREADS):
        yield


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """400 / 60 / 60 documents of the embedded corpus."""
    d = tmp_path_factory.mktemp("corpus")
    for split, n in (("train", 400), ("validation", 60), ("test", 60)):
        write_jsonl(d / f"{split}.jsonl", sample_texts(split, n))
    return d


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

    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "train.max_steps=40", "model.cell=lstm"])
    result = train(cfg, prepared, fresh=True, log=lambda *a: None)
    return Path(result.last_checkpoint)


@pytest.fixture(scope="session")
def tiny_rnn_checkpoint(tiny_config, prepared) -> Path:
    """A tiny tanh RNN trained like trained_checkpoint's LSTM (40 steps): the other column of the side-by-side."""
    from pipeline.training.train import train

    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "train.max_steps=40", "model.cell=rnn_tanh"])
    return Path(train(cfg, prepared, fresh=True, log=lambda *a: None).last_checkpoint)


@pytest.fixture(scope="session")
def mixed_checkpoint(tiny_config, trained_checkpoint, tmp_path_factory) -> Path:
    """A copy of the tiny LSTM's checkpoint with its network + 4-gram + cache mixture, fitted on the tiny validation
    split and stored the way `make run` stores it (runs/<run>/mixture/ beside runs/<run>/checkpoints/)."""
    import shutil

    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import SERVED, NeuralScorer, build_baseline, fit, save_mixture

    run = tmp_path_factory.mktemp("mixed-run")
    ckpt = run / "checkpoints" / trained_checkpoint.name
    ckpt.parent.mkdir()
    shutil.copy2(trained_checkpoint, ckpt)
    lm = build_baseline(tiny_config, log=lambda *a: None)
    net = NeuralScorer(load_local(ckpt), tiny_config.eval, "lstm")
    with torch.no_grad():
        weights, about = fit(net, lm, SERVED, documents(tiny_config, "validation"),
                             tiny_config.mixture, tiny_config.eval)
    save_mixture(run / "mixture", lm, weights, tiny_config.mixture.candidates, about)
    return ckpt


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield
