"""Server cold start and memory (issue 16): `python -m pipeline serve` from process start to the first /health 200,
and its resident memory then (VmRSS) and after 20 /predict requests (VmHWM, the peak). That the server loads no
Lightning is a test (tests/pipeline/serving/test_app.py), not a figure.

SERVE_STARTUP_BASELINE=<git ref> measures that commit's server in the same run, alternating with this checkout's
(SERVE_STARTUP_REPEATS starts each, default 5), and reports the ratio; the baseline is checked out into a temporary
git worktree and removed afterwards. Model: $MARATHI_NWP_BENCH_MODEL, else the newest checkpoint under runs/.

    SERVE_STARTUP_BASELINE=a82d6d3 MARATHI_NWP_BENCH_MODEL=runs/.../last.ckpt python -m pipeline bench \
        --only serve_startup
"""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from pipeline.bench import running_server
from pipeline.config import PROJECT_ROOT


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def measure(checkout: Path, model: Path) -> dict:
    import httpx

    with running_server(["--model", str(model.resolve())], checkout=checkout) as (server, url):
        started = _status(server.pid)
        for i in range(20):
            httpx.post(url + "/predict", json={"text": f"मी आज {i} वाजता घरी", "k": 5}, timeout=30)
        after = _status(server.pid)
    return {"startup_s": round(server.startup_s, 2), "rss_mib_at_start": started["VmRSS"],
            "peak_rss_mib_after_20_requests": after["VmHWM"]}


def _summary(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}


def run(cfg) -> dict:
    from bench.serve import _model

    model = _model(cfg)
    repeats = int(os.environ.get("SERVE_STARTUP_REPEATS", "5"))
    base_ref = os.environ.get("SERVE_STARTUP_BASELINE")
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"this": PROJECT_ROOT}
        if base_ref:
            subprocess.run(["git", "worktree", "add", "--detach", f"{tmp}/base", base_ref], cwd=PROJECT_ROOT,
                           check=True, capture_output=True)
            checkouts["baseline"] = Path(tmp) / "base"
        try:
            runs: dict[str, list[dict]] = {name: [] for name in checkouts}
            for _ in range(repeats):  # alternate, so drift on a noisy machine hits both alike
                for name, checkout in checkouts.items():
                    runs[name].append(measure(checkout, model))
        finally:
            if base_ref:
                subprocess.run(["git", "worktree", "remove", "--force", f"{tmp}/base"], cwd=PROJECT_ROOT,
                               capture_output=True)
    out = {"model": str(model), "repeats": repeats, "this": _summary(runs["this"])}
    if base_ref:
        out["baseline"] = {"ref": base_ref, **_summary(runs["baseline"])}
        out["ratio_this_to_baseline"] = {k: round(out["this"][k] / out["baseline"][k], 3)
                                         for k in ("startup_s", "rss_mib_at_start", "peak_rss_mib_after_20_requests")}
    return out
