"""Prepare benchmark (issue 3): load + clean + tokenizer + encode on the config's corpus, cold and warm cache.

    python -m pipeline bench --only prepare --config configs/full.yaml      # the figure the issue asks for
    python -m pipeline bench --only prepare --set data.max_documents=200    # a quick check of the benchmark itself

Cold = a fresh temporary data.cache_dir (the `datasets` cache, tokenizer and streams all rebuilt); warm = the same
call again on that directory (a cache hit). Goal on 2 cores for the full corpus: cold <= 90 s, warm <= 5 s.
"""
from __future__ import annotations

import resource
import shutil
import tempfile
import time
from dataclasses import replace

from pipeline.corpus.prepare import prepare


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run(cfg) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-prepare-")
    try:
        c = cfg.replace(data=replace(cfg.data, cache_dir=tmp))
        t0 = time.perf_counter()
        cold = prepare(c, log=lambda *a: None)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = prepare(c, log=lambda *a: None)
        warm_s = time.perf_counter() - t0
        if not warm.manifest["cached"] or warm.manifest["tokens_sha256"] != cold.manifest["tokens_sha256"]:
            raise RuntimeError("the warm prepare was not a cache hit with identical hashes")
        m = cold.manifest
        words = sum(s["words"] for s in m["splits"].values())
        pieces = sum(s["pieces"] for s in m["splits"].values())
        clean_s, encode_s = m["timing"]["clean_s"], m["timing"]["encode_s"]
        return {
            "corpus": str(cfg.data.train), "documents": {k: s["documents"] for k, s in m["splits"].items()},
            "dropped": {k: s["dropped"] for k, s in m["splits"].items()},
            "words": words, "pieces": pieces, "vocab_size": m["tokenizer"]["vocab_size"],
            "cold_s": round(cold_s, 2), "warm_s": round(warm_s, 3),
            "load_clean_s": clean_s, "tokenizer_s": round(cold_s - clean_s - encode_s, 2), "encode_s": encode_s,
            "clean_words_per_s": round(words / max(clean_s, 1e-9)),  # includes loading the files
            "encode_words_per_s": round(words / max(encode_s, 1e-9)),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "goal": {"cold_s": 90, "warm_s": 5},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
