"""Helpers several test modules share: corpus slices, the tiny config's overrides, brute-force word scores, hand-made
probes, and the guard that sets torch's process-wide settings for a test and puts them back after it.

Not a test module (pytest collects only test_*.py): import it as `from tests.support import ...`; fixtures live in
tests/conftest.py.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch

from pipeline.config import PROJECT_ROOT

CORPUS = PROJECT_ROOT / "data" / "corpus"


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "source": "test", "doc_id": str(i)}, ensure_ascii=False) + "\n"
                     for i, t in enumerate(texts))
    return path


def sample_texts(split: str, n: int) -> list[str]:
    """The first n documents of the embedded corpus's split."""
    with open(CORPUS / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def tiny_overrides(corpus: Path, work: Path) -> list[str]:
    """The tiny config: the corpus slice in `corpus`, caches and runs under `work`, a 32-unit one-layer model."""
    return [f"data.train={corpus / 'train.jsonl'}", f"data.validation={corpus / 'validation.jsonl'}",
            f"data.test={corpus / 'test.jsonl'}", f"data.cache_dir={work / 'cache'}", f"train.runs_dir={work / 'runs'}",
            "data.batch_size=4", "data.eval_batch_size=4", "data.bptt=16", "tokenizer.vocab_size=600",
            "model.embedding_dim=32", "model.hidden_dim=32", "model.num_layers=1", "model.dropout=0.0",
            "train.max_epochs=1", "train.log_every_n_steps=1", "train.checkpoint_every_n_steps=5",
            "train.early_stopping_patience=0", "train.num_threads=1", "eval.max_words=300",
            "eval.beam_width=4", "eval.max_word_pieces=6"]


def overrides_of(cfg) -> list[str]:
    """`key=value` overrides that rebuild cfg (all but its name and trainer), to extend with a test's own."""
    out = []
    for key, value in cfg.flat().items():
        if key == "train.trainer" or key == "name":
            continue
        out.append(f"{key}={json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value}")
    return out


@contextlib.contextmanager
def torch_settings(num_threads: int, grad_enabled: bool = True, dtype: torch.dtype = torch.float32):
    """Run the body with these process-wide torch settings, and put back the ones from before it on the way out, even
    after an error. Commands change them for the whole process (train and serve set the thread count, evaluation
    turns autograd off), and a test must neither inherit them from the tests before it nor leave them to the next."""
    before = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    torch.set_num_threads(num_threads)
    torch.set_grad_enabled(grad_enabled)
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.set_grad_enabled(before[1])
        torch.set_default_dtype(before[2])


def brute_force(model, tok, context_ids: list[int], k: int) -> list[tuple[str, float]]:
    """Score every sequence start (+ continuation) by plain forward passes; keep those that spell a word cleaning
    could leave, in the tokenizer's own segmentation; the k best."""
    from pipeline.corpus.cleaning import clean_text, is_word
    from pipeline.evaluation.predict import select_state

    pieces = tok.pieces
    boundary = torch.tensor([p.startswith("\u2581") for p in pieces])
    boundary[tok.eos_id] = True
    special = {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id}
    starts = [i for i, p in enumerate(pieces) if p.startswith("\u2581") and i not in special]
    inner = [i for i, p in enumerate(pieces) if not p.startswith("\u2581") and i not in special]

    def spelled(seq):
        w = tok.decode(list(seq)).strip()
        ok = w and is_word(w) and clean_text(w) == w and tuple(tok.encode(w)) == tuple(seq)
        return w if ok else None

    with torch.no_grad():
        feats, state = model(torch.tensor([context_ids]))
        lp0 = model.log_probs(feats[:, -1:])[0, 0]  # (V,)
        s = torch.tensor(starts)
        f1, st1 = model(s[:, None], select_state(state, torch.zeros(len(s), dtype=torch.long)))
        lp1 = model.log_probs(f1)[:, 0]  # (S, V): after each start piece
        scores = {}
        for a, i in enumerate(starts):
            w = spelled((i,))
            if w:
                scores[w] = float(lp0[i] + torch.logsumexp(lp1[a][boundary], 0))
        c = torch.tensor(inner)
        for a, i in enumerate(starts):
            f2, _ = model(c[:, None], select_state(st1, torch.full((len(c),), a)))
            lp2 = model.log_probs(f2)[:, 0]  # (C, V): after start i + each continuation
            end = lp0[i] + lp1[a][c] + torch.logsumexp(lp2.masked_fill(~boundary, -math.inf), 1)
            for b, j in enumerate(inner):
                w = spelled((i, j))
                if w:
                    scores[w] = float(end[b])
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


def hand_scored_probes(rows):
    """Hand-made probes and scores: rows of (kind, distance, right, n, candidates) -> (probes, scores), the first
    candidate being the right one and `right` of the n probes scoring it highest."""
    from pipeline.evaluation import Probe

    probes, scores = [], []
    for kind, d, right, n, k in rows:
        for i in range(n):
            probes.append(Probe("संदर्भ", tuple(f"श{j}" for j in range(k)), 0, d, kind))
            scores.append([0.0] + [-1.0] * (k - 1) if i < right else [-1.0, 0.0] + [-1.0] * (k - 2))
    return probes, scores
