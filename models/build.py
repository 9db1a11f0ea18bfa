"""A network from its arguments: the one place a `model:` config becomes a RecurrentLM, and the plain dict of
arguments that checkpoints and exports store (so loading needs no config class)."""
from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from models.recurrent import RecurrentLM


def model_args(mc: Any, vocab_size: int) -> dict[str, Any]:
    """The constructor arguments for a ModelConfig (pipeline/config.py) and the tokenizer's vocabulary size."""
    return {"vocab_size": vocab_size, "cell": mc.cell, "embedding_dim": mc.embedding_dim,
            "hidden_dim": mc.hidden_dim, "num_layers": mc.num_layers, "dropout": mc.dropout,
            "tie_weights": mc.tie_weights, "init": mc.init, "residual": mc.residual, "output": mc.output,
            "cutoffs": list(mc.cutoffs), "init_scale": mc.init_scale, "gate_bias": mc.gate_bias}


def build_model(args: dict[str, Any]) -> RecurrentLM:
    return RecurrentLM(**{**args, "cutoffs": tuple(args.get("cutoffs", ()))})


def int8_copy(model: RecurrentLM) -> RecurrentLM:
    """An inference copy whose LSTM/GRU and linear layers (the adaptive softmax's included) hold int8 weights, their
    activations quantized per call (dynamic quantization): faster matrix products on CPU (bench/serve.py times it
    and pairs its accuracy with the float model's on the same words). The embedding stays float (a lookup); a tanh
    or ReLU `nn.RNN` has no dynamic int8 kernel and stays float too. No gradients flow through the copy."""
    with warnings.catch_warnings():
        # torch 2.x deprecates eager quantization in favour of torchao, which has no dynamic int8 LSTM; the eager one
        # still ships and is what quantizes nn.LSTM / nn.GRU
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.LSTM, nn.GRU, nn.Linear},
                                                      dtype=torch.qint8)
