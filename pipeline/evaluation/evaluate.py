"""Next-word evaluation (DESIGN §7): whole-word top-k accuracy, exact word perplexity, accuracy by distance and by
position, the context-length curve, probes; the same code for the recurrent models and the Kneser-Ney baseline.

How the neural pass is batched (the state must be the one after the *whole* preceding document):

    documents sorted by length, B at a time, right-padded:  x (B, T) = bos pieces… pad…
    step t = 0…T-1:  state_t = model(x[:, t], state_{t-1});  lp_t = log p(· | x[:, ≤t])   (B, V)
        tok_lp[:, t] = lp_t[x[:, t+1]]      bnd[:, t] = log Σ_{b ∈ boundary} lp_t[b]
        rows whose next piece opens a target word: (state_t, lp_t) → pending
    pending ≥ eval.batch_size  →  WordPredictor.top_words on the whole pending batch (beam search over pieces)
    log P(word) = Σ tok_lp over its pieces' predecessors + bnd after its last piece      (exact, teacher-forced)

Padding only ever follows a row's real pieces, so it cannot change any state that is read.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pipeline.checkpoints import ModelBundle
from pipeline.config import Config, EvalConfig
from pipeline.corpus.cleaning import is_word
from pipeline.evaluation import probes as probe_mod
from pipeline.evaluation.distance import (
    DISTANCE_BUCKETS,
    POSITION_BUCKETS,
    accuracy_by,
    bucket,
    distances,
    metric_suffix,
    position_bucket,
)
from pipeline.evaluation.keystrokes import (
    keystroke_lines,
    keystroke_metrics,
    keystroke_rows,
    keystroke_tables,
    run_scorer,
)
from pipeline.evaluation.ngram import KneserNey, context_tail
from pipeline.evaluation.predict import (
    WordPredictor,
    cat_states,
    select_state,
    stepwise,
)
from pipeline.evaluation.sampling import word_sample
from pipeline.evaluation.text_kinds import (
    ScoredWords,
    curve_lengths,
    curve_positions,
    curve_tables,
    hit_string,
    kind_tables,
    scored_words,
)

_STEP_TOKENS = 16384  # documents per teacher-forcing batch: B * T at most this many pieces (one doc at least)


def load_model(ref: str, cfg: Config | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """Resolve a --model reference: MLflow run id, models:/ URI, checkpoint or export directory."""
    from pipeline.tracking import load_bundle

    return load_bundle(ref, cfg)


def model_name(bundle: ModelBundle, ref: str) -> str:
    a = bundle.model_args
    return f"{a.get('cell', 'model')}-{a.get('num_layers', '?')}x{a.get('hidden_dim', '?')}"


# ------------------------------------------------------------------------------------------------------ scorers

class NeuralScorer:
    """A recurrent LM read through WordPredictor (whole words from pieces)."""

    def __init__(self, bundle: ModelBundle, ec: EvalConfig, name: str):
        self.name, self.ec = name, ec
        self.pred = WordPredictor(bundle.model, bundle.tokenizer, ec.beam_width, ec.max_word_pieces, ec.max_beam_width)
        self.model, self.tok = self.pred.model, self.pred.tok
        self.device = self.pred.device

    def _encode(self, tokens: list[str], bos: bool = True) -> tuple[list[int], list[int]]:
        """(`bos` +) pieces of the tokens, and the index in ids where each token's first piece sits."""
        pieces = self.tok.encode_batch(tokens) if tokens else []
        ids, starts = [self.tok.bos_id] if bos else [], []
        for p in pieces:
            starts.append(len(ids))
            ids += p
        return ids, starts

    @stepwise
    def _force(self, rows: list[list[int]], want: list[list[int]], on_state: Callable, need_lp: bool = True,
               on_step: Callable | None = None):
        """Teacher-force rows (B, T); at each wanted position t of row r call on_state(r, t, state_t, lp_t) in
        batches, and on_step(t, features_t) at every step when given; return tok_lp and bnd (B, T) when need_lp."""
        n, longest = len(rows), max(len(r) for r in rows)
        x = torch.full((n, longest), self.tok.pad_id, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            x[i, :len(r)] = torch.tensor(r)
        at: dict[int, list[int]] = {}
        for i, ts in enumerate(want):
            for t in ts:
                at.setdefault(t, []).append(i)
        state = self.model.init_state(n, self.device)
        tok_lp = torch.zeros(n, longest, device=self.device)
        bnd = torch.zeros(n, longest, device=self.device)
        neg = torch.tensor(-math.inf, device=self.device)
        for t in range(longest):
            feats, state = self.model(x[:, t:t + 1], state)  # (B, 1, H)
            if on_step is not None:
                on_step(t, feats[:, 0])
            if need_lp or t in at:
                lp = self.model.log_probs(feats).squeeze(1)  # (B, V)
            if need_lp:
                if t + 1 < longest:
                    tok_lp[:, t] = lp.gather(1, x[:, t + 1:t + 2]).squeeze(1)
                bnd[:, t] = torch.logsumexp(torch.where(self.pred.masks.boundary, lp, neg), dim=1)
            if t in at:
                idx = torch.tensor(at[t], device=self.device)
                on_state([(i, t) for i in at[t]], select_state(state, idx), lp.index_select(0, idx))
        return tok_lp, bnd

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur = [], []
        for i in order:
            if cur and (len(cur) + 1) * lengths[i] > _STEP_TOKENS:
                out.append(cur)
                cur = []
            cur.append(i)
        return out + ([cur] if cur else [])

    def evaluate_docs(self, docs: list[list[str]], targets: list[list[int]], k: int, progress, bos: bool = True,
                      extra: dict[tuple[int, int], list[str]] | None = None, vectors: bool = False,
                      on_batch: Callable | None = None, need_lp: bool = True) -> dict:
        """For every target token index: the top-k words (none when k = 0) with their log-probabilities and the
        word's exact log-probability. `extra`: more words whose exact log-probability is wanted at a target
        (res["extra"]); `vectors`: the top-layer state before every token of every document (res["vectors"][d],
        (tokens, H)), the state that predicts that token (the mixture's cache keys); `on_batch(keys, state,
        next_lp, vectors)`: called instead of the top-k search with each batch of targets, the state before them and
        the vectors so far (every one a target's cache can read); `need_lp=False`: no word log-probabilities (the
        full distribution is then computed only before targets)."""
        encoded = [self._encode(d, bos) for d in docs]
        top: dict[tuple[int, int], list[str]] = {}
        scored: dict[tuple[int, int], list[tuple[str, float]]] = {}
        logp: dict[tuple[int, int], float] = {}
        extra_lp: dict[tuple[int, int], dict[str, float]] = {}
        vecs: dict[int, torch.Tensor] = {}
        pending: list = []
        current: dict[int, tuple[int, torch.Tensor]] = {}  # doc -> (row, token indices) of the batch being forced
        buffer: dict[str, torch.Tensor] = {}

        def flush():
            keys = [key for key, _, _ in pending]
            state, lp = cat_states([s for _, s, _ in pending]), torch.cat([l for _, _, l in pending])
            if on_batch is not None:
                for d in {key[0] for key in keys} & current.keys() if vectors else ():
                    r, idx = current[d]  # the vectors read so far (a target's cache reads only earlier ones)
                    vecs[d] = buffer["feats"][r, idx]
                on_batch(keys, state, lp, vecs)
                pending.clear()
                return
            for key, row in zip(keys, self.pred.top_words(state, lp, k)):
                top[key], scored[key] = [w for w, _ in row], row
            if extra:
                asked = [(i, w) for i, key in enumerate(keys) for w in extra.get(key, ()) if w not in top[key]]
                if asked:
                    rows = torch.tensor([i for i, _ in asked], device=self.device)
                    got = self.pred.word_log_prob(select_state(state, rows), lp.index_select(0, rows),
                                                  [w for _, w in asked]).tolist()
                    for (i, w), v in zip(asked, got):
                        extra_lp.setdefault(keys[i], {})[w] = v
            progress(len(keys))
            pending.clear()

        for batch in self._batches([len(ids) for ids, _ in encoded]):
            rows = [encoded[d][0] for d in batch]
            want = [[encoded[d][1][j] - 1 for j in targets[d]] if k > 0 or on_batch else [] for d in batch]
            where = {}  # (row, t) -> (doc, token)
            for r, d in enumerate(batch):
                for j in targets[d]:
                    where[(r, encoded[d][1][j] - 1)] = (d, j)

            def on_state(keys, state, lp):
                for m, key in enumerate(keys):
                    pending.append((where[key], select_state(state, torch.tensor([m])), lp[m:m + 1]))
                    if len(pending) >= self.ec.batch_size:
                        flush()
            feats = torch.zeros(len(rows), max(map(len, rows)), self.model.hidden_dim) if vectors else None
            on_step = (lambda t, f: feats[:, t].copy_(f)) if vectors else None
            if vectors:
                buffer["feats"] = feats
                current.clear()
                current.update({d: (r, torch.tensor(encoded[d][1], dtype=torch.long) - 1) for r, d in enumerate(batch)})
            tok_lp, bnd = self._force(rows, want, on_state, need_lp=need_lp, on_step=on_step)
            for r, d in enumerate(batch):
                ids, starts = encoded[d]
                for j in targets[d] if need_lp else ():
                    s = starts[j]
                    e = (starts[j + 1] if j + 1 < len(starts) else len(ids)) - 1  # the word's last piece
                    logp[(d, j)] = float(tok_lp[r, s - 1:e].sum() + bnd[r, e])
                if vectors:
                    vecs[d] = feats[r, torch.tensor(starts, dtype=torch.long) - 1]
            if k == 0 and on_batch is None:
                progress(sum(len(targets[d]) for d in batch))
        if pending:
            flush()
        return {"top": top, "scored": scored, "logp": logp, "extra": extra_lp, "vectors": vecs}

    def keystrokes(self, docs: list[list[str]], targets: list[list[int]], slots: int, progress, bos: bool = True
                   ) -> dict[tuple[int, int], tuple[int, list[str]]]:
        """The typist of pipeline/evaluation/keystrokes.py at every target: per target, the characters typed before
        the bar offered the word (-1: never) and the bar before the first character."""
        from pipeline.evaluation.keystrokes import simulate

        out = {}

        def on_batch(keys, state, lp, vectors):
            def suggest(rows: list[int], prefixes: list[str]) -> list[list[str]]:
                idx = torch.tensor(rows, device=self.device)
                got = self.pred.top_words(select_state(state, idx), lp.index_select(0, idx), slots, prefixes)
                return [[w for w, _ in r] for r in got]
            for key, res in zip(keys, zip(*simulate([docs[d][j] for d, j in keys], suggest, slots))):
                out[key] = res
            progress(len(keys))
        self.evaluate_docs(docs, targets, 0, lambda n: None, bos=bos, on_batch=on_batch, need_lp=False)
        return out

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True) -> list[list[str]]:
        """Top-k words after each context, read from a fresh state (after `bos` when the context is a document's
        start; without it for a truncated context, which starts mid-document). Contexts of the same length in pieces
        are read together in one call of the recurrence, so no row is padded and the state after the last piece is
        each row's own (the context-length curves read thousands of contexts of a few hundred pieces)."""
        rows = [self._encode(c, bos)[0] for c in contexts]
        by_len: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_len.setdefault(len(r), []).append(i)
        out: dict[int, list[str]] = {}
        for n, idx in sorted(by_len.items()):
            per = max(1, min(self.ec.batch_size * 4, _STEP_TOKENS * 4 // max(n, 1)))
            for a in range(0, len(idx), per):
                part = idx[a:a + per]
                x = torch.tensor([rows[i] for i in part], device=self.device)  # (B, n)
                feats, state = self.model(x, None)  # (B, n, H): the whole context in one call
                lp = self.model.log_probs(feats[:, -1:]).squeeze(1)  # (B, V) after the last piece
                for start in range(0, len(part), self.ec.batch_size):
                    sl = torch.arange(start, min(start + self.ec.batch_size, len(part)))
                    res = self.pred.top_words(select_state(state, sl), lp.index_select(0, sl), k)
                    for i, row in zip(part[start:start + len(sl)], res):
                        out[i] = [w for w, _ in row]
        return [out[i] for i in range(len(contexts))]

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log P(candidate | context) as the next whole word, for each candidate of each context."""
        state, lp = self.pred.read([self.pred.context_ids(c) for c in contexts])
        rows = torch.tensor([i for i, cs in enumerate(candidates) for _ in cs])
        flat = [c for cs in candidates for c in cs]
        scores = self.pred.word_log_prob(select_state(state, rows), lp.index_select(0, rows), flat).tolist()
        out, pos = [], 0
        for cs in candidates:
            out.append(scores[pos:pos + len(cs)])
            pos += len(cs)
        return out


class NgramScorer:
    """The Kneser-Ney baseline behind the same three calls."""

    def __init__(self, lm, name: str | None = None):
        self.lm, self.name = lm, name or f"kn{lm.order}gram"

    def evaluate_docs(self, docs: list[list[str]], targets: list[list[int]], k: int, progress) -> dict:
        top, logp = {}, {}
        for d, (tokens, ts) in enumerate(zip(docs, targets)):
            if not ts:
                continue
            ctxs = [context_tail(tokens, j) for j in ts]
            tops = self.lm.top_words(ctxs, k) if k > 0 else [[] for _ in ts]
            for j, row, lp in zip(ts, tops, self.lm.log_prob(ctxs, [tokens[j] for j in ts])):
                top[(d, j)] = [w for w, _ in row]
                logp[(d, j)] = float(lp)
            progress(len(ts))
        return {"top": top, "logp": logp}

    def top_words(self, contexts: list[list[str]], k: int, bos: bool = True) -> list[list[str]]:
        return [[w for w, _ in row] for row in self.lm.top_words(contexts, k, bos=bos)]

    def keystrokes(self, docs: list[list[str]], targets: list[list[int]], slots: int, progress, bos: bool = True
                   ) -> dict[tuple[int, int], tuple[int, list[str]]]:
        from pipeline.evaluation.keystrokes import simulate

        keys = [(d, j) for d, ts in enumerate(targets) for j in ts]
        out = {}
        for a in range(0, len(keys), 512):
            part = keys[a:a + 512]
            ctxs = [context_tail(docs[d], j) for d, j in part]

            def suggest(rows: list[int], prefixes: list[str]) -> list[list[str]]:
                got = self.lm.top_words([ctxs[i] for i in rows], slots, bos, prefixes)
                return [[w for w, _ in r] for r in got]
            for key, res in zip(part, zip(*simulate([docs[d][j] for d, j in part], suggest, slots))):
                out[key] = res
            progress(len(part))
        return out

    def score(self, contexts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        from pipeline.corpus.cleaning import clean_text

        out = []
        for c, cs in zip(contexts, candidates):
            toks = clean_text(c).split()
            out.append(self.lm.log_prob([toks] * len(cs), cs).tolist())
        return out


# ------------------------------------------------------------------------------------------------------ evaluation

def targets_of(tokens: Sequence[str]) -> list[int]:
    return [j for j, t in enumerate(tokens) if is_word(t)]


def sampled_targets(docs: list[str], ec: EvalConfig) -> tuple[list[list[str]], list[list[int]], list[list[int]],
                                                             dict[str, Any]]:
    """Tokens and word targets of every document, and which of its words are scored (indices into its targets):
    all of them, or the seeded sample of pipeline/evaluation/sampling.py when eval.max_words is set."""
    tokens = [d.split() for d in docs]
    targets = [targets_of(t) for t in tokens]
    chosen = word_sample([len(t) for t in targets], ec.max_words, ec.sample_seed)
    available = sum(map(len, targets))
    scored = sum(map(len, chosen))
    info = {"words_available": available, "documents_available": len(docs), "words": scored,
            "documents": sum(1 for c in chosen if c), "max_words": ec.max_words,
            "seed": ec.sample_seed if scored < available else None}
    return tokens, targets, chosen, info


def sample_line(info: dict[str, Any]) -> str:
    """What was scored, in words: every figure's denominator."""
    if info["words"] < info["words_available"]:
        return (f"scored {info['words']:,} of {info['words_available']:,} words ({info['documents']:,} of "
                f"{info['documents_available']:,} documents): seeded sample (eval.sample_seed={info['seed']}), "
                "stratified by document length")
    return f"scored every word: {info['words']:,} words in {info['documents_available']:,} documents"


def _score(scorer, docs: list[str], ec: EvalConfig, k: int, desc: str):
    """Run the scorer on the sampled words; each document is read from its start up to its last sampled word."""
    tokens, targets, chosen, info = sampled_targets(docs, ec)
    keep = [d for d, c in enumerate(chosen) if c]
    want = [[targets[d][i] for i in chosen[d]] for d in keep]
    cut = [tokens[d][:w[-1] + 1] for d, w in zip(keep, want)]
    with tqdm(total=info["words"], unit="word", desc=f"{desc} {scorer.name}", unit_scale=True, leave=False) as bar:
        res = scorer.evaluate_docs(cut, want, k, bar.update)
        elapsed = bar.format_dict.get("elapsed") or 0.0
        info["words_per_s"] = info["words"] / elapsed if elapsed > 0 else None  # over the whole pass, not the last
    return tokens, targets, chosen, keep, res, info


def evaluate_scorer(scorer, docs: list[str], ec: EvalConfig, split: str = "test",
                    sources: list[str] | None = None) -> dict[str, Any]:
    """All natural-text measurements for one model on cleaned documents (every word, or eval.max_words of them):
    overall figures, per-word hits (for the tables by kind, pipeline/evaluation/text_kinds.py) and the hits of the
    context-length curves."""
    k = ec.k
    search = getattr(scorer, "pred", None)
    before = dict(search.search_stats) if search else {}
    tokens, targets, chosen, keep, res, info = _score(scorer, docs, ec, k, "evaluate")
    if search:  # how often the beam had to widen to prove its top k exact, and how often it could not
        info["beam"] = {key: v - before[key] for key, v in search.search_stats.items()}
    hit1, hitk, dist_b, pos_b, nll = [], [], [], [], 0.0
    for r, d in enumerate(keep):
        ws = [tokens[d][j] for j in targets[d]]
        dists = distances(ws)  # over the whole document, sampled or not
        for i in chosen[d]:
            j = targets[d][i]
            top = res["top"][(r, j)]
            hit1.append(bool(top) and top[0] == ws[i])
            hitk.append(ws[i] in top[:k])
            dist_b.append(bucket(dists[i]))
            pos_b.append(position_bucket(i))
            nll -= res["logp"][(r, j)]
    n = len(hit1)
    hits = {"top1": hit1, f"top{k}": hitk}
    out = {**info, "top1": sum(hit1) / n if n else None, f"top{k}": sum(hitk) / n if n else None,
           "word_ppl": math.exp(nll / n) if n else None,
           "by_distance": accuracy_by(dist_b, hits, DISTANCE_BUCKETS),
           "by_position": accuracy_by(pos_b, hits, POSITION_BUCKETS),
           "hits": {name: hit_string(h) for name, h in hits.items()}}
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    full = [res["top"][(r, targets[d][i])] for r, d in enumerate(keep) for i in chosen[d]]
    out["context"] = context_curves(scorer, tokens, targets, words, full, ec)
    return out


def word_perplexity(scorer, docs: list[str], ec: EvalConfig) -> tuple[float, int]:
    """Word perplexity alone (no beam search): what ranks models for the registry's champion alias."""
    *_, res, info = _score(scorer, docs, ec, 0, "perplexity")
    n = len(res["logp"])
    return (math.exp(-sum(res["logp"].values()) / n) if n else math.nan), n


def context_curves(scorer, tokens, targets, words: ScoredWords, full_top: list[list[str]], ec: EvalConfig
                   ) -> dict[str, Any]:
    """Per kind of eval.context_curves: top-1 hits when only the last c words may be read (Khandelwal et al. 2018),
    on every scored word of that kind with at least that many words before it, so every c really truncates; "all"
    is the full-context pass. A truncated context starts mid-document (no `bos`)."""
    out: dict[str, Any] = {}
    for kind, pos in curve_positions(words, ec).items():
        at = [(int(words.doc[p]), int(words.word[p])) for p in pos]
        gold = [tokens[d][targets[d][i]] for d, i in at]
        hits = {}
        for c in curve_lengths(ec, kind):
            ctxs = [tokens[d][targets[d][i - c]:targets[d][i]] for d, i in at]  # from the c-th word back
            tops = scorer.top_words(ctxs, 1, bos=False) if ctxs else []  # the curve is top-1: k = 1 is cheaper
            hits[str(c)] = hit_string(bool(t) and t[0] == g for t, g in zip(tops, gold))
        hits["all"] = hit_string(bool(full_top[p]) and full_top[p][0] == g for p, g in zip(pos, gold))
        out[kind] = {"min_context_words": ec.context_curves[kind], "positions": len(at), "hits": hits}
    return out


def kind_metrics(results: dict[str, Any], name: str, split: str) -> dict[str, float]:
    """One model's figures from the tables by kind: test/prose/top1, test/prose/top1_d17_64, test/verse/numerals_top1,
    test/verse/top1_ctx16, and its paired difference from eval.paired_reference: test/prose/top1_d17_64_minus_rnn_tanh."""
    m: dict[str, float] = {}
    ref, k = results.get("paired_reference"), results["k"]

    def put(key: str, c: dict[str, Any]) -> None:
        if name in c["models"]:
            m[f"{split}/{key}"] = c["models"][name]["acc"]
        if name in c["paired"]:
            m[f"{split}/{key}_minus_{ref}"] = c["paired"][name]["diff"]

    for kind, t in results.get("kinds", {}).items():
        put(f"{kind}/top1", t["top1"])
        put(f"{kind}/top{k}", t[f"top{k}"])
        put(f"{kind}/numerals_top1", t["numerals"])
        for b, c in t["by_distance"].items():
            put(f"{kind}/top1_{metric_suffix(b)}", c)
    for kind, t in results.get("curves", {}).items():
        for c_len, c in t["curve"].items():
            put(f"{kind}/top1_ctx{c_len}", c)
    return m


def flat_metrics(result: dict[str, Any], split: str, k: int) -> dict[str, float]:
    """MLflow-ready names: test/top1, test/top5_d17_64, test/top1_pos65_256, probe/recall_d32 (all words, all
    kinds; kind_metrics adds the figures by kind)."""
    m: dict[str, float] = {f"{split}/words": result["words"]} if "words" in result else {}
    for key in ("top1", f"top{k}", "word_ppl"):
        if result.get(key) is not None:
            m[f"{split}/{key}"] = result[key]
    for table, prefix in (("by_distance", ""), ("by_position", "pos")):
        for b, row in result.get(table, {}).items():
            for key in ("top1", f"top{k}"):
                if row.get(key) is not None:
                    suffix = metric_suffix(b) if not prefix else "pos" + metric_suffix(b)[1:]
                    m[f"{split}/{key}_{suffix}"] = row[key]
    for kind, by_d in result.get("probes", {}).get("kinds", {}).items():
        for dist, row in by_d.items():
            suffix = "" if dist == "all" else f"_d{dist}"
            m[f"probe/{kind}{suffix}"] = row["accuracy"]
            for key in ("balanced", "margin"):
                if row.get(key) is not None:
                    m[f"probe/{kind}_{key}{suffix}"] = row[key]
    return m


def evaluate(scorers: list, docs: list[str], cfg: Config, split: str, probes=None,
             sources: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"split": split, "k": cfg.eval.k, "documents": len(docs), "models": {}}
    for scorer in scorers:
        r = evaluate_scorer(scorer, docs, cfg.eval, split, sources)
        if cfg.eval.keystrokes:
            tokens, targets, chosen, _ = sampled_targets(docs, cfg.eval)
            r["keystrokes"] = run_scorer(scorer, tokens, targets, chosen, cfg.eval.keystroke_slots)
        if probes:
            r["probes"] = probe_mod.summarize(probes, probe_mod.score_probes(scorer, probes))
        r["metrics"] = flat_metrics(r, split, cfg.eval.k)
        results["models"][scorer.name] = r
    add_kind_tables(results, docs, sources, cfg.eval)
    return results


def add_kind_tables(results: dict[str, Any], docs: list[str], sources: list[str] | None, ec: EvalConfig) -> None:
    """results["kinds"] and results["curves"] over every model in `results` (scored on the same words), and each
    model's figures by kind in its metrics."""
    tokens, targets, chosen, _ = sampled_targets(docs, ec)
    words = scored_words(tokens, targets, chosen, sources or [""] * len(docs), ec)
    models = results["models"]
    results["paired_reference"] = ec.paired_reference
    results["kinds"] = kind_tables(words, {m: r["hits"] for m, r in models.items()}, ec)
    results["curves"] = curve_tables(words, {m: r["context"] for m, r in models.items() if r.get("context")}, ec)
    results["keystrokes"] = keystroke_tables(words, {m: r["keystrokes"] for m, r in models.items()
                                                     if r.get("keystrokes")}, ec, ec.paired_reference)
    for name, r in models.items():
        r.setdefault("metrics", {}).update(kind_metrics(results, name, results["split"]))
        r["metrics"].update(keystroke_metrics(results["keystrokes"], name, results["split"]))


# ------------------------------------------------------------------------------------------------------ outputs

def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    from pipeline.evaluation import plots

    out.mkdir(parents=True, exist_ok=True)
    k = results["k"]
    files = [out / "results.json"]
    files[0].write_text(json.dumps(results, indent=1, ensure_ascii=False))
    cols = ("top1", f"top{k}")
    ref = results.get("paired_reference")
    rows = {"summary.csv": [["model", "words", "top1", f"top{k}", "word_ppl", "words_per_s"]],
            "by_distance.csv": [["model", "bucket", "n", *cols]],
            "by_position.csv": [["model", "bucket", "n", *cols]],
            "kinds.csv": [["kind", "table", "bucket", "n", "documents", "model", "top1", "low95", "high95",
                           f"minus_{ref}", "diff_low95", "diff_high95"]],
            "context.csv": [["kind", "context_words", "n", "documents", "model", "top1", "low95", "high95",
                             f"minus_{ref}", "diff_low95", "diff_high95"]],
            "probes.csv": [["model", "kind", "distance", "n", "accuracy", "chance", "low95", "high95", "balanced",
                            "balanced_low95", "balanced_high95", "margin"]],
            "keystrokes.csv": keystroke_rows(results.get("keystrokes", {}), ref)}
    for name, r in results["models"].items():
        rows["summary.csv"].append([name, r["words"], r["top1"], r[f"top{k}"], r["word_ppl"], r["words_per_s"]])
        for table in ("by_distance", "by_position"):
            for b, row in r[table].items():
                rows[f"{table}.csv"].append([name, b, row["n"], *(row[c] for c in cols)])
        for kind, by_d in r.get("probes", {}).get("kinds", {}).items():
            for dist, row in by_d.items():
                rows["probes.csv"].append([name, kind, dist, row["n"], row["accuracy"], row["chance"], row["low"],
                                           row["high"], *(row.get(c) for c in ("balanced", "balanced_low",
                                                                               "balanced_high", "margin"))])

    def cell_rows(prefix: list, c: dict[str, Any]) -> list[list]:
        out_rows = []
        for name, v in c["models"].items():
            p = c["paired"].get(name, {})
            out_rows.append([*prefix, c["n"], c["documents"], name, v["acc"], v["low"], v["high"], p.get("diff"),
                             p.get("low"), p.get("high")])
        return out_rows or [[*prefix, c["n"], c["documents"], "", None, None, None, None, None, None]]

    for kind, t in results.get("kinds", {}).items():
        for table in ("top1", f"top{k}", "numerals"):
            rows["kinds.csv"] += cell_rows([kind, table, "all"], t[table])
        for table in ("by_distance", "by_position"):
            for b, c in t[table].items():
                rows["kinds.csv"] += cell_rows([kind, table, b], c)
        for b, c in t["same_documents"]["by_distance"].items():
            rows["kinds.csv"] += cell_rows([kind, "same_documents", b], c)
    for kind, t in results.get("curves", {}).items():
        for c_len, c in t["curve"].items():
            rows["context.csv"] += cell_rows([kind, c_len], c)
    for fname, table in rows.items():
        with open(out / fname, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(table)
        files.append(out / fname)
    files += plots.write_all(results, out)
    return files


CELL = 24  # characters of a printed table cell: "+100.0 [+100.0, +100.0]" and a space


def acc_text(c: dict[str, Any], name: str) -> str:
    """'12.3 [10.1, 14.8]': a model's accuracy in % with its clustered 95 % interval, '—' under MIN_N words."""
    v = c["models"].get(name)
    return "—" if v is None else f"{100 * v['acc']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def diff_text(c: dict[str, Any], name: str) -> str:
    """'+3.2 [+0.4, +6.1]': a model's paired difference from the reference in points, '—' when not computed."""
    v = c["paired"].get(name)
    return "—" if v is None else f"{100 * v['diff']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"


def pooled_kind(results: dict[str, Any]) -> str | None:
    """The kinds table that holds every scored word: the pooled "all" row, or the only kind."""
    kinds = results.get("kinds", {})
    return "all" if "all" in kinds else next(iter(kinds), None)


def kind_lines(results: dict[str, Any], kind: str, names: list[str] | None = None, positions: bool = True,
               width: int = 22) -> list[str]:
    """One kind's top-1 tables as text: by distance (with the paired differences), the same-documents distance
    table, by position, numerals."""
    t, ref = results["kinds"][kind], results.get("paired_reference")
    names = names or list(results["models"])
    lines = [f"{kind}: {t['documents']:,} documents, {t['words']:,} scored words ({t['top1']['n']:,} with a letter, "
             f"{t['numerals']['n']:,} numerals); top-1 % [95 % document-clustered bootstrap]"]
    tables = [("by distance to the word's last occurrence (words)", t["by_distance"], DISTANCE_BUCKETS)]
    same = t["same_documents"]
    if same["buckets"]:
        tables.append((f"by distance, only the {same['documents']} documents with words in every bucket shown",
                       same["by_distance"], same["buckets"]))
    if positions:
        tables.append(("by words of context before the target", t["by_position"], POSITION_BUCKETS))
    for title, table, order in tables:
        counts = [f"{table[b]['n']} ({table[b]['documents']})" for b in order]
        lines += [f"  {title}", f"  {'':<{width}}" + "".join(f"{b:>{CELL}}" for b in order),
                  f"  {'n (documents)':<{width}}" + "".join(f"{c:>{CELL}}" for c in counts)]
        lines += [f"  {name:<{width}}" + "".join(f"{acc_text(table[b], name):>{CELL}}" for b in order) for name in names]
        lines += [f"  {f'{name} − {ref}':<{width}}" + "".join(f"{diff_text(table[b], name):>{CELL}}" for b in order)
                  for name in names if any(name in table[b]["paired"] for b in order)]
    if t["numerals"]["n"]:
        lines.append(f"  numerals (n={t['numerals']['n']}): " + "; ".join(f"{name} {acc_text(t['numerals'], name)}"
                                                                        for name in names))
    return lines


def format_tables(results: dict[str, Any]) -> str:
    """The summary, then per text kind top-1 by distance and by position, and the context-length curves: n and
    documents per cell, a document-clustered 95 % interval on every accuracy, paired differences from the
    reference model, "—" where fewer than MIN_N targets."""
    k, models = results["k"], results["models"]
    first = next(iter(models.values()))
    pooled = pooled_kind(results)
    p = results["kinds"][pooled] if pooled else None
    lines = [sample_line(first), "",
             f"{'model':<22}{'words':>8}{'top-1 % [95% CI]':>22}{f'top-{k} % [95% CI]':>22}{'word ppl':>12}"]
    for name, r in models.items():
        lines.append(f"{name:<22}{p['top1']['n'] if p else r['words']:>8}"
                     f"{acc_text(p['top1'], name) if p else '—':>22}{acc_text(p[f'top{k}'], name) if p else '—':>22}"
                     f"{r['word_ppl'] or math.nan:>12.1f}")
    lines.append("words with a letter (numerals apart), all kinds; word ppl over every scored word")
    if results.get("keystrokes"):
        lines += [""] + keystroke_lines(results["keystrokes"])
    for kind in results.get("kinds", {}):
        lines += [""] + kind_lines(results, kind)
    for kind, t in results.get("curves", {}).items():
        cs = list(t["curve"])
        lines += ["", f"{kind}: top-1 % when only the last c words are read, on all {t['positions']:,} scored words "
                      f"with >= {t['min_context_words']} words before them, in {t['documents']} documents",
                  f"{'c':<22}" + "".join(f"{c:>{CELL}}" for c in cs)]
        lines += [f"{name:<22}" + "".join(f"{acc_text(t['curve'][c], name):>{CELL}}" for c in cs)
                  for name in models if name in next(iter(t["curve"].values()))["models"]]
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print(format_tables(results))


def eval_documents(cfg: Config, data: str | None) -> tuple[list[str], list[str], str]:
    """The documents to score, their sources, and the name their metrics go under: the config's split, or
    `data-<file stem>` for a corpus file, so evaluations of different files never overwrite each other in MLflow."""
    from pipeline.corpus.prepare import document_sources, documents, file_documents

    if data:
        docs, sources = file_documents(data, cfg)
        return docs, sources, "data-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem)
    return documents(cfg, cfg.eval.split), document_sources(cfg, cfg.eval.split), cfg.eval.split


def _run_id_of_checkpoint(ref: str) -> str | None:
    """A checkpoint under runs/<run>/checkpoints/ belongs to the MLflow run recorded in runs/<run>/mlflow_run_id."""
    f = Path(ref).resolve().parent.parent / "mlflow_run_id"
    return f.read_text().strip() if Path(ref).suffix == ".ckpt" and f.is_file() else None


def build_baseline(cfg, log=print) -> KneserNey:
    """The baseline for a config: eval.ngram_order on the cleaned train split (the same documents the models saw)."""
    from pipeline.corpus.prepare import documents

    lm = KneserNey(cfg.eval.ngram_order).fit(documents(cfg, "train"))
    log(f"{lm.order}-gram Kneser-Ney: {lm.n_tokens} tokens, {len(lm.vocab)} types, built in "
        f"{lm.build_seconds:.1f} s")
    return lm


def build_scorers(cfg: Config, refs: list[str], baseline: bool, mix: str = "net") -> list:
    """A NeuralScorer per model reference and, with mix="mixture", the model's registered mixture beside it (what
    its server suggests from; a model without one is scored alone), then the n-gram when `baseline`."""
    from pipeline.evaluation.mixture import MixtureScorer, mixture_of

    torch.set_grad_enabled(False)
    scorers, names = [], set()
    for ref in refs:
        bundle, info = load_model(ref, cfg)
        name = model_name(bundle, ref)
        while name in names:
            name += "'"
        names.add(name)
        scorer = NeuralScorer(bundle, cfg.eval, name)
        scorer.run_id = info.get("run_id") or _run_id_of_checkpoint(ref)
        scorers.append(scorer)
        mixture = mixture_of(bundle) if mix == "mixture" else None
        if mixture is not None:
            order = mixture.lm.order if mixture.lm is not None else 0
            label = " + ".join([name] + [{"kn": f"{order}-gram", "cache": "cache"}[p]
                                         for p in mixture.weights.parts if p != "net"])
            mixed = MixtureScorer(scorer, mixture.lm, mixture.weights, mixture.candidates, label)
            mixed.run_id, mixed.metric_prefix = scorer.run_id, "mixture/"
            scorers.append(mixed)
    if baseline:
        scorers.append(NgramScorer(build_baseline(cfg)))
    return scorers


def cli(args, cfg: Config) -> int:
    if not args.model and not args.baseline:
        print("error: give at least one --model (checkpoint or export directory) or --baseline")
        return 2
    scorers = build_scorers(cfg, args.model, args.baseline, getattr(args, "mix", "mixture"))
    docs, sources, split = eval_documents(cfg, args.data)
    probes = None
    if cfg.eval.probes:
        path = Path(cfg.eval.probes)
        probes = probe_mod.load_probes(path) if path.exists() else None
    results = evaluate(scorers, docs, cfg, split, probes, sources)
    out = Path(args.out) if args.out else Path(cfg.train.runs_dir) / "eval" / \
        (cfg.name if split == cfg.eval.split else f"{cfg.name}-{split}")
    print_table(results)  # the tables first: a figure that fails to draw must not take them with it
    files = write_outputs(results, out)
    print(f"wrote {len(files)} files to {out}")
    log_to_runs(cfg, scorers, results, out)
    return 0


def baseline_cli(args, cfg: Config) -> int:
    """`python -m pipeline baseline`: the n-gram alone, evaluated like a model (tables, plots, probes)."""
    args.model, args.baseline = [], True
    args.out = args.out or str(Path(cfg.train.runs_dir) / "eval" / f"{cfg.name}-baseline")
    return cli(args, cfg)


def probe_cli(args, cfg: Config) -> int:
    """`python -m pipeline probe`: the probes' command with this module's scorers."""
    return probe_mod.cli(args, cfg, build_scorers)


def log_to_runs(cfg: Config, scorers: list, results: dict[str, Any], out: Path) -> None:
    """Metrics, tables and plots go to each evaluated model's own MLflow run (when it has one)."""
    from pipeline import tracking

    targets = [(s.run_id, s.name, getattr(s, "metric_prefix", "")) for s in scorers if getattr(s, "run_id", None)]
    if not targets:
        return
    client = tracking.open_store(cfg)
    for run_id, name, prefix in targets:
        tracking.log_metrics(client, run_id, {prefix + k: v for k, v in results["models"][name]["metrics"].items()})
        if not prefix:  # one copy of the tables per run
            tracking.log_artifacts(client, run_id, out, f"evaluation/{out.name}")
        print(f"logged {name} to MLflow run {run_id}")
