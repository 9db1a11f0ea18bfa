"""What the server and the MLflow model predict with: the network read incrementally through the state cache and, when
the model carries a fitted mixture (pipeline/evaluation/mixture.py), mixed with the n-gram and the neural cache over
the typed text. The mixture is the default; `mix="net"` asks for the network alone, to compare.

One request, mixed:  read the (new) pieces → the network's exact top K → the n-gram's top K after the typed words →
the cache's K heaviest words (keys: the top-layer output that preceded each typed word, kept by the state cache) →
the network's exact probability of every candidate it did not rank → λ(context class)-weighted sum → top k.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from pipeline.checkpoints import ModelBundle
from pipeline.corpus.cleaning import clean_text
from pipeline.evaluation.mixture import (
    Mixture,
    cache_distributions,
    load_mixture,
    mix_probs,
)
from pipeline.evaluation.predict import cat_states, select_state
from pipeline.serving.statecache import IncrementalPredictor

Mix = Literal["mixture", "net"]
PART_LABELS = {"kn": "{order}-gram", "cache": "cache"}


def mixture_dir(bundle: ModelBundle) -> Path:
    """Where a model's mixture lives: inside an export directory (what the registry stores), or runs/<run>/mixture/
    beside a training checkpoint (runs/<run>/checkpoints/*.ckpt)."""
    source = Path(str(bundle.meta.get("source", "")))
    return source if source.is_dir() else source.parent.parent / "mixture"


def load_for(bundle: ModelBundle) -> Mixture | None:
    """The bundle's mixture, read from its directory (see mixture_dir); None when it carries none."""
    return load_mixture(mixture_dir(bundle))


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

    def predict(self, texts: list[str], k: int = 5, mix: Mix | None = None) -> list[list[dict[str, float]]]:
        mix = mix or self.default_mix
        if mix == "mixture" and self.mixture is None:
            raise ValueError("this model carries no fitted mixture; ask for mix=\"net\" or fit one with `make mix` "
                             "(`make run` fits and registers one)")
        if mix == "net":
            return self.engine.predict(texts, k)
        m = self.mixture
        ids = self.engine.ids(texts)
        words = [clean_text(t).split() for t in texts]
        kn_top = m.lm.top_words(words, m.candidates, True) if m.lm is not None else [[] for _ in texts]
        with self.engine.lock:
            read = self.engine.read(ids)
            state, lp = cat_states([r[0] for r in read]), torch.cat([r[1] for r in read])
            net_top = self.pred.top_words(state, lp, max(k, m.candidates))
            feats = [self._features(r, e, w) for r, (_, _, e), w in zip(ids, read, words)]
            cands, asked = [], []
            for i, (nt, kt, f) in enumerate(zip(net_top, kn_top, feats)):
                cands.append(list(dict.fromkeys([w for w, _ in nt] + [w for w, _ in kt] + f["cache_top"])))
                ranked = {w for w, _ in nt}
                asked += [(i, w) for w in cands[-1] if w not in ranked]
            extra: dict[int, dict[str, float]] = {}
            if asked:
                rows = torch.tensor([i for i, _ in asked])
                got = self.pred.word_log_prob(select_state(state, rows), lp.index_select(0, rows),
                                              [w for _, w in asked]).tolist()
                for (i, w), v in zip(asked, got):
                    extra.setdefault(i, {})[w] = v
        out = []
        for i, (c, f) in enumerate(zip(cands, feats)):
            net_lp = {**dict(net_top[i]), **extra.get(i, {})}
            probs = mix_probs(m.weights, m.lm, f, words[i], c, net_lp, True)
            best = sorted(range(len(c)), key=lambda j: -probs[j])[:k]
            out.append([{"word": c[j], "prob": probs[j]} for j in best])
        return out

    def _features(self, ids: list[int], ends: torch.Tensor | None, words: list[str]) -> dict[str, Any]:
        """The mixture's view of one context: the n-gram's matched order, and the cache over the typed words (each
        word chunk keyed by the output at the end of the chunk before it; the query is the last chunk's output)."""
        m = self.mixture
        order = int(m.lm.matched_order([words], True)[0]) if m.lm is not None else 0
        feat: dict[str, Any] = {"order": order, "cache_empty": True, "cache": {}, "cache_top": []}
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
        dist = cache_distributions(ends[-1:], ends[torch.tensor(keys)], key_ids, [len(keys)], m.weights.theta,
                                   m.weights.window, 0, len(vocab))[0]
        names = list(vocab)
        top = dist.topk(min(m.candidates, len(names)))
        feat.update(cache_empty=False, cache={w: float(dist[i]) for w, i in vocab.items()},
                    cache_top=[names[i] for v, i in zip(top.values.tolist(), top.indices.tolist()) if v > 0])
        return feat


def predictor_for(bundle: ModelBundle, mixture: Mixture | None, name: str, cache=None,
                  max_context_pieces: int | None = None) -> ServedPredictor:
    """The ServedPredictor of a loaded model, with the search settings it was evaluated with."""
    from pipeline.evaluation.predict import WordPredictor

    ev = bundle.config.get("eval", {}) if isinstance(bundle.config, dict) else {}
    pred = WordPredictor(bundle.model, bundle.tokenizer, int(ev.get("beam_width", 8)),
                         int(ev.get("max_word_pieces", 12)), int(ev.get("max_beam_width", 128)))
    engine = IncrementalPredictor(pred, cache, max_context_pieces, keep_ends=mixture is not None)
    return ServedPredictor(engine, mixture, name)

