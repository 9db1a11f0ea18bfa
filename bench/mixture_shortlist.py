"""The mixture's network shortlist (issue 22): `python -m pipeline bench --only mixture_shortlist --config
configs/experiment.yaml`.

Until issue 29, mixture.mixed_top took the network's best K words from one beam of width K instead of the
proven-exact top K (the mixture's ranking is now exact: mixture_search.mixed_search). This measures what that
traded, on the same rows (the states before $BENCH_ROWS seeded test words, default 1000): search milliseconds per row
both ways, how often the proof would have widened the beam, and how far the two shortlists
agree (the whole set of K, and the network's top 5 in order).

Model: $MARATHI_NWP_BENCH_MODEL, else the newest checkpoint with a mixture under train.runs_dir (mixture_speed's).
"""
from __future__ import annotations

import dataclasses
import os
import time


def run(cfg) -> dict:
    import torch

    with torch.no_grad():
        return _run(cfg)


def _run(cfg) -> dict:
    import torch

    from bench.mixture_speed import _model
    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import NeuralScorer, mixture_of, sampled_documents, sampled_targets
    from pipeline.evaluation.predict import WordPredictor, cat_states, select_state

    rows_wanted = int(os.environ.get("BENCH_ROWS", "1000"))
    model = _model(cfg)
    bundle = load_local(model)
    m = mixture_of(bundle)
    k = m.candidates if m is not None else cfg.mixture.candidates
    ec = dataclasses.replace(cfg.eval, max_words=rows_wanted)
    docs = documents(cfg, "test")
    tokens, targets, chosen, _ = sampled_targets(docs, ec)
    _, cut, want = sampled_documents(tokens, targets, chosen)
    states, lps = [], []
    for batch in NeuralScorer(bundle, ec, "net").read(cut, want, logp=False):
        states.append(batch.state)
        lps.append(batch.next_lp)
    state, lp = cat_states(states), torch.cat(lps)
    n = lp.size(0)

    def search(prove: bool) -> tuple[list, float, dict]:
        pred = WordPredictor(bundle.model, bundle.tokenizer, ec.beam_width, ec.max_word_pieces, ec.max_beam_width)
        out, t0 = [], time.perf_counter()
        for a in range(0, n, ec.batch_size):
            idx = torch.arange(a, min(n, a + ec.batch_size))
            out += pred.top_words(select_state(state, idx), lp.index_select(0, idx), k, prove=prove)
        return out, (time.perf_counter() - t0) * 1000 / n, pred.search_stats

    exact, exact_ms, exact_stats = search(True)
    beam, beam_ms, beam_stats = search(False)
    words = [({w for w, _ in a}, {w for w, _ in b}) for a, b in zip(exact, beam)]
    return {"model": str(model), "rows": n, "k": k, "beam_width": max(ec.beam_width, k),
            "exact_ms_per_row": round(exact_ms, 2), "one_beam_ms_per_row": round(beam_ms, 2),
            "speedup": round(exact_ms / beam_ms, 1), "exact_search": exact_stats,
            "rows_the_one_beam_could_not_prove": beam_stats["not_exact"],
            "same_set_of_k": round(sum(a == b for a, b in words) / n, 3),
            "overlap_of_k": round(sum(len(a & b) for a, b in words) / (k * n), 3),
            "same_top5_in_order": round(sum([w for w, _ in a[:5]] == [w for w, _ in b[:5]]
                                            for a, b in zip(exact, beam)) / n, 3)}
