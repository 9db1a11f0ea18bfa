"""Reliability under repetition (issue 10): `make stress` → bench/stress.json.

    kill_resume   a tiny training run with an MLflow logger (as `make run` does) is SIGKILLed at N seeded random
                  points and resumed each time; its final weights and MLflow metric history must equal those of an
                  uninterrupted run (max |Δw| <= 1e-6, every step logged exactly once).
    serve_load    `python -m pipeline serve` in its own process; a load generator in another process (this file run
                  as `python bench/stress.py load ...`) fires /predict at a fixed concurrency over loopback for a
                  bounded time and request count; zero 5xx, server RSS (from /proc/<pid>/status) sampled, p99.

The test suite runs short variants of both (tests/pipeline/test_reliability.py, marked slow).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# One training attempt: the same calls as pipeline/job.py (open_store → make_logger → terminated_on_interrupt(train)).
TRAIN_SCRIPT = r"""
import json, sys
from pathlib import Path
import pytorch_lightning as pl
import torch
torch.set_num_threads(1)
from pipeline import tracking
from pipeline.training.logger import make_logger
from pipeline.config import load_config
from pipeline.corpus.prepare import prepare
from pipeline.training.train import run_dir_for, train

class Progress(pl.Callback):
    # publishes the global step so the harness can kill at a chosen step (tmp + rename: never read half-written)
    def _publish(self, trainer):
        tmp = Path(sys.argv[2] + ".tmp")
        tmp.write_text(str(trainer.global_step))
        tmp.replace(sys.argv[2])

    def on_train_start(self, trainer, pl_module):
        self._publish(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._publish(trainer)

cfg = load_config(None, json.loads(sys.argv[1]))
client = tracking.open_store(cfg)
prepared = prepare(cfg, log=lambda *a: None)
logger = make_logger(cfg, client, prepared, run_dir_for(cfg))
with tracking.terminated_on_interrupt(client, logger.run_id):
    result = train(cfg, prepared, logger=logger, extra_callbacks=[Progress()])
client.set_terminated(logger.run_id, "FINISHED")
print(json.dumps({"run_id": logger.run_id, "last": result.last_checkpoint, "resumed_from": result.resumed_from,
                  "seconds": result.seconds}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def training_overrides(base: list[str], work: Path) -> list[str]:
    return [*base, f"train.runs_dir={work / 'runs'}", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
            f"tracking.artifact_location={work / 'artifacts'}", "train.num_threads=1"]


def train_attempt(overrides: list[str], marker: Path, timeout: float = 170) -> subprocess.Popen:
    marker.unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, json.dumps(overrides), str(marker)], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 170) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"training attempt failed (rc {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _weights(path: str):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def metric_history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics.keys()
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _step(marker: Path) -> int:
    try:
        return int(marker.read_text())
    except (OSError, ValueError):
        return -1


def kill_resume(base_overrides: list[str], work: Path, kills: int, seed: int) -> dict[str, Any]:
    """Reference run, then the same run SIGKILLed at `kills` seeded random training steps and resumed each time.

    The kill steps are drawn without replacement from the run's steps and sorted, so every kill lands inside training
    (each resume restarts from a checkpoint at or before the previous kill step); a seeded random delay of up to one
    step after the target step is reached puts kills at different moments within a step: forward, backward,
    optimizer, checkpoint writing, metric logging."""
    import torch

    rng = random.Random(seed)
    max_steps = next(int(o.split("=", 1)[1]) for o in base_overrides if o.startswith("train.max_steps="))
    ref_dir, killed_dir = work / "reference", work / "killed"
    t0 = time.perf_counter()
    ref_dir.mkdir(parents=True, exist_ok=True)
    killed_dir.mkdir(parents=True, exist_ok=True)
    ref = _finish(train_attempt(training_overrides(base_overrides, ref_dir), ref_dir / "started"))
    step_s = ref["seconds"] / max_steps
    overrides = training_overrides(base_overrides, killed_dir)
    marker = killed_dir / "started"
    targets = sorted(rng.sample(range(2, max_steps - 1), kills))
    steps_at_kill = []
    for target in targets:
        proc = train_attempt(overrides, marker)
        while _step(marker) < target and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, step_s))
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended before the kill at step {target}: {proc.communicate()[1][-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        steps_at_kill.append(_step(marker))
    final = _finish(train_attempt(overrides, marker))
    a, b = _weights(ref["last"]), _weights(final["last"])
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    h_ref = metric_history(f"sqlite:///{ref_dir / 'mlflow.db'}", ref["run_id"])
    h_got = metric_history(f"sqlite:///{killed_dir / 'mlflow.db'}", final["run_id"])
    from collections import Counter

    # the same steps, each as often as in the reference ("epoch" is logged twice at a validation step by Lightning)
    duplicated, missing = {}, {}
    for k in set(h_ref) | set(h_got):
        ref_steps, got_steps = Counter(s for s, _ in h_ref.get(k, [])), Counter(s for s, _ in h_got.get(k, []))
        if got_steps - ref_steps:
            duplicated[k] = sorted((got_steps - ref_steps).elements())
        if ref_steps - got_steps:
            missing[k] = sorted((ref_steps - got_steps).elements())
    timing = ("train/tokens_per_s",)  # wall-clock figures differ between any two runs
    value_diff = max((abs(x[1] - y[1]) for k in h_ref if k not in timing
                      for x, y in zip(h_ref[k], h_got.get(k, []))), default=0.0)
    return {"kills": len(steps_at_kill), "attempts": len(targets) + 1, "kill_targets": targets,
            "steps_at_kill": steps_at_kill,
            "final_step": torch.load(final["last"], weights_only=True)["global_step"],
            "max_abs_weight_diff": max_diff, "metric_keys": sorted(h_ref),
            "train_loss_points": len(h_got.get("train/loss", [])), "reference_train_loss_points":
            len(h_ref.get("train/loss", [])), "duplicated_steps": duplicated, "missing_steps": missing,
            "max_abs_metric_diff": value_diff, "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------------------------------- server load

def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _texts(n: int) -> list[str]:
    """n distinct Marathi prefixes (1-40 words) from the embedded test split: many cache misses and extensions."""
    with open(ROOT / "data" / "corpus" / "test.jsonl", encoding="utf-8") as f:
        stream = [w for line in f for w in json.loads(line)["text"].split()]
    rng = random.Random(0)
    out = []
    for _ in range(n):
        start = rng.randrange(0, len(stream) - 41)
        out.append(" ".join(stream[start:start + rng.randint(1, 40)]))
    return out


def load_generator(url: str, seconds: float, concurrency: int, max_requests: int, out: str) -> None:
    """Runs in its own process: `concurrency` threads, each with its own HTTP connection, until time or count."""
    import httpx

    texts = _texts(2000)
    lat: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    sent = [0]

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            j = i
            while time.perf_counter() < deadline:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                t = time.perf_counter()
                try:
                    code = str(c.post("/predict", json={"text": texts[j % len(texts)], "k": 5}).status_code)
                except httpx.HTTPError as e:
                    code = type(e).__name__
                with lock:
                    lat.append(time.perf_counter() - t)
                    codes[code] = codes.get(code, 0) + 1
                j += concurrency

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps({"latencies": lat, "codes": codes, "seconds": time.perf_counter() - t0}))


def serve_load(model: str, config: str, seconds: float, concurrency: int, max_requests: int = 200_000,
               extra_sets: tuple[str, ...] = ()) -> dict[str, Any]:
    from pipeline.bench import running_server

    args = ["--config", config, "--model", model]
    for s in extra_sets:
        args += ["--set", s]
    with running_server(args, env=_env(), timeout=90) as (server, url):
        rss_start = _rss_kib(server.pid)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "load.json"
            gen = subprocess.Popen([sys.executable, __file__, "load", url, str(seconds), str(concurrency),
                                    str(max_requests), str(out)], cwd=ROOT, env=_env())
            samples = []
            while gen.poll() is None:
                samples.append(_rss_kib(server.pid))
                time.sleep(0.5)
            gen.wait(timeout=seconds + 120)
            res = json.loads(out.read_text())
        samples.append(_rss_kib(server.pid))
        alive = server.poll() is None
    lat = sorted(res["latencies"])
    q = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None  # noqa: E731
    n5xx = sum(v for k, v in res["codes"].items() if k.startswith("5"))
    half = samples[len(samples) // 2:]
    return {"seconds": round(res["seconds"], 1), "concurrency": concurrency, "requests": len(lat),
            "requests_per_s": round(len(lat) / res["seconds"], 1), "codes": res["codes"], "errors_5xx": n5xx,
            "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": q(1.0), "server_alive": alive,
            "rss_kib_start": rss_start, "rss_kib_peak": max(samples),
            "rss_kib_second_half_growth": max(half) - min(half), "rss_samples": len(samples)}


def run(cfg=None, kills: int = 5, seconds: float = 60, concurrency: int = 32) -> dict[str, Any]:
    """Both stress phases on the embedded-corpus slice the tests use (tiny sizes, 1 thread)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = tiny_overrides(work)
        kr = kill_resume(base, work / "kr", kills, seed=10)
        serve = serve_load(str(next((work / "kr" / "reference").glob("runs/*/checkpoints/last.ckpt"))),
                           "configs/default.yaml", seconds, concurrency)
    return {"kill_resume": kr, "serve_load": serve}


def tiny_overrides(work: Path) -> list[str]:
    """The test suite's tiny config (tests/support.py), on a slice of the embedded corpus written under `work`."""
    sys.path.insert(0, str(ROOT))
    from tests.support import sample_texts, write_jsonl
    from tests.support import tiny_overrides as base

    corpus = work / "corpus"
    for split, n in (("train", 400), ("validation", 60), ("test", 60)):
        write_jsonl(corpus / f"{split}.jsonl", sample_texts(split, n))
    return ["name=tiny", *base(corpus, work), "model.cell=lstm", "model.dropout=0.3", "train.checkpoint_every_n_steps=7",
            "data.variable_bptt=true", "train.val_check_interval=40", "train.limit_val_batches=10",
            "train.max_steps=120"]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        url, seconds, conc, max_req, out = sys.argv[2:7]
        load_generator(url, float(seconds), int(conc), int(max_req), out)
        return 0
    kills = int(os.environ.get("STRESS_KILLS", "5"))
    seconds = float(os.environ.get("STRESS_SECONDS", "60"))
    conc = int(os.environ.get("STRESS_CONCURRENCY", "32"))
    res = run(kills=kills, seconds=seconds, concurrency=conc)
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    res["machine"] = {"cpus": os.cpu_count()}
    (ROOT / "bench" / "stress.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    kr, sl = res["kill_resume"], res["serve_load"]
    ok = (kr["max_abs_weight_diff"] <= 1e-6 and not kr["duplicated_steps"] and not kr["missing_steps"]
          and sl["errors_5xx"] == 0 and sl["server_alive"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
