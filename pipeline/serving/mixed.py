"""What the server and the MLflow model predict with: the network read incrementally through the state cache and, when
the model carries a fitted mixture (pipeline/evaluation/mixture.py), mixed with the n-gram and the neural cache over
the typed text. The mixture is the default; `mix="net"` asks for the network alone, to compare.

One request, mixed:  split off the word being typed (if any) → read the (new) pieces of the words before it →
`mixture_search.mixed_top`, the same search the evaluation ranks with: the mixture's exact top k under the typed prefix,
from the network's beam, the n-gram's top K and the cache's K heaviest words (keys: the top-layer output that preceded
each typed word, kept by the state cache), each with a bound on what it did not list, the network's exact probability
of the listed words that could still reach the top k, λ(context class)-weighted sum → top k. Each keystroke inside
a word re-reads nothing: the words before it are unchanged, so the state cache serves them.
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from models.build import int8_copy
from pipeline.checkpoints import ModelBundle
from pipeline.evaluation.mixture import (  # noqa: F401 - mixture_dir: where the server finds it, re-exported
    Mixture,
    cache_distributions,
    cache_history,
    mixture_dir,
    mixture_of,
)
from pipeline.evaluation.mixture_search import mixed_top
from pipeline.evaluation.predict import cat_states, completions
from pipeline.evaluation.typed import typed_word
from pipeline.serving.statecache import IncrementalPredictor

Mix = Literal["mixture", "net"]
PART_LABELS = {"kn": "{order}-gram", "cache": "cache"}


def load_for(bundle: ModelBundle) -> Mixture | None:
    """The bundle's mixture (see mixture.mixture_dir); None when it carries none."""
    return mixture_of(bundle)


class ServedPredictor:
    """`predict(texts, k, mix)` → per text [{"word", "prob"}, ...]; `label(mix)` says what produced them."""

    def __init__(self, engine: IncrementalPredictor, mixture: Mixture | None, name: str):
        if mixture is not None and "cache" in mixture.weights.parts and not engine.keep_ends:
            raise ValueError("a mixture with a cache needs IncrementalPredictor(keep_ends=True)")
        self.engine, self.mixture, self.name = engine, mixture, name
        self.pred = engine.predictor

    @property
    def default_mix(self) -> Mix:
        return "mixture" if self.mixture is not None else "net"

    def label(self, mix: Mix | None = None) -> str:
        if (mix or self.default_mix) == "net" or self.mixture is None:
            return self.name
        order = self.mixture.lm.order if self.mixture.lm is not None else 0
        return " + ".join([self.name] + [PART_LABELS[p].format(order=order) for p in self.mixture.weights.parts
                                          if p != "net"])

    def predict(self, texts: list[str], k: int = 5, mix: Mix | None = None, mode: str = "auto"
                ) -> list[dict[str, Any]]:
        """Per text {"words": [{"word", "prob"}, ...], "completing": prefix or None}: the next word, or completions
        of the word the text ends in (`typed_word`'s reading for `mode`)."""
        mix = mix or self.default_mix
        if mix == "mixture" and self.mixture is None:
            raise ValueError("this model carries no fitted mixture; ask for mix=\"net\" or fit one with `make mix` "
                             "(`make run` fits and registers one)")
        typed = [typed_word(t, mode) for t in texts]
        prefixes = [p for _, p in typed]
        ids = self.engine.ids([" ".join(c) for c, _ in typed])
        with self.engine.lock:
            read = self.engine.read(ids)
            state, lp = cat_states([r[0] for r in read]), torch.cat([r[1] for r in read])
            if mix == "net":
                rows = self.pred.top_words(state, lp, k, prefixes)
                words = [completions(r, p) for r, p in zip(rows, prefixes)]
            else:
                m = self.mixture
                feats = [self._features(r, e, c) for r, (_, _, e), (c, _) in zip(ids, read, typed)]
                rows = mixed_top(m.weights, m.lm, self.pred, m.candidates, state, lp, [c for c, _ in typed], feats,
                                 prefixes, k)
                words = [[{"word": w, "prob": p} for w, p in r] for r in rows]
        return [{"words": w, "completing": p or None} for w, p in zip(words, prefixes)]

    def _features(self, ids: list[int], ends: torch.Tensor | None, words: list[str]) -> dict[str, Any]:
        """The mixture's view of one context: the n-gram's matched order, and the cache over the typed words (each
        word chunk keyed by the output at the end of the chunk before it; the query is the last chunk's output)."""
        m = self.mixture
        order = int(m.lm.matched_order([words], True)[0]) if m.lm is not None else 0
        feat: dict[str, Any] = {"order": order, "history": 0, "cache": {}}
        if "cache" not in m.weights.parts or ends is None:
            return feat
        chunk_ending_at = {cut: i for i, cut in enumerate(self.engine.boundaries(ids))}  # ends[i]: chunk i's output
        vocab: dict[str, int] = {}
        keys, key_ids = [], []
        for a, b in self.engine.word_spans(ids):
            word = self.pred._word(tuple(ids[a:b])) if a > 0 else None  # a tail's first word: nothing read before it
            if word is not None:
                keys.append(chunk_ending_at[a])  # the output that predicted this word
                key_ids.append(vocab.setdefault(word, len(vocab)))
        if not keys:
            return feat
        w = m.weights
        dist = cache_distributions(ends[-1:], ends[torch.tensor(keys)], key_ids, [len(keys)], w.theta, w.window, 0,
                                   len(vocab), w.skip)[0]
        feat.update(history=cache_history(len(keys), w.window, 0, w.skip),
                    cache={x: float(dist[i]) for x, i in vocab.items() if dist[i] > 0})
        return feat


def predictor_for(bundle: ModelBundle, mixture: Mixture | None, name: str, cache=None,
                  max_context_pieces: int | None = None, int8: bool | None = None) -> ServedPredictor:
    """The ServedPredictor of a loaded model, with the search settings it was evaluated with (int8 weights too, unless
    `int8` says otherwise: /explain needs gradients)."""
    from pipeline.evaluation.predict import WordPredictor

    ev = bundle.config.get("eval", {}) if isinstance(bundle.config, dict) else {}
    quantized = bool(ev.get("int8", False)) if int8 is None else int8
    pred = WordPredictor(int8_copy(bundle.model) if quantized else bundle.model, bundle.tokenizer,
                         int(ev.get("beam_width", 8)),
                         int(ev.get("max_word_pieces", 12)), int(ev.get("max_beam_width", 128)))
    engine = IncrementalPredictor(pred, cache, max_context_pieces, keep_ends=mixture is not None)
    return ServedPredictor(engine, mixture, name)

