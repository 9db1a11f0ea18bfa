"""A network from its arguments: the one place a `model:` config becomes a RecurrentLM, and the plain dict of
arguments that checkpoints and exports store (so loading needs no config class)."""
from __future__ import annotations

from typing import Any

from models.recurrent import RecurrentLM


def model_args(mc: Any, vocab_size: int) -> dict[str, Any]:
    """The constructor arguments for a ModelConfig (pipeline/config.py) and the tokenizer's vocabulary size."""
    return {"vocab_size": vocab_size, "cell": mc.cell, "embedding_dim": mc.embedding_dim,
            "hidden_dim": mc.hidden_dim, "num_layers": mc.num_layers, "dropout": mc.dropout,
            "tie_weights": mc.tie_weights, "init": mc.init, "residual": mc.residual, "output": mc.output,
            "cutoffs": list(mc.cutoffs), "init_scale": mc.init_scale, "gate_bias": mc.gate_bias}


def build_model(args: dict[str, Any]) -> RecurrentLM:
    return RecurrentLM(**{**args, "cutoffs": tuple(args.get("cutoffs", ()))})
