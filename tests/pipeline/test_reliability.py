"""Reliability (issue 10): kills and resume with MLflow history, damaged checkpoints and caches, tracking store
faults, server under load, and the security basics. The long variants run under `make stress` (bench/stress.py)."""
from __future__ import annotations

import builtins
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from bench import stress
from pipeline import tracking
from pipeline.checkpoints import CheckpointError, load_checkpoint
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.corpus.prepare import prepare
from pipeline.training.logger import ResumedMLFlowLogger, make_logger
from pipeline.training.train import AtomicCheckpointIO, run_dir_for, train
from tests.support import overrides_of, tiny_overrides


def _cfg(tiny_config, work: Path, *extra: str):
    return load_config(None, ["name=tiny", *overrides_of(tiny_config), f"train.runs_dir={work / 'runs'}",
                              f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                              f"tracking.artifact_location={work / 'artifacts'}", *extra])


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ------------------------------------------------------------------------------------------- training survives kills

@pytest.mark.slow
def test_training_survives_repeated_sigkills_with_same_weights_and_mlflow_history(tiny_corpus, tmp_path):
    """SIGKILL at 2 seeded random moments (5 under `make stress`); resumed each time through the same calls as
    `make run`; the weights and every metric's step history equal the uninterrupted run's."""
    base = ["name=tiny", *tiny_overrides(tiny_corpus, tmp_path), "model.cell=lstm", "model.dropout=0.3",
            "train.checkpoint_every_n_steps=7", "data.variable_bptt=true", "train.val_check_interval=40",
            "train.limit_val_batches=10", "train.max_steps=90"]
    r = stress.kill_resume(base, tmp_path / "kr", kills=2, seed=10)
    assert r["kills"] == 2, r
    assert r["max_abs_weight_diff"] <= 1e-6, r
    assert r["duplicated_steps"] == {} and r["missing_steps"] == {}, r
    assert r["train_loss_points"] == r["reference_train_loss_points"] > 50
    assert r["max_abs_metric_diff"] <= 1e-6, r


class _Killed(BaseException):
    """Stands for SIGKILL: raised right after a checkpoint file is in place, nothing the step does after it runs."""


STEP_METRICS = ("train/loss", "train/clipped_share", "train/tokens_per_s", "train/grad_norm", "epoch")


@pytest.mark.slow
def test_a_kill_right_after_a_checkpoint_write_loses_no_logged_step(tiny_config, prepared, tmp_path, monkeypatch):
    """The moment `make stress` caught: the checkpoint at step 10 covers steps 0-9, so all of their metrics must be in
    the store before the file is (Lightning writes a step's metrics only after on_train_batch_end, where the
    checkpoint is saved). Resumed from it, the history holds every step once."""
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=14", "train.checkpoint_every_n_steps=5")
    client = tracking.open_store(cfg)
    save = AtomicCheckpointIO.save_checkpoint

    def save_then_die(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        if checkpoint["global_step"] == 10:
            raise _Killed

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save_then_die)
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg))
    with pytest.raises(_Killed):
        train(cfg, prepared, logger=logger, log=lambda *a: None)
    covered = torch.load(run_dir_for(cfg) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert covered == 10
    for key in STEP_METRICS:
        steps = {m.step for m in client.get_metric_history(logger.run_id, key)}
        assert steps >= set(range(covered)), (key, sorted(set(range(covered)) - steps))
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg))
    assert train(cfg, prepared, logger=logger, log=lambda *a: None).resumed_from is not None
    for key in STEP_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(logger.run_id, key))
        if key == "epoch":  # Lightning logs it again with the validation metrics of a step
            steps = sorted(set(steps))
        assert steps == list(range(14)), (key, steps)


@pytest.mark.slow
def test_resumed_logger_drops_points_logged_after_the_checkpoint(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    for step in range(10):
        client.log_metric(run_id, "train/loss", 10.0 - step, step=step)
        client.log_metric(run_id, "lr", 0.1, step=step)
    assert tracking.drop_metrics_from(client, run_id, 6) == 8
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(6))
    latest = client.get_run(run_id).data.metrics
    assert latest["train/loss"] == 10.0 - 5  # the run's latest value follows the truncated history
    # the resumed logger truncates once, at the first step it logs, then logs normally
    logger = ResumedMLFlowLogger(experiment_name="x", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                          run_id=run_id)
    logger.log_metrics({"train/loss": 42.0}, step=3)
    logger.log_metrics({"train/loss": 41.0}, step=4)
    hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    assert hist == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 42.0), (4, 41.0)]
    assert [m.step for m in client.get_metric_history(run_id, "lr")] == [0, 1, 2]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_params_and_names_the_ones_that_changed(tmp_path):
    """A setting outside the run's identity (e.g. an evaluation key) may change between a run and its resume: MLflow
    refuses to change a param, so the resume keeps the old value, logs new keys and tags the changed ones."""
    from pipeline.training.logger import RESUME_CHANGES_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    client.log_param(run_id, "config/eval/k", "5")
    client.log_param(run_id, "config/train/lr", "0.003")
    logger = ResumedMLFlowLogger(experiment_name="x", tracking_uri=uri, run_id=run_id)
    logger.log_hyperparams({"config": {"eval": {"k": 10, "keystroke_slots": 3}, "train": {"lr": 0.003}}})
    run = client.get_run(run_id).data
    assert run.params["config/eval/k"] == "5" and run.params["config/eval/keystroke_slots"] == "3"
    assert run.tags[RESUME_CHANGES_TAG] == "config/eval/k"


def test_last_checkpoint_kept_as_previous_atomically(tmp_path):
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    io_.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    io_.save_checkpoint({"step": 3}, tmp_path / "best.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 2}
    assert torch.load(tmp_path / "previous.ckpt", weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt", "previous.ckpt"]


def test_truncated_checkpoint_detected_and_training_falls_back_to_previous(tiny_config, prepared, tmp_path):
    ref = train(_cfg(tiny_config, tmp_path / "ref", "train.max_steps=24"), prepared, fresh=True, log=lambda *a: None)
    cfg = _cfg(tiny_config, tmp_path / "dmg", "train.max_steps=24")

    def crash():
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[_AtStep(13, crash)])
    last = run_dir_for(cfg) / "checkpoints" / "last.ckpt"
    previous = last.with_name("previous.ckpt")
    assert torch.load(previous, weights_only=True)["global_step"] < torch.load(last, weights_only=True)["global_step"]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated on disk
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        load_checkpoint(last)
    messages: list[str] = []
    again = train(cfg, prepared, log=messages.append)
    assert again.resumed_from == str(previous)
    assert any("cannot resume from" in m and "truncated or corrupted" in m for m in messages), messages
    assert last.with_name("last.ckpt.corrupt").exists()
    assert _max_diff(_weights(ref.last_checkpoint), _weights(again.last_checkpoint)) <= 1e-6


# ------------------------------------------------------------------------------------------ caches survive kills

@pytest.mark.slow
def test_prepare_killed_midway_then_rerun_gives_the_same_hashes(tiny_corpus, prepared, tmp_path):
    def cmd(cache: Path) -> list[str]:
        out = [sys.executable, "-m", "pipeline", "prepare"]
        for o in ["name=tiny", *tiny_overrides(tiny_corpus, tmp_path), f"data.cache_dir={cache}"]:
            out += ["--set", o]
        return out

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    cache = tmp_path / "cache"
    for delay in (1.5, 3.0, 4.5, 6.0):  # import, cleaning, tokenizer training, encoding
        proc = subprocess.Popen(cmd(cache), cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd(cache), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    manifests = [json.loads(p.read_text()) for p in cache.glob("prepared/*/manifest.json")]
    assert len(manifests) == 1
    m = manifests[0]
    assert m["data_sha256"] == prepared.data_sha256
    assert m["tokenizer"]["sha256"] == prepared.tokenizer_sha256
    assert m["tokens_sha256"] == prepared.manifest["tokens_sha256"]
    assert not list(cache.glob("prepared/.*tmp*"))


def test_flipped_byte_in_spm_model_makes_prepare_rebuild(tiny_corpus, tmp_path):
    cfg = load_config(None, ["name=tiny", *tiny_overrides(tiny_corpus, tmp_path), "data.max_documents=80",
                             "tokenizer.vocab_size=500"])
    first = prepare(cfg, log=lambda *a: None)
    spm_model = first.tokenizer_path
    blob = bytearray(spm_model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    spm_model.write_bytes(bytes(blob))
    npy = first.directory / "train.npy"
    raw = bytearray(npy.read_bytes())
    raw[-3] ^= 0x01  # a flipped bit in the token ids, not a re-saved array
    npy.write_bytes(bytes(raw))
    messages: list[str] = []
    again = prepare(cfg, log=messages.append)
    assert again.manifest["cached"] is False
    assert any("rebuilding" in m for m in messages) and any("retraining" in m for m in messages), messages
    assert again.tokenizer_sha256 == first.tokenizer_sha256
    assert again.manifest["tokens_sha256"] == first.manifest["tokens_sha256"]


# ------------------------------------------------------------------------------------------- tracking store faults

class _AtStep(pl.Callback):
    def __init__(self, step: int, action):
        self.step, self.action, self.fired = step, action, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step and not self.fired:
            self.fired = True
            self.action()


LOCK_HOLDER = ("import sqlite3, sys, time, pathlib\n"
               "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
               "c.execute('BEGIN EXCLUSIVE')\n"
               "pathlib.Path(sys.argv[2]).write_text('locked')\n"
               "time.sleep(float(sys.argv[3]))\n")


def _run_with_fault(cfg, prepared, fault) -> str:
    client = tracking.open_store(cfg)
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg))
    with pytest.raises(tracking.TrackingError) as err:
        with tracking.terminated_on_interrupt(client, logger.run_id):
            train(cfg, prepared, logger=logger, log=lambda *a: None, extra_callbacks=[_AtStep(9, fault)])
    return str(err.value)


def _resume_cleanly(cfg, prepared) -> None:
    client = tracking.open_store(cfg)
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg))
    result = train(cfg, prepared, logger=logger, log=lambda *a: None)
    assert result.resumed_from is not None
    steps = [m.step for m in client.get_metric_history(logger.run_id, "train/loss")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps) and steps[-1] == cfg.train.max_steps - 1


@pytest.mark.slow
def test_store_locked_by_another_process_fails_clearly_and_resumes(tiny_config, prepared, tmp_path):
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=20")
    db, flag = tmp_path / "mlflow.db", tmp_path / "locked"
    holder: list[subprocess.Popen] = []

    def lock():  # MLflow waits 20 s (its sqlite busy_timeout) before it gives up; hold the lock a little longer
        holder.append(subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db), str(flag), "23"]))
        while not flag.exists():
            time.sleep(0.02)

    msg = _run_with_fault(cfg, prepared, lock)
    holder[0].wait(timeout=60)
    assert str(db) in msg and "lock" in msg and "resume" in msg, msg
    ckpt = run_dir_for(cfg) / "checkpoints" / "last.ckpt"
    load_checkpoint(ckpt)  # intact
    _resume_cleanly(cfg, prepared)


@pytest.mark.slow
def test_store_no_longer_writable_mid_run_fails_clearly_and_resumes(tiny_config, prepared, tmp_path):
    """chmod does not stop root; what does stop every writer is sqlite being unable to create its rollback journal
    next to the database: a directory where `mlflow.db-journal` must go fails each write transaction."""
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=20")
    journal = tmp_path / "mlflow.db-journal"
    msg = _run_with_fault(cfg, prepared, lambda: journal.mkdir())
    assert str(tmp_path / "mlflow.db") in msg and "no longer writable" in msg, msg
    load_checkpoint(run_dir_for(cfg) / "checkpoints" / "last.ckpt")  # intact
    journal.rmdir()
    _resume_cleanly(cfg, prepared)


# ------------------------------------------------------------------------------------------------- server under load

@pytest.mark.slow
def test_server_under_short_load_no_5xx_and_bounded_memory(trained_checkpoint):
    r = stress.serve_load(str(trained_checkpoint), "configs/default.yaml", seconds=5, concurrency=8)
    assert r["server_alive"] and r["requests"] > 20, r
    assert r["errors_5xx"] == 0 and set(r["codes"]) == {"200"}, r
    bound_kib = load_config(None).serve.cache_megabytes * 1024
    assert r["rss_kib_peak"] - r["rss_kib_start"] <= bound_kib + 64 * 1024, r  # cache bound + allocator slack


# ----------------------------------------------------------------------------------------------- security basics

class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_args": {}}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="not plain weights"):
        load_checkpoint(path)
    assert not _Evil.marker.exists()


def test_server_binds_loopback_by_default():
    from pipeline.serving.app import is_loopback

    assert load_config(None).serve.host == "127.0.0.1" and is_loopback(load_config(None).serve.host)


def test_no_request_reaches_the_filesystem(trained_checkpoint, monkeypatch):
    from fastapi.testclient import TestClient

    from pipeline.serving.app import create_app

    bundle = load_checkpoint(trained_checkpoint)
    cfg = load_config(None)
    client = TestClient(create_app(bundle, cfg.serve, {"uri": str(trained_checkpoint), "name": "t"}))
    client.get("/health")  # warm up: anything opened while starting is the app's own business
    opened: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(real):
        def wrapper(file, *a, **k):
            opened.append(str(file))
            return real(file, *a, **k)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    for text in ("../../../../etc/passwd", "/etc/passwd", "file:///etc/shadow", str(trained_checkpoint)):
        assert client.post("/predict", json={"text": text, "k": 3}).status_code == 200
        assert client.post("/predict/batch", json={"texts": [text]}).status_code == 200
    for path in ("/../../etc/passwd", "/static/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"):
        assert client.get(path).status_code == 404
    assert opened == []
