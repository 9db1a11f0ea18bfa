"""The model MLflow serves (pyfunc): texts in, the top-k next words and their probabilities out."""
from __future__ import annotations

from typing import Any

import mlflow

from pipeline.checkpoints import load_export
from pipeline.evaluation.mixture import load_mixture
from pipeline.serving.mixed import predictor_for
from pipeline.serving.request_check import RequestError, check_request, limits_of


class NextWordModel(mlflow.pyfunc.PythonModel):
    """Input: a list of texts (or a one-column DataFrame). Output: one row per text with the top-k words and their
    probabilities, the prefix they complete ("" for a next word) and which model gave them. Params: `k` (default
    5, 1 to the model's serve.max_k); `mix`: "auto" (default: the fitted mixture stored with the model, else the
    network), "mixture" or "net"; `mode`: "auto" (default: text ending in a word character completes that word),
    "next" or "complete". A bad request raises request_check.RequestError (a ValueError) naming the field."""

    def load_context(self, context) -> None:
        self.model_dir = context.artifacts["model_dir"]
        self.bundle = load_export(self.model_dir)
        self._served = None

    @property
    def served(self):
        """Built on first use: the server loads models through MLflow only for their weights (and reads the mixture
        itself, once), so loading does not pay for reading the n-gram."""
        if self._served is None:
            self._served = predictor_for(self.bundle, load_mixture(self.model_dir), self.bundle.model_args["cell"])
        return self._served

    # MLflow builds the signature from `predict`'s type hints when there are any, and a hint-derived signature
    # cannot declare params, so `k` would be dropped: opt out of hint validation and log an explicit signature.
    _skip_type_hint_validation = True

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        params = params or {}
        mix = params.get("mix", "auto")
        if mix not in ("auto", "mixture", "net"):
            raise RequestError("mix", f"params.mix is {mix!r}; use \"auto\", \"mixture\" or \"net\"")
        mix = None if mix == "auto" else mix
        if isinstance(model_input, pd.DataFrame):
            texts = model_input.iloc[:, 0].astype(str).tolist()
        elif isinstance(model_input, pd.Series):
            texts = model_input.astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        mode = params.get("mode", "auto")
        # the check the HTTP API and `predict` run, against the limits the model was saved with
        k = check_request(texts, params.get("k", 5), mode, limits_of(self.bundle.config), "input row {i}")
        rows = self.served.predict(texts, k, mix, mode) if texts else []
        return pd.DataFrame({"text": texts, "words": [[w["word"] for w in r["words"]] for r in rows],
                             "probs": [[w["prob"] for w in r["words"]] for r in rows],
                             "completing": [r["completing"] or "" for r in rows],
                             "model": [self.served.label(mix)] * len(texts)})
