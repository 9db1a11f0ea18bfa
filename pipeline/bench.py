"""Benchmarks (`make bench` / `python -m pipeline bench [--only NAME]`): each appends one record to
bench/results.json with the command, the commit and the machine, so figures can be traced and compared.

A benchmark is a function `(cfg) -> dict` in `bench/<name>.py` named `run`; figures are compared against a reference
measured in the same run (a ratio), because this machine is noisy.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline.config import PROJECT_ROOT
from pipeline.tracking import git_commit, machine

RESULTS = PROJECT_ROOT / "bench" / "results.json"


def record(name: str, figures: dict[str, Any], command: str | None = None,
           load_at_start: float | None = None) -> dict[str, Any]:
    """Append one benchmark record to bench/results.json (a JSON list) and return it. `load_at_start`: the 1-minute
    load average when the benchmark started (a timing taken beside another job says so)."""
    entry = {"name": name, "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
             "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "machine": {**machine(), **({"load_1min_at_start": round(load_at_start, 2)}
                                         if load_at_start is not None else {})}, "figures": figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    results.append(entry)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, RESULTS)
    return entry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(args: list[str], env: dict[str, str] | None = None, timeout: float = 120,
                   checkout: Path = PROJECT_ROOT) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m pipeline serve ARGS` (the code of `checkout`) on a free loopback port, for benchmarks that drive it
    from another process: yields (process, base URL) once /health answers, with the seconds from process start to
    that first 200 as `process.startup_s`, and stops the server afterwards."""
    import httpx

    port = free_port()
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", *args, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited ({server.returncode}): {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    server.startup_s = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")
            time.sleep(0.05)
        yield server, url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def bare_tokens_per_s(model, windows, warmup: int, steps: int, lr: float, weight_decay: float = 0.0,
                      clip: float | None = 0.25) -> float:
    """Training tokens/s of a bare PyTorch loop (carried, detached state; AdamW; norm clipping) over `windows`
    ((x, y) pairs), timing `steps` steps after `warmup`: the reference the pipeline is compared with."""
    from models.recurrent import detach_state

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    state, t0, tokens = None, None, 0
    for i, (x, y) in enumerate(windows):
        if i == warmup:
            t0 = time.perf_counter()
        if i >= warmup + steps:
            break
        features, state = model(x, state)
        loss = model.loss(features, y)
        state = detach_state(state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        float(loss.detach())  # the pipeline reads the loss every step too (logging)
        tokens += y.numel() if i >= warmup else 0
    return tokens / (time.perf_counter() - t0)


def available() -> list[str]:
    # `stress` is not a benchmark of this suite: `make stress` runs it and it writes bench/stress.json
    return sorted(p.stem for p in (PROJECT_ROOT / "bench").glob("*.py") if not p.stem.startswith("_")
                  and p.stem != "stress")


def cli(args, cfg) -> int:
    names = args.only or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"error: unknown benchmark {unknown[0]!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    for name in names:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", PROJECT_ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        load = os.getloadavg()[0]
        figures = module.run(cfg)
        knobs = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                         if k.startswith(("BENCH_", "TTQ_", "SERVE_STARTUP_", "MARATHI_NWP_BENCH_")))
        entry = record(name, figures, f"{knobs} python -m pipeline bench --only {name} --config {args.config}".strip(),
                       load)
        print(json.dumps(entry, indent=1, ensure_ascii=False))
    return 0
