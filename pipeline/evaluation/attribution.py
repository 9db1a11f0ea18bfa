"""How far back one prediction looks: the influence of every earlier word on the network's probability of a word.

    a(j) = Σ_{pieces p of word j} ‖∂ log P_net(w | context) / ∂ e_p‖          (e_p: piece p's embedded input)

the quantity of DESIGN §8's gradient by distance, for one real prediction instead of an average over windows.
log P_net(w | context) is the exact whole-word probability evaluation uses: the word's own pieces, then a word
boundary. One forward and one backward pass over the context and the word's pieces.

The model needs `embed(ids) -> (1, T, E)`, `recur(e, state) -> (features, state)` and `log_probs(features) -> (1, T, V)`
(models/recurrent.py), so a hand-built network can be checked against its closed form (tests).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def piece_influence(model, context: Sequence[int], word: Sequence[int], boundary: Tensor) -> tuple[Tensor, float]:
    """‖∂ log P(word | context) / ∂ e_t‖ for every context position t (n,), and log P(word | context).
    `boundary` (V,) bool marks the pieces that may follow a complete word."""
    n, ids = len(context), torch.tensor([list(context) + list(word)])
    was_training = model.training
    model.eval()  # no dropout: the influence of the model as it predicts
    try:
        with torch.enable_grad():
            e = model.embed(ids).detach().requires_grad_(True)  # (1, n + m, E)
            features, _ = model.recur(e)
            lp = model.log_probs(features[:, n - 1:])[0]  # (m + 1, V): row i predicts word piece i, row m what follows
            m = len(word)
            logp = lp[torch.arange(m), torch.tensor(list(word))].sum() + \
                torch.logsumexp(lp[m].masked_fill(~boundary, -math.inf), dim=0)
            (grad,) = torch.autograd.grad(logp, e)
    finally:
        model.train(was_training)
    return grad[0, :n].norm(dim=-1).detach(), float(logp.detach())


def word_influence(norms: Tensor, spans: Sequence[tuple[int, int]]) -> list[float]:
    """Per word (its pieces' [start, end) in the context) the summed influence, normalised to the largest (0 … 1)."""
    raw = [float(norms[a:b].sum()) for a, b in spans]
    top = max(raw, default=0.0)
    return [r / top if top > 0 else 0.0 for r in raw]


def looks_back(influence: Sequence[float], threshold: float) -> int:
    """Distance in words (1 = the last word) of the farthest word whose normalised influence reaches `threshold`;
    0 when there is none."""
    n = len(influence)
    return max((n - i for i, a in enumerate(influence) if a >= threshold), default=0)
