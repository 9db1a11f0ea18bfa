"""Attribution by distance for one prediction: the closed form of a linear RNN, and a tanh RNN that forgets faster
than an LSTM."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.evaluation.attribution import looks_back, piece_influence, word_influence


class LinearRNN(nn.Module):
    """h_t = W h_{t-1} + U e_t, logits = V h_t: its gradients have a closed form."""

    def __init__(self, vocab: int = 7, dim: int = 4, hidden: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(0.6 * torch.randn(hidden, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden))
        self.U = nn.Parameter(torch.randn(hidden, dim, generator=g, dtype=torch.float64))
        self.V = nn.Parameter(torch.randn(vocab, hidden, generator=g, dtype=torch.float64))

    def embed(self, ids):
        return self.E[ids]

    def recur(self, e, state=None):
        h, out = torch.zeros(e.size(0), self.W.size(0), dtype=e.dtype), []
        for t in range(e.size(1)):
            h = h @ self.W.T + e[:, t] @ self.U.T
            out.append(h)
        return torch.stack(out, 1), h

    def log_probs(self, features):
        return torch.log_softmax(features @ self.V.T, dim=-1)


def test_influence_matches_the_closed_form_of_a_linear_rnn():
    m = LinearRNN()
    context, word = [3, 1, 4, 1, 5, 2], [6]  # a one-piece word, then a boundary from {0, 2}
    boundary = torch.tensor([True, False, True, False, False, False, False])
    norms, logp = piece_influence(m, context, word, boundary)

    with torch.no_grad():
        W, U, V = m.W, m.U, m.V
        h = torch.zeros(W.size(0), dtype=torch.float64)
        for i in context:
            h = W @ h + U @ m.E[i]
        p = torch.softmax(V @ h, 0)
        h2 = W @ h + U @ m.E[word[0]]
        p2 = torch.softmax(V @ h2, 0)
        q = torch.where(boundary, p2, torch.zeros_like(p2))
        want_logp = math.log(p[word[0]]) + math.log(q.sum())
        # d log P / d h_{n-1} = V^T (1_w - p) + W^T V^T (q / Σq - p2)
        onehot = torch.zeros_like(p)
        onehot[word[0]] = 1
        g = V.T @ (onehot - p) + W.T @ (V.T @ (q / q.sum() - p2))
        n = len(context)
        want = [float((U.T @ torch.linalg.matrix_power(W.T, n - 1 - t) @ g).norm()) for t in range(n)]
    assert logp == pytest.approx(want_logp, rel=1e-9)
    assert norms.tolist() == pytest.approx(want, rel=1e-9)


def test_word_influence_sums_pieces_and_normalises_to_the_largest():
    norms = torch.tensor([1.0, 2.0, 0.5, 4.0, 0.0])
    assert word_influence(norms, [(0, 2), (2, 3), (3, 5)]) == pytest.approx([0.75, 0.125, 1.0])
    assert word_influence(torch.zeros(3), [(0, 3)]) == [0.0]
    assert looks_back([0.05, 0.3, 0.01, 1.0], 0.1) == 3  # the word 3 back is the farthest at >= 0.1
    assert looks_back([0.0, 0.0], 0.1) == 0


def test_a_tanh_rnns_influence_falls_with_distance_faster_than_an_lstms(tiny_rnn_checkpoint, trained_checkpoint,
                                                                        tiny_config):
    """Same contexts, same next word: the share of the influence that reaches words 8 or more back."""
    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation.predict import PieceMasks

    texts = [d for s in ("validation", "train") for d in documents(tiny_config, s) if len(d.split()) >= 30][:12]
    assert len(texts) >= 6
    far = {}
    for name, ckpt in (("rnn_tanh", tiny_rnn_checkpoint), ("lstm", trained_checkpoint)):
        b = load_local(ckpt)
        boundary = PieceMasks.of(b.tokenizer).boundary
        shares = []
        for t in texts:
            words = t.split()[:30]
            ctx = [b.tokenizer.bos_id]
            spans = []
            for w in words[:-1]:
                p = b.tokenizer.encode(w)
                spans.append((len(ctx), len(ctx) + len(p)))
                ctx += p
            norms, _ = piece_influence(b.model, ctx, b.tokenizer.encode(words[-1]), boundary)
            infl = word_influence(norms, spans)
            shares.append(sum(infl[:-8]) / sum(infl))
        far[name] = sum(shares) / len(shares)
    assert far["rnn_tanh"] < far["lstm"], far
