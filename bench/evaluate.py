"""Evaluation speed: words/s for top-5 whole-word accuracy + exact word log-probs with an LSTM 2×512 on the test
split, 2 threads (issue 6: the full test split, ~90 k words, should take <= 5 minutes).

The model is trained for a few steps on the config's train stream (an untrained model's flat distributions make the
beam search run to its piece limit, which is not what a real evaluation sees); weights do not change the cost
otherwise. The documents are the first test documents up to `WORDS` words, so the run stays short.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from pipeline.bundle import ModelBundle
from pipeline.data import documents, prepare
from pipeline.evaluate import NeuralScorer, targets_of
from pipeline.tokenizer import Tokenizer
from pipeline.train import build_model

WORDS = 3000
TRAIN_STEPS = 30
FULL_TEST_WORDS = 90_000


def run(cfg) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    prep = prepare(cfg, log=lambda *a: None)
    tok = Tokenizer(prep.tokenizer_path)
    args = {"vocab_size": tok.vocab_size, "cell": "lstm", "embedding_dim": 512, "hidden_dim": 512, "num_layers": 2,
            "dropout": 0.0, "tie_weights": True}
    model = build_model(args)
    stream = torch.from_numpy(np.asarray(prep.stream("train"), dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for step in range(TRAIN_STEPS):  # (B=16, T=32) windows from spread-out offsets
        starts = torch.randint(0, len(stream) - 33, (16,))
        x = torch.stack([stream[s:s + 33] for s in starts.tolist()])
        feats, _ = model(x[:, :-1], None)
        loss = model.loss(feats, x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    bundle = ModelBundle(model, tok, cfg.to_dict(), {"model_args": args})
    ec = dataclasses.replace(cfg.eval, batch_size=256)
    scorer = NeuralScorer(bundle, ec, "lstm-2x512")
    docs, n = [], 0
    for d in documents(cfg, "test"):
        docs.append(d.split())
        n += len(targets_of(docs[-1]))
        if n >= WORDS:
            break
    targets = [targets_of(d) for d in docs]
    with torch.no_grad():
        t0 = time.perf_counter()
        scorer.evaluate_docs(docs, targets, ec.k, lambda m: None)
        seconds = time.perf_counter() - t0
    rate = n / seconds
    return {"model": "lstm 2x512 (embedding 512, tied)", "vocab_size": tok.vocab_size, "threads": 2,
            "train_steps": TRAIN_STEPS, "final_train_loss": round(float(loss), 3), "train_s": round(train_s, 1),
            "documents": len(docs), "words": n, "k": ec.k, "beam_width": ec.beam_width,
            "max_word_pieces": ec.max_word_pieces, "topk_batch": ec.batch_size, "seconds": round(seconds, 2),
            "words_per_s": round(rate, 1), "projected_s_for_90k_words": round(FULL_TEST_WORDS / rate, 1),
            "goal_s_for_90k_words": 300}
