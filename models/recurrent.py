"""Recurrent language models in pure torch.nn (DESIGN §5): no Lightning, no MLflow, no files.

    tokens (B, T) ─ embedding ─ dropout ─ layer 1 ─ dropout ─ layer 2 (+ skip) ─ ... ─ dropout ─> features (B, T, H)
    features ─ loss(features, targets)  (training: mean NLL per token)
             ─ log_probs(features)      (evaluation, beam search, serving: exact, full vocabulary)

Each layer is a fused single-layer `nn.RNN` / `nn.LSTM` / `nn.GRU` (MKL/oneDNN on CPU, cuDNN on GPU); stacking them
one by one costs nothing over a multi-layer module and lets a residual connection sit around each layer.
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (num_layers, B, H) for rnn_tanh / rnn_relu / gru; (h, c), each (num_layers, B, H), for lstm
State = Union[Tensor, tuple[Tensor, Tensor]]
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
# The gate whose bias `gate_bias` sets, as a block of PyTorch's stacked gate rows: LSTM rows i, f, g, o (the forget
# gate f, block 1: c' = f*c + i*g); GRU rows r, z, n (the update gate z, block 1: h' = (1-z)*n + z*h). In both a
# larger bias keeps more of the old state at the start, so gradient crosses more steps (Gers et al. 2000;
# Jozefowicz et al. 2015; Tallec & Ollivier 2018).
GATED = {"lstm": 1, "gru": 1}


def detach_state(state: State) -> State:
    """Truncated BPTT: keep the values, cut the graph."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class RecurrentLM(nn.Module):
    def __init__(self, vocab_size: int, cell: str, embedding_dim: int, hidden_dim: int, num_layers: int,
                 dropout: float, tie_weights: bool, init: str = "default", residual: bool = False,
                 output: str = "softmax", cutoffs: tuple[int, ...] = (), init_scale: float = 1.0,
                 gate_bias: float | None = None, chrono_t_max: float | None = None):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {CELLS}")
        if gate_bias is not None and cell not in GATED:
            raise ValueError(f"gate_bias={gate_bias} sets the LSTM forget gate or the GRU update gate; cell={cell!r} "
                             "has neither: use cell='lstm' or 'gru', or gate_bias=None")
        if chrono_t_max is not None and (cell not in GATED or gate_bias is not None or chrono_t_max <= 2):
            raise ValueError(f"chrono_t_max={chrono_t_max} (chrono init) needs cell='lstm' or 'gru' (got {cell!r}), "
                             f"no gate_bias (got {gate_bias}) and T_max > 2 (the biases are log U(1, T_max − 1))")
        if init == "identity" and cell not in ("rnn_relu", "rnn_tanh"):
            raise ValueError("init='identity' (IRNN) is defined for the plain RNN cells; use cell='rnn_relu'")
        if output == "adaptive" and tie_weights:
            raise ValueError("output='adaptive' cannot tie its clustered output to the embedding; set "
                             "tie_weights=False")
        if output not in ("softmax", "adaptive"):
            raise ValueError(f"output={output!r} is not 'softmax' or 'adaptive'")
        self.vocab_size, self.cell, self.hidden_dim, self.num_layers = vocab_size, cell, hidden_dim, num_layers
        self.output = output
        self.residual = residual
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(self._layer(embedding_dim if i == 0 else hidden_dim, hidden_dim)
                                    for i in range(num_layers))
        out_dim = hidden_dim
        # Tying needs the features in the embedding's space; project when the sizes differ.
        self.projection = nn.Linear(hidden_dim, embedding_dim) if tie_weights and hidden_dim != embedding_dim else None
        if self.projection is not None:
            out_dim = embedding_dim
        if output == "softmax":
            self.decoder = nn.Linear(out_dim, vocab_size)
            if tie_weights:
                self.decoder.weight = self.embedding.weight
        else:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(out_dim, vocab_size, list(cutoffs), div_value=4.0)
        # The adaptive softmax wants frequent pieces first: rank[id] is a piece's frequency rank (identity until
        # `set_piece_frequencies` is called); it is a buffer, so it travels in the state_dict.
        self.register_buffer("rank", torch.arange(vocab_size), persistent=True)
        self.init_weights(init, init_scale)
        if gate_bias is not None:
            self.set_gate_bias(gate_bias)
        if chrono_t_max is not None:
            self.set_chrono_bias(chrono_t_max)

    def _layer(self, inp: int, hid: int) -> nn.Module:
        if self.cell == "lstm":
            return nn.LSTM(inp, hid, batch_first=True)
        if self.cell == "gru":
            return nn.GRU(inp, hid, batch_first=True)
        return nn.RNN(inp, hid, nonlinearity=self.cell.split("_")[1], batch_first=True)

    def init_weights(self, init: str, scale: float) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.output == "softmax":
            nn.init.zeros_(self.decoder.bias)
        gates = {"lstm": 4, "gru": 3}.get(self.cell, 1)
        for layer in self.layers:
            w_hh, b_hh, b_ih = layer.weight_hh_l0, layer.bias_hh_l0, layer.bias_ih_l0
            with torch.no_grad():
                if init == "identity":  # IRNN (Le et al. 2015): h_t = relu(W x_t + h_{t-1}) at the start
                    w_hh.copy_(torch.eye(self.hidden_dim))
                    b_hh.zero_()
                    b_ih.zero_()
                elif init in ("scaled", "orthogonal"):  # orthogonal blocks (times init_scale: > 1 explodes, < 1
                    for g in range(gates):                # vanishes); "orthogonal": norm-preserving, scale 1
                        block = w_hh[g * self.hidden_dim:(g + 1) * self.hidden_dim]
                        nn.init.orthogonal_(block)
                        block.mul_(scale if init == "scaled" else 1.0)
                elif init != "default":
                    raise ValueError(f"init={init!r} is not 'default', 'identity', 'orthogonal' or 'scaled'")

    def set_gate_bias(self, value: float) -> None:
        """The keep gate's total bias (b_ih + b_hh) = `value` in every layer: the LSTM forget gate, the GRU update
        gate. The other gates keep their default initialisation."""
        block = slice(GATED[self.cell] * self.hidden_dim, (GATED[self.cell] + 1) * self.hidden_dim)
        with torch.no_grad():
            for layer in self.layers:
                layer.bias_ih_l0[block] = value
                layer.bias_hh_l0[block] = 0.0

    def set_chrono_bias(self, t_max: float) -> None:
        """Chrono initialisation (Tallec & Ollivier 2018): per unit, the keep gate's total bias b ~ log U(1, T_max − 1),
        so the units' initial memory timescales 1/(1 − σ(b)) ≈ e^b spread over [1, T_max); the LSTM's input gate
        gets −b (what is kept is not overwritten). Draws from torch's global generator (seed it first)."""
        hd, keep = self.hidden_dim, GATED[self.cell]
        with torch.no_grad():
            for layer in self.layers:
                b = torch.log(torch.empty(hd).uniform_(1.0, t_max - 1.0))
                layer.bias_ih_l0[keep * hd:(keep + 1) * hd] = b
                layer.bias_hh_l0[keep * hd:(keep + 1) * hd] = 0.0
                if self.cell == "lstm":  # rows i (block 0): the input gate
                    layer.bias_ih_l0[:hd] = -b
                    layer.bias_hh_l0[:hd] = 0.0

    def rank_order(self) -> Tensor:
        """(V,) the piece id at each frequency rank: the inverse of `rank`."""
        return torch.argsort(self.rank)

    def set_piece_frequencies(self, counts: Tensor) -> None:
        """Order the adaptive softmax's clusters by piece frequency (most frequent piece gets rank 0)."""
        order = torch.argsort(counts.to(self.rank.device), descending=True, stable=True)
        self.rank[order] = torch.arange(self.vocab_size, device=self.rank.device)

    def init_state(self, batch_size: int, device=None) -> State:
        h = torch.zeros(self.num_layers, batch_size, self.hidden_dim, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def embed(self, tokens: Tensor) -> Tensor:
        return self.drop(self.embedding(tokens))  # (B, T, E)

    def recur(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Embedded inputs (B, T, E) -> top-layer features (B, T, H) and the new state."""
        if state is None:
            state = self.init_state(x.size(0), x.device)
        lstm = isinstance(state, tuple)
        state_dtype = (state[0] if lstm else state).dtype
        # Under autocast (bf16-mixed) on CPU, PyTorch casts the LSTM's weights but not its input or carried state,
        # and oneDNN refuses mixed dtypes: both follow the autocast dtype (CUDA's autocast casts all three itself).
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        if dtype is not None:
            x = x.to(dtype)
        new_h, new_c = [], []
        for i, layer in enumerate(self.layers):
            s = (state[0][i:i + 1].contiguous(), state[1][i:i + 1].contiguous()) if lstm \
                else state[i:i + 1].contiguous()
            if dtype is not None:
                s = tuple(t.to(dtype) for t in s) if lstm else s.to(dtype)
            out, s = layer(x, s)  # (B, T, H)
            if self.residual and i > 0:
                out = out + x
            x = self.drop(out)
            new_h.append(s[0] if lstm else s)
            if lstm:
                new_c.append(s[1])
        h = torch.cat(new_h, 0)  # (L, B, H)
        new_state = (h, torch.cat(new_c, 0)) if lstm else h
        if dtype is not None:  # the carried state stays in the caller's precision across bf16 steps
            new_state = tuple(t.to(state_dtype) for t in new_state) if lstm else new_state.to(state_dtype)
        return x, new_state

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.recur(self.embed(tokens), state)

    def _out(self, features: Tensor) -> Tensor:
        f = features.reshape(-1, features.size(-1))  # (B*T, H)
        return self.projection(f) if self.projection is not None else f

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood per target token."""
        f = self._out(features)
        if self.output == "softmax":
            return F.cross_entropy(self.decoder(f), targets.reshape(-1))
        return self.adaptive(f, self.rank[targets.reshape(-1)]).loss

    def target_log_probs(self, features: Tensor, targets: Tensor) -> Tensor:
        """log p(target) for N feature rows (N, H) and their target ids (N,): with the adaptive softmax only the
        head and each row's own cluster are computed, not the whole vocabulary."""
        f = self._out(features)
        if self.output == "softmax":
            return F.log_softmax(self.decoder(f), dim=-1).gather(1, targets.view(-1, 1)).squeeze(1)
        return self.adaptive(f, self.rank[targets]).output

    def log_probs(self, features: Tensor, in_rank_order: bool = False) -> Tensor:
        """Exact log-probabilities over the whole vocabulary: (B, T, H) -> (B, T, V), columns by piece id; or, with
        `in_rank_order`, column j is piece `rank_order()[j]`: the adaptive softmax's own order, which saves a
        (B*T, V) copy where a caller only needs sets of pieces (the beam search)."""
        f = self._out(features)
        if self.output == "softmax":
            lp = F.log_softmax(self.decoder(f), dim=-1)
            if in_rank_order:
                lp = lp.index_select(1, self.rank_order())
        else:
            lp = self.adaptive.log_prob(f)
            if not in_rank_order:
                lp = lp.index_select(1, self.rank)  # rank space -> id space
        return lp.view(*features.shape[:-1], self.vocab_size)
