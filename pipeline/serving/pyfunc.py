"""The model MLflow serves (pyfunc): texts in, the top-k next words and their probabilities out."""
from __future__ import annotations

from typing import Any

import mlflow

from pipeline.checkpoints import load_export
from pipeline.evaluation.predict import WordPredictor


class NextWordModel(mlflow.pyfunc.PythonModel):
    """Input: a list of texts (or a one-column DataFrame). Output: one row per text with the top-k words and their
    probabilities. Params: `k` (default 5)."""

    def load_context(self, context) -> None:
        self.bundle = load_export(context.artifacts["model_dir"])
        ev = self.bundle.config.get("eval", {})
        self.predictor = WordPredictor(self.bundle.model, self.bundle.tokenizer, ev.get("beam_width", 8),
                                       ev.get("max_word_pieces", 12), ev.get("max_beam_width", 128))

    # MLflow builds the signature from `predict`'s type hints when there are any, and a hint-derived signature
    # cannot declare params, so `k` would be dropped: opt out of hint validation and log an explicit signature.
    _skip_type_hint_validation = True

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        k = int((params or {}).get("k", 5))
        if isinstance(model_input, pd.DataFrame):
            texts = model_input.iloc[:, 0].astype(str).tolist()
        elif isinstance(model_input, pd.Series):
            texts = model_input.astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        rows = self.predictor.predict(texts, k) if texts else []
        return pd.DataFrame({"text": texts, "words": [[w["word"] for w in r] for r in rows],
                             "probs": [[w["prob"] for w in r] for r in rows]})
