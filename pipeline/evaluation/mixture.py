"""The network mixed with the Kneser-Ney n-gram and a continuous cache (DESIGN §7 "Mixture"), at the word level:

    P(w | h) = λ_net(c)·P_net(w | h) + λ_kn(c)·P_kn(w | h) + λ_cache(c)·P_cache(w | h)

    P_net    the network's whole-word probability from pieces (predict.py), exact
    P_kn     the interpolated Kneser-Ney n-gram; 0 for a word outside its vocabulary (its <unk> mass belongs to no
             one word, so counting it for every unseen word would let the mixture sum past 1)
    P_cache  Σ_{i < t, t - i <= W, w_i = w} softmax_i(θ · q_t·q_i): q_i is the network's top-layer state that
             predicted word i, so a word recurs where the state looks like the one that once preceded it
             (Grave et al. 2017)
    c        the context's class: how many words of context the n-gram matched (0 … order-1) and how many words
             the cache holds (0, 1–3, 4–15, 16–63, 64+: `history_edges`): a cache over three words is peaky and
             mostly wrong (the next word repeats one of the last three under 1 % of the time in the test text), one
             over a paragraph is often right, so each gets its own λ; with `context_dependent=False` one class holds
             every word

This module is the served model alone — its weights, how it is stored, the cache and the mixing; its ranking is
mixture_search.py (`mixed_top`, the one ranking function the server, the pyfunc and the evaluation all use); the
server imports nothing else of the evaluation. θ and W are chosen on the validation split by grid, the λ of each class by EM on the validation words'
log-likelihood (mixture_fit.py); mixture_scorer.py puts the mixture behind the `Scorer` protocol.

The top k is exact: the k words of highest mixture probability, proven by a threshold search over the parts' sorted
lists (`mixed_search`): each part's top K under the typed prefix with a bound on everything it did not list, the
network's exact probability computed only for words that could still reach the top k, K widened where the bound is
not beaten. `mixed_top` is the one function the server and the evaluation both rank with; a completion's
probabilities are renormalised over the words listed.
"""
from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.evaluation.ngram import KneserNey, read_arpa, write_arpa

PARTS = ("net", "kn", "cache")
HISTORY_EDGES = (1, 4, 16, 64)  # cache classes by words of history: 0, 1-3, 4-15, 16-63, 64+


@dataclass
class MixtureWeights:
    parts: tuple[str, ...]                       # the parts mixed, a subset of PARTS
    weights: dict[str, list[float]] = field(default_factory=dict)  # class -> λ per part (same order), sum 1
    theta: float = 0.0
    window: int = 0
    context_dependent: bool = True
    history_edges: tuple[int, ...] = ()  # () : the classes of fits before issue 22, "cache empty or not"
    skip: int = 0  # the cache leaves out the last `skip` words: they are what was just typed (see cache_distributions)

    def __post_init__(self):
        if not self.parts or set(self.parts) - set(PARTS):
            raise ValueError(f"mixture parts {list(self.parts)}: give one or more of {list(PARTS)}")

    def context_class(self, order: int, history: int) -> str:
        """The class of a context whose n-gram matched `order` words and whose cache holds `history` words."""
        if not self.context_dependent:
            return "all"
        if "cache" not in self.parts:
            return f"o{order}"
        if not self.history_edges:
            return f"o{order}" + ("-nocache" if not history else "")
        b = bisect.bisect_right(self.history_edges, history)
        lo = self.history_edges[b - 1] if b else 0
        if b == len(self.history_edges):
            return f"o{order}-h{lo}+"
        hi = self.history_edges[b] - 1
        return f"o{order}-h{lo}" + (f"-{hi}" if hi > lo else "")

    def lam(self, cls: str) -> np.ndarray:
        default = self.weights.get("all") or [1.0 / len(self.parts)] * len(self.parts)
        return np.asarray(self.weights.get(cls, default), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parts": list(self.parts), "history_edges": list(self.history_edges)}



# ------------------------------------------------------------------------------------------- stored with a model
# A fitted mixture travels with the network (the registered model's artifacts, or runs/<run>/mixture/) as two
# documented text files, nothing pickled: mixture.json (MixtureWeights + K + how it was fitted) and the n-gram as
# ARPA text (gzip), the format KenLM, SRILM and every n-gram toolkit read.
WEIGHTS_FILE, ARPA_FILE = "mixture.json", "ngram.arpa.gz"


class MixtureError(ValueError):
    """A stored mixture cannot be read; the message names the file and the fix."""


@dataclass
class Mixture:
    lm: KneserNey | None
    weights: MixtureWeights
    candidates: int
    about: dict[str, Any] = field(default_factory=dict)  # the fit: validation words, word ppl, ...


def save_mixture(directory, lm: KneserNey | None, weights: MixtureWeights, candidates: int,
                 about: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if "kn" in weights.parts:
        write_arpa(lm, directory / ARPA_FILE)
    blob = {"weights": weights.to_dict(), "candidates": candidates, "about": about or {}}
    (directory / WEIGHTS_FILE).write_text(json.dumps(blob, indent=1, ensure_ascii=False, default=str),
                                          encoding="utf-8")
    return directory


def load_mixture(directory) -> Mixture | None:
    """The mixture stored in `directory`, or None when it holds none (a model trained before mixtures existed)."""
    directory = Path(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
        w = blob["weights"]
        weights = MixtureWeights(tuple(w["parts"]), {str(c): [float(x) for x in v] for c, v in w["weights"].items()},
                                 float(w["theta"]), int(w["window"]), bool(w["context_dependent"]),
                                 tuple(int(e) for e in w.get("history_edges", ())), int(w.get("skip", 0)))
        if any(len(v) != len(weights.parts) for v in weights.weights.values()):
            raise ValueError("a class's weights do not match the parts")
        candidates = int(blob["candidates"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MixtureError(f"{path} is not a mixture written by marathi-nwp ({type(e).__name__}: {e}); refit it "
                           "with `make mix` or retrain with `make run`") from None
    lm = None
    if "kn" in weights.parts:
        try:
            lm = read_arpa(directory / ARPA_FILE)
        except FileNotFoundError:
            raise MixtureError(f"{directory} has {WEIGHTS_FILE} but not the n-gram it mixes ({ARPA_FILE}); copy "
                               "both files together, or refit with `make mix`") from None
        except (ValueError, KeyError, IndexError, EOFError, OSError) as e:
            raise MixtureError(f"{directory / ARPA_FILE} is truncated or not an ARPA file written by marathi-nwp "
                               f"({type(e).__name__}); refit with `make mix` or retrain with `make run`") from None
    return Mixture(lm, weights, candidates, blob.get("about") or {})


def mixture_dir(bundle) -> Path:
    """Where a model's mixture lives: inside an export directory (what the registry stores), or runs/<run>/mixture/
    beside a training checkpoint (runs/<run>/checkpoints/*.ckpt)."""
    source = Path(str(bundle.meta.get("source", "")))
    return source if source.is_dir() else source.parent.parent / "mixture"


def mixture_of(bundle) -> Mixture | None:
    """A loaded model's fitted mixture, the one its server suggests from; None when it carries none."""
    return load_mixture(mixture_dir(bundle))


# ------------------------------------------------------------------------------------------------------ the cache

def cache_distributions(queries: torch.Tensor, keys: torch.Tensor, key_words: Sequence[int], positions: Sequence[int],
                        theta: float, window: int, first_key: int = 0, vocab: int | None = None, skip: int = 0
                        ) -> torch.Tensor:
    """P_cache over a document's word ids for targets at word positions `positions` (rows of the result):
    queries (N, H), the document's keys (n, H) with their word ids, each target reading keys
    [max(first_key, t - window), t - skip). Returns (N, vocab); an empty window gives a zero row. `skip`: the last
    words are left out — the state before a word resembles the states just before it, so a cache that reads them
    suggests what was just typed, which the next word repeats about 1 % of the time."""
    ids = torch.as_tensor(list(key_words), dtype=torch.long)
    vocab = vocab or (int(ids.max()) + 1 if len(ids) else 1)
    out = torch.zeros(len(positions), vocab, dtype=torch.float64)
    for lo in range(0, len(positions), 256):  # a chunk of targets against the span of keys they can see
        pos = torch.as_tensor(list(positions[lo:lo + 256]))
        start, end = max(first_key, int(pos.min()) - window), int(pos.max())
        if end <= start:
            continue
        span = torch.arange(start, end)
        scores = theta * (queries[lo:lo + len(pos)].double() @ keys[start:end].double().T)  # (n, span)
        visible = (span.unsqueeze(0) < pos.unsqueeze(1) - skip) & (span.unsqueeze(0) >= (pos.unsqueeze(1) - window)) & \
            (span.unsqueeze(0) >= first_key)
        scores = scores.masked_fill(~visible, -math.inf)
        alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a row with nothing visible: all zero
        out[lo:lo + len(pos)].scatter_add_(1, ids[start:end].expand(len(pos), -1), alpha)
    return out


def cache_history(words_before: int, window: int, first_key: int = 0, skip: int = 0) -> int:
    """How many words the cache reads for a target with `words_before` words before it (its class's history)."""
    return max(0, words_before - skip - max(first_key, words_before - window))


def kn_probs(lm: KneserNey, ctx: list[str], words: list[str], bos: bool) -> list[float]:
    """P_kn of each word after ctx; 0 for a word outside the n-gram's vocabulary (see the module docstring)."""
    lp = lm.log_prob([ctx] * len(words), words, bos)
    return [math.exp(v) if w in lm.index else 0.0 for v, w in zip(lp, words)]


def mix_probs(w: MixtureWeights, lm: KneserNey | None, feat: dict, ctx: list[str], words: list[str],
              net_lp: dict[str, float], bos: bool, kn: list[float] | None = None) -> list[float]:
    """Mixture probabilities of `words` at one target: feat holds the n-gram's matched order, the cache's history
    (words it holds) and P_cache per word; net_lp the network's log-probability per word; `kn`, when given, the
    n-gram's probabilities of the words (else computed here)."""
    if kn is None:
        kn = kn_probs(lm, ctx, words, bos) if "kn" in w.parts else [0.0] * len(words)
    lam = w.lam(w.context_class(feat["order"], feat["history"]))
    cache = feat["cache"]
    out = []
    for word, k in zip(words, kn):
        part = {"net": math.exp(net_lp[word]), "kn": k, "cache": cache.get(word, 0.0)}
        out.append(float(sum(l * part[x] for l, x in zip(lam, w.parts))))
    return out


def mix_label(net: str, parts: tuple[str, ...], order: int) -> str:
    """A mixture's name in tables: "lstm + 4-gram + cache" (the n-gram named by its order)."""
    return " + ".join([net] + [{"kn": f"{order}-gram", "cache": "cache"}[p] for p in parts if p != "net"])
