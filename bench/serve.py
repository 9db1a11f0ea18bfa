"""Serving latency and throughput (issue 9): `python -m pipeline bench --only serve`.

The server runs in its own process (`python -m pipeline serve`) on a free loopback port; the load generator runs in
another process (this file run as a script) and talks HTTP over loopback with httpx. Every phase is bounded in both
request count and seconds.

    cold       /predict, the next word after a 50-word context never seen before  -> p50/p99 ms
    extension  /predict on a cached 50-word context plus one more word  -> p50/p99 ms (the context is sent, untimed,
               just before)
    char       one more typed character: completions of a word after a cached 50-word context, the word's first
               character sent untimed, the first two timed            -> p50/p99 ms
    both again with "mix": "net" (the network alone: the reference the mixture's cost is a ratio to)
    explain    /explain on a 50-word context never seen before: every serve.explain network's top-k and the
               influence of each word (one backward pass each)     -> p50/p99 ms
    c1, c8     requests/s with 1 and 8 concurrent clients, each request a fresh 50-word context (the cold worst case)

Model: $MARATHI_NWP_BENCH_MODEL, else the newest checkpoint under train.runs_dir (its mixture, runs/<run>/mixture/,
comes with it); /explain serves the config's serve.explain networks. Then the same phases with the model's int8 twin
(its config says eval.int8; MARATHI_NWP_BENCH_INT8=0 skips it), and the float and int8 networks' top-1 on the same
BENCH_INT8_WORDS test words of the config (3000). Goals: issue 9, p50 <= 20 ms for the cached
one-word extension, p99 <= 100 ms cold (met or not, for the default mixture and for the network alone), zero errors;
issue 17, /explain p99 <= 150 ms; issue 22, one more typed character p50 <= 20 ms with the mixture of the same K as
evaluation (mixture.candidates).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script (the load generator) as well as through `python -m pipeline bench`

from pipeline.bench import running_server  # noqa: E402

N_LATENCY = int(os.environ.get("MARATHI_NWP_BENCH_REQUESTS", "100"))
SECONDS = float(os.environ.get("MARATHI_NWP_BENCH_SECONDS", "5"))
CONTEXT_WORDS = 50


def _contexts(n: int, words: int) -> list[list[str]]:
    """n distinct windows of `words + 1` words from the embedded test split."""
    out, seen = [], set()
    with open(ROOT / "data" / "corpus" / "test.jsonl", encoding="utf-8") as f:
        stream = [w for line in f for w in json.loads(line)["text"].split()]
    for start in range(0, len(stream) - words - 1, 7):
        window = stream[start:start + words + 1]
        key = " ".join(window[:words])
        if key not in seen:
            seen.add(key)
            out.append(window)
        if len(out) == n:
            break
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2) if xs else float("nan")


# ------------------------------------------------------------------------------------------ the load generator
def loadgen(url: str) -> dict:
    import httpx

    n = N_LATENCY
    pool = _contexts(2 * n + 4000, CONTEXT_WORDS)
    if len(pool) < 2 * n + 50:
        raise ValueError(f"the test split has only {len(pool)} distinct {CONTEXT_WORDS}-word windows; lower "
                         "MARATHI_NWP_BENCH_REQUESTS")
    cold_ctx, ext_ctx, rest = pool[:n], pool[n:2 * n], iter(pool[2 * n:])
    lock = threading.Lock()
    errors = {"count": 0, "examples": []}

    def post(client, text: str, mix: str | None = None, path: str = "predict") -> float | None:
        # text ending in a space asks for the next word; one ending in a letter, for completions of that word
        t = time.perf_counter()
        try:
            body = {"text": text, "k": 5, **({"mix": mix} if mix else {})}
            r = client.post(url + path, json=body)
            data = r.json()
            ok = r.status_code == 200 and (len(data["words"]) > 0 if path == "predict" else
                                           all(m["words"] for m in data["models"]))
            detail = f"{r.status_code} {r.text[:100]}"
        except Exception as e:  # noqa: BLE001 - a load generator counts failures, it does not stop on them
            ok, detail = False, f"{type(e).__name__}: {e}"
        ms = (time.perf_counter() - t) * 1000
        if not ok:
            with lock:
                errors["count"] += 1
                if len(errors["examples"]) < 3:
                    errors["examples"].append(detail)
            return None
        return ms

    out: dict = {}
    with httpx.Client(timeout=30) as client:
        post(client, "मी")  # warm-up: first request pays lazy initialisation
        for mix, suffix in ((None, ""), ("net", "_net")):
            deadline = time.monotonic() + 4 * SECONDS
            cold = [ms for w in cold_ctx if time.monotonic() < deadline
                    for ms in [post(client, " ".join(w[:CONTEXT_WORDS]) + " ", mix)] if ms is not None]
            ext, char = [], []
            for w in ext_ctx:
                if time.monotonic() > deadline + 4 * SECONDS:
                    break
                post(client, " ".join(w[:CONTEXT_WORDS]) + " ", mix)  # puts the context in the cache (untimed)
                ms = post(client, " ".join(w[:CONTEXT_WORDS + 1]) + " ", mix)
                if ms is not None:
                    ext.append(ms)
                word = w[CONTEXT_WORDS]
                if len(word) > 1:
                    post(client, " ".join(w[:CONTEXT_WORDS]) + " " + word[:1], mix)  # the first character, untimed
                    ms = post(client, " ".join(w[:CONTEXT_WORDS]) + " " + word[:2], mix)
                    if ms is not None:
                        char.append(ms)
            out["cold_50w" + suffix] = {"n": len(cold), "p50_ms": _pct(cold, 0.5), "p99_ms": _pct(cold, 0.99)}
            out["extension_1w" + suffix] = {"n": len(ext), "p50_ms": _pct(ext, 0.5), "p99_ms": _pct(ext, 0.99)}
            out["char_1c" + suffix] = {"n": len(char), "p50_ms": _pct(char, 0.5), "p99_ms": _pct(char, 0.99)}
        deadline = time.monotonic() + 4 * SECONDS
        explain = [ms for w in ext_ctx if time.monotonic() < deadline  # contexts /predict has seen: not cached here
                   for ms in [post(client, " ".join(w[1:CONTEXT_WORDS + 1]), path="explain")] if ms is not None]
        out["explain_50w"] = {"n": len(explain), "p50_ms": _pct(explain, 0.5), "p99_ms": _pct(explain, 0.99)}

    for conc in (1, 8):
        done, lat = [0], []
        stop = time.monotonic() + SECONDS

        def worker():
            with httpx.Client(timeout=30) as c:
                while time.monotonic() < stop:
                    with lock:
                        w = next(rest, None)
                    if w is None:
                        return
                    ms = post(c, " ".join(w[:CONTEXT_WORDS]) + " ")
                    with lock:
                        done[0] += 1
                        if ms is not None:
                            lat.append(ms)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        out[f"concurrency_{conc}"] = {"requests": done[0], "seconds": round(elapsed, 2),
                                      "requests_per_s": round(done[0] / elapsed, 1),
                                      "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99)}
    out["errors"] = errors["count"]
    out["error_examples"] = errors["examples"]
    return out


# -------------------------------------------------------------------------------------------------- the driver
def _model(cfg) -> Path:
    from pipeline.serving.app import newest_checkpoint

    if os.environ.get("MARATHI_NWP_BENCH_MODEL"):
        return Path(os.environ["MARATHI_NWP_BENCH_MODEL"])
    ckpt = newest_checkpoint(Path(cfg.train.runs_dir))
    if ckpt is None:
        raise ValueError("no checkpoint to benchmark: run `make run`, or set MARATHI_NWP_BENCH_MODEL")
    return ckpt


def int8_twin(bundle, directory: Path) -> Path:
    """The model as an export directory whose config says eval.int8 (what a model trained and evaluated with
    eval.int8: true is registered as), its mixture's files inside it: the server quantizes it as it loads it."""
    import shutil

    from pipeline.checkpoints import ModelBundle, export
    from pipeline.evaluation.mixture import ARPA_FILE, WEIGHTS_FILE
    from pipeline.serving.mixed import mixture_dir

    export(ModelBundle(bundle.model, bundle.tokenizer, {**bundle.config, "eval": {**bundle.config.get("eval", {}),
                                                                                   "int8": True}}, bundle.meta),
           directory)
    for name in (WEIGHTS_FILE, ARPA_FILE):  # only these: an export directory's own config.yaml must not come back
        if (mixture_dir(bundle) / name).is_file():
            shutil.copy2(mixture_dir(bundle) / name, directory / name)
    return directory


def int8_accuracy(bundle, cfg) -> dict:
    """Top-1 of the float and the int8 network on the same seeded sample of the config's test words (BENCH_INT8_WORDS,
    default 3000), with the paired difference (document-clustered interval) and how often their top-1s agree."""
    import dataclasses

    import numpy as np
    import torch

    from bench.time_to_quality import sample_hits
    from pipeline.corpus.prepare import document_sources, documents
    from pipeline.evaluation import NeuralScorer
    from pipeline.evaluation.bootstrap import clustered_cell

    ec = dataclasses.replace(cfg.eval, max_words=int(os.environ.get("BENCH_INT8_WORDS", "3000")))
    docs, sources = documents(cfg, "test"), document_sources(cfg, "test")
    hits = {}
    for name, int8 in (("float", False), ("int8", True)):
        with torch.no_grad():
            words, hits[name] = sample_hits(NeuralScorer(bundle, dataclasses.replace(ec, int8=int8), name), docs, ec,
                                            sources)
    keep = ~words.numeral
    c = clustered_cell(words.cluster[keep].tolist(), {n: h[keep] for n, h in hits.items()}, ec.bootstrap_replicates,
                       ec.bootstrap_seed, "int8", "float")
    return {"words": int(keep.sum()), "documents": int(len(np.unique(words.doc[keep]))), "test": str(cfg.data.test),
            "top1": c["models"], "int8_minus_float": c["paired"]["int8"],
            "same_top1_hit": float(np.mean(hits["float"][keep] == hits["int8"][keep]))}


def run(cfg) -> dict:
    import tempfile

    from pipeline.tracking import load_bundle

    model = _model(cfg)
    figures = serve_phases(model)
    if os.environ.get("MARATHI_NWP_BENCH_INT8", "1") != "0":
        bundle, _ = load_bundle(str(model), cfg)  # a checkpoint, an export or a registry reference, as the server
        with tempfile.TemporaryDirectory() as tmp:
            q = serve_phases(int8_twin(bundle, Path(tmp) / "int8"))
        figures["int8"] = {k: q[k] for k in ("cold_50w", "extension_1w", "char_1c", "cold_50w_net", "extension_1w_net",
                                             "char_1c_net", "errors")}
        figures["int8"]["p50_ratio_to_float"] = {k: round(q[k]["p50_ms"] / figures[k]["p50_ms"], 2)
                                                 for k in ("extension_1w", "char_1c", "cold_50w")}
        figures["int8"]["goals"] = {"extension_p50_le_20ms": q["extension_1w"]["p50_ms"] <= 20,
                                    "char_p50_le_20ms": q["char_1c"]["p50_ms"] <= 20,
                                    "cold_p99_le_100ms": q["cold_50w"]["p99_ms"] <= 100}
        figures["int8"]["accuracy"] = int8_accuracy(bundle, cfg)
    return figures


def serve_phases(model: Path) -> dict:
    """Every phase against `python -m pipeline serve --model MODEL`, and the goals."""
    import httpx

    with running_server(["--model", str(model)]) as (_, base):
        url = base + "/"
        gen = subprocess.run([sys.executable, __file__, "--loadgen", url], cwd=ROOT, capture_output=True, text=True,
                             timeout=60 + 12 * SECONDS + N_LATENCY * 2)
        if gen.returncode != 0:
            raise RuntimeError(f"the load generator failed: {gen.stderr[-2000:]}")
        figures = json.loads(gen.stdout.strip().splitlines()[-1])
        health = httpx.get(url + "health", timeout=5).json()
    figures.update(model=str(model), served_as=health.get("model"), explained=health.get("explain"),
                   cache=health.get("cache"), context_words=CONTEXT_WORDS, seconds_per_throughput_phase=SECONDS,
                   mixture_cost={"cold_p50_ratio": round(figures["cold_50w"]["p50_ms"]
                                                         / figures["cold_50w_net"]["p50_ms"], 2),
                                 "extension_p50_ratio": round(figures["extension_1w"]["p50_ms"]
                                                              / figures["extension_1w_net"]["p50_ms"], 2),
                                 "char_p50_ratio": round(figures["char_1c"]["p50_ms"]
                                                         / figures["char_1c_net"]["p50_ms"], 2)},
                   goals={"extension_p50_le_20ms": figures["extension_1w"]["p50_ms"] <= 20,
                          "char_p50_le_20ms": figures["char_1c"]["p50_ms"] <= 20,
                          "cold_p99_le_100ms": figures["cold_50w"]["p99_ms"] <= 100,
                          "net_extension_p50_le_20ms": figures["extension_1w_net"]["p50_ms"] <= 20,
                          "net_cold_p99_le_100ms": figures["cold_50w_net"]["p99_ms"] <= 100,
                          "explain_p99_le_150ms": figures["explain_50w"]["p99_ms"] <= 150,
                          "zero_errors": figures["errors"] == 0})
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--loadgen":
        print(json.dumps(loadgen(sys.argv[2]), ensure_ascii=False))
    else:
        from pipeline.config import load_config

        print(json.dumps(run(load_config(None, [])), indent=1, ensure_ascii=False))
