"""Speed of the context ablation and copy test (issue 27): every eligible position of the whole test split, both
kinds (prose >= 64 words of context, verse >= 256), the nine c values, the shuffled sample and the copy sample, one
model, 2 threads. Goal: <= 10 minutes. References, in the same run: a plain forward pass of the recurrence over
the same rows the ablation reads (the same pieces, batched the same way, no warm starts, no output layer): the
ratio is what the ablation costs beyond the recurrence itself; and one plain teacher-forced pass over the whole
split (every piece's log-probability), the cost of scoring the split once.

A loss-only reading does no search, so its cost depends on the text and the architecture, not on the weights: the
model is BENCH_ABLATION_MODEL (a run id, models:/NAME@ALIAS or checkpoint) when given, else the config's model
freshly initialised (seeded).

    python -m pipeline bench --only ablation --config configs/experiment.yaml
"""
from __future__ import annotations

import os
import time

import torch

from pipeline.corpus.prepare import document_sources, documents, prepare
from pipeline.evaluation import NeuralScorer, load_model, train_counts
from pipeline.evaluation.loop import ablate_scorer
from pipeline.evaluation.sampling import sampled_targets

GOAL_S = 600


def _model(cfg):
    ref = os.environ.get("BENCH_ABLATION_MODEL")
    if ref:
        return load_model(ref, cfg)[0], {"model_ref": ref}
    from models.build import build_model, model_args
    from pipeline.checkpoints import ModelBundle
    from pipeline.corpus.tokenizer import Tokenizer

    prepared = prepare(cfg, log=lambda *a: None)
    tok = Tokenizer(prepared.tokenizer_path)
    torch.manual_seed(0)
    args = model_args(cfg.model, tok.vocab_size)
    model = build_model(args).eval()
    return ModelBundle(model, tok, {}, {"model_args": args}), {"model_ref": "untrained (the config's model, seed 0)"}


def _plain_forward(scorer, tokens, targets) -> tuple[float, int]:
    """Seconds for one teacher-forced pass over every document's pieces (batches of ~64 k pieces), and the pieces."""
    rows = [scorer._encode(t)[0] for t, ts in zip(tokens, targets) if ts]
    rows.sort(key=len)
    pieces = sum(map(len, rows))
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in scorer._batches([len(r) for r in rows], 65536):
            longest = max(len(rows[i]) for i in batch)
            x = torch.full((len(batch), longest), scorer.tok.pad_id, dtype=torch.long)
            for r, i in enumerate(batch):
                x[r, :len(rows[i])] = torch.tensor(rows[i])
            feats, _ = scorer.model(x, None)
            scorer.model.target_log_probs(feats[:, :-1].reshape(-1, feats.size(-1)), x[:, 1:].reshape(-1))
    return time.perf_counter() - t0, pieces


class _Rows:
    """The scorer, keeping the rows the ablation reads (to time a plain pass over the same pieces)."""

    def __init__(self, inner):
        self.inner, self.name, self.search_stats, self.rows = inner, inner.name, None, []

    def read(self, docs, targets, bos=True, logp=True, warm=None, rank=True):
        self.rows += [self.inner._encode(d, bos)[0] for d in docs]
        return self.inner.read(docs, targets, bos, logp, warm, rank)


def _plain_rows(scorer, rows: list[list[int]]) -> tuple[float, int]:
    """Seconds for the recurrence alone over `rows` (the loss reading's batches and chunks), and their pieces."""
    from pipeline.evaluation.network_scorer import LOSS_CHUNK, LOSS_ROWS, LOSS_TOKENS

    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in scorer._batches([len(r) for r in rows], LOSS_TOKENS, LOSS_ROWS):
            longest = max(len(rows[i]) for i in batch)
            x = torch.full((len(batch), longest), scorer.tok.pad_id, dtype=torch.long)
            for r, i in enumerate(batch):
                x[r, :len(rows[i])] = torch.tensor(rows[i])
            state = None
            for a in range(0, longest, LOSS_CHUNK):
                _, state = scorer.model(x[:, a:a + LOSS_CHUNK], state)
    return time.perf_counter() - t0, sum(map(len, rows))


def run(cfg) -> dict:
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    bundle, about = _model(cfg)
    ec = cfg.eval
    scorer = NeuralScorer(bundle, ec, cfg.model.cell)
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    tokens, targets, _, info = sampled_targets(docs, ec)
    plain_s, split_pieces = _plain_forward(scorer, tokens, targets)
    counts = train_counts(documents(cfg, "train"))
    rows = _Rows(scorer)
    t0 = time.perf_counter()
    got = ablate_scorer(rows, docs, ec, sources, counts)
    seconds = time.perf_counter() - t0
    same_s, read_pieces = _plain_rows(scorer, rows.rows)
    return {"model": scorer.name, **about, "parameters": sum(p.numel() for p in bundle.model.parameters()),
            "threads": 2, "split_words": info["words"],
            "positions": {k: len(v["doc"]) for k, v in got["kinds"].items()},
            "lengths": {k: v["lengths"] for k, v in got["kinds"].items()},
            "shuffled": {k: len(v["shuffle"]["positions"]) for k, v in got["kinds"].items()},
            "copy_targets": {k: len(v["doc"]) for k, v in got["copy"].items()},
            "rows_read": len(rows.rows), "pieces_read": read_pieces,
            "seconds": round(seconds, 1), "goal_s": GOAL_S, "goal_met": seconds <= GOAL_S,
            "reference_same_pieces_s": round(same_s, 1), "ratio_to_same_pieces": round(seconds / same_s, 2),
            "reference_split_forward_s": round(plain_s, 2), "split_pieces": split_pieces,
            "ratio_to_split_forward": round(seconds / plain_s, 1),
            "pieces_per_s": round(read_pieces / seconds)}
