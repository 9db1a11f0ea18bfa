"""`POST /explain`: for each network named in `serve.explain` (by default the RNN and LSTM champions), its own top-k
words after the text (completions of the word being typed, as the bar above reads it) and how strongly its top suggestion depends on each typed word (pipeline/evaluation/
attribution.py), with the distance of the farthest word that still matters ("looks back 41 words").

The networks are explained alone, not mixed: the point is to see what each recurrence keeps. The context is read as
/predict reads it (the last serve.max_context_pieces pieces, from a word start).
"""
from __future__ import annotations

import threading
from typing import Any

from pipeline.checkpoints import ModelBundle
from pipeline.evaluation.attribution import looks_back, piece_influence, word_influence
from pipeline.evaluation.typed import typed_word
from pipeline.serving.mixed import predictor_for


class Explainer:
    """One network behind /explain; thread-safe (its own lock: a model call is not re-entrant)."""

    def __init__(self, bundle: ModelBundle, label: str, max_context_pieces: int | None, threshold: float):
        # float weights whatever the model was evaluated with: the attribution differentiates through the network
        self.served = predictor_for(bundle, None, label, None, max_context_pieces, int8=False)
        self.engine, self.pred = self.served.engine, self.served.pred
        self.label, self.threshold = label, threshold
        self.cell = bundle.model_args["cell"]
        self.lock = threading.Lock()

    def explain(self, text: str, k: int) -> dict[str, Any]:
        # as the bar above it reads the text: completions of the word being typed, or the next word after a space;
        # the attribution is over the words before the typed prefix, the context the suggestions are read after
        context_words, _ = typed_word(text, "auto")
        ids = self.engine.ids([" ".join(context_words)])[0]
        with self.lock:
            got = self.served.predict([text], k, "net", "auto")[0]
            words, completing = got["words"], got["completing"]
            spans = self.engine.word_spans(ids)
            context = [{"word": self.pred.tok.decode(ids[a:b]).strip(), "distance": len(spans) - i}
                       for i, (a, b) in enumerate(spans)]
            if words and spans:
                norms, _ = piece_influence(self.pred.model, ids, self.pred.tok.encode(words[0]["word"]),
                                           self.pred.masks.boundary)
                for c, a in zip(context, word_influence(norms, spans)):
                    c["influence"] = a
            else:
                for c in context:
                    c["influence"] = 0.0
        infl = [c["influence"] for c in context]
        return {"model": self.label, "cell": self.cell, "words": words, "completing": completing,
                "top": words[0]["word"] if words else None,
                "context": context, "looks_back": looks_back(infl, self.threshold), "threshold": self.threshold,
                "read_from_start": bool(ids) and ids[0] == self.pred.tok.bos_id}
