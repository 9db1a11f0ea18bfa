"""Training (DESIGN §6): every cell learns, clipping is applied, divergence is clear, resume after SIGKILL, DDP."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from pipeline.config import PROJECT_ROOT, load_config
from pipeline.corpus.windows import BPTTWindows, batchify
from pipeline.training.train import AtomicCheckpointIO, DivergenceError, train
from tests.support import overrides_of


def cfg_with(tiny_config, tmp_path, *overrides):
    return load_config(None, ["name=tiny", *overrides_of(tiny_config), f"train.runs_dir={tmp_path / 'runs'}",
                              *overrides])


class Losses(pl.Callback):
    def __init__(self):
        self.losses, self.attached = [], 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs))
        state = pl_module.state if isinstance(pl_module.state, tuple) else (pl_module.state,)
        self.attached += sum(s.grad_fn is not None or s.requires_grad for s in state)  # truncated BPTT: detached


@pytest.mark.parametrize("cell,init", [("rnn_tanh", "default"), ("rnn_relu", "default"), ("lstm", "default"),
                                       ("gru", "default"), ("rnn_relu", "identity")])
def test_every_cell_trains_and_lowers_the_loss(tiny_config, prepared, tmp_path, cell, init):
    cfg = cfg_with(tiny_config, tmp_path, f"model.cell={cell}", f"model.init={init}", "train.max_steps=60",
                   "train.lr=0.01", "train.limit_val_batches=5", "train.gradient_clip_val=1.0")
    rec = Losses()
    result = train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[rec])
    assert len(rec.losses) == 60 and rec.attached == 0
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-10:]) / 10
    assert last < first - 0.5, (cell, first, last)
    assert result.diverged_at is None and Path(result.last_checkpoint).exists()
    ckpt = torch.load(result.last_checkpoint, weights_only=True)  # plain data only
    assert ckpt["hyper_parameters"]["model_args"]["cell"] == cell
    assert ckpt["hyper_parameters"]["data_sha256"] == prepared.data_sha256


class AppliedGradNorm(pl.Callback):
    """Wraps the optimizer's closure: what the closure leaves in .grad (after Lightning clips) is what step() uses."""

    def __init__(self):
        self.applied, self.logged = [], []

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        step = opt.step
        params = [p for g in opt.param_groups for p in g["params"]]

        def wrapped(closure=None, **kw):
            def inner():
                out = closure()
                grads = [p.grad.detach().double() for p in params if p.grad is not None]
                self.applied.append(float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in grads]))))
                self.logged.append(trainer.lightning_module.grad_norms[-1][1])  # this step's, as recorded
                return out
            return step(closure=inner, **kw)

        opt.step = wrapped


def test_clipping_bounds_the_applied_norm_and_logs_the_pre_clip_norm(tiny_config, prepared, tmp_path):
    c = 0.05
    cfg = cfg_with(tiny_config, tmp_path, "train.max_steps=15", f"train.gradient_clip_val={c}", "model.cell=gru")
    rec = AppliedGradNorm()
    train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[rec])
    assert len(rec.applied) == 15
    assert all(a <= c * (1 + 1e-6) for a in rec.applied), rec.applied
    assert all(g > c for g in rec.logged)  # pre-clip norms are larger: clipping did something
    assert max(rec.logged) > 2 * max(rec.applied)
    # without clipping the applied norm is the logged one (the test above can fail)
    rec2 = AppliedGradNorm()
    train(cfg_with(tiny_config, tmp_path, "train.max_steps=3", "train.gradient_clip_val=null", "model.cell=gru"),
          prepared, fresh=True, log=lambda *a: None, extra_callbacks=[rec2])
    assert all(abs(a - g) <= 1e-4 * g for a, g in zip(rec2.applied, rec2.logged))
    assert max(rec2.applied) > c


class BlowUp(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 4:
            with torch.no_grad():
                pl_module.model.embedding.weight.fill_(float("inf"))


def test_non_finite_loss_raises_clear_error(tiny_config, prepared, tmp_path):
    cfg = cfg_with(tiny_config, tmp_path, "train.max_steps=10", "model.cell=rnn_tanh")
    with pytest.raises(DivergenceError) as e:
        train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[BlowUp()])
    msg = str(e.value)
    assert "step 4" in msg and "last finite loss" in msg and "gradient norm" in msg
    assert "nan" not in msg.split("last finite loss")[1].split(",")[0]
    assert "gradient_clip_val" in msg and "train.lr" in msg and "allow_divergence" in msg


def test_allow_divergence_ends_cleanly_and_records_the_step(tiny_config, prepared, tmp_path):
    cfg = cfg_with(tiny_config, tmp_path, "train.max_steps=10", "model.cell=rnn_tanh", "train.allow_divergence=true")
    result = train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[BlowUp()])
    assert result.diverged_at == 4


# ---------------------------------------------------------------------------------------------- resume after kill

def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from pytorch_lightning.plugins import TorchCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_half_way(self, checkpoint, p, storage_options=None):  # what a SIGKILL during the write leaves
        Path(p).write_bytes(b"PK\x03\x04 truncated")
        raise OSError("killed while writing")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_half_way)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _train_cmd(tiny_config, runs: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "train"]
    for o in [*overrides_of(tiny_config), f"train.runs_dir={runs}", "model.cell=lstm", "model.dropout=0.3",
              "train.checkpoint_every_n_steps=7", "data.variable_bptt=true", *extra]:
        cmd += ["--set", o]
    return cmd


def _final(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_config, prepared, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(_train_cmd(tiny_config, tmp_path / "ref"), cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected = float(_final(ref.stdout)["best_val_loss"])

    runs = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tiny_config, runs), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while not list(runs.glob("*/checkpoints/last.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # a few more steps past the checkpoint: those are the ones lost
    assert proc.poll() is None, "the run finished before it could be killed; make the fixture epoch longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = next(runs.glob("*/checkpoints/last.ckpt"))
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step_at_kill

    resumed = subprocess.run(_train_cmd(tiny_config, runs), cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    got = float(_final(resumed.stdout)["best_val_loss"])
    assert abs(got - expected) <= 1e-4, (got, expected, step_at_kill)


# ---------------------------------------------------------------------------------------------------------- DDP

DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import pytorch_lightning as pl
    from pipeline.config import load_config
    from pipeline.corpus.prepare import prepare
    from pipeline.training.train import train

    out = sys.argv[1]
    overrides = json.loads(sys.argv[2])

    class FirstBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx < 2:
                with open(f"{out}/rank{trainer.global_rank}-{batch_idx}.json", "w") as f:
                    json.dump({"x": batch[0].tolist(), "world": trainer.world_size}, f)

    cfg = load_config(None, overrides)
    train(cfg, prepare(cfg, log=lambda *a: None), fresh=True, extra_callbacks=[FirstBatch()])
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_see_different_contiguous_data(tiny_config, prepared, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    overrides = ["name=tiny", *overrides_of(tiny_config), f"train.runs_dir={tmp_path / 'runs'}",
                 "train.max_steps=3", "train.limit_val_batches=2",
                 "train.trainer={accelerator: cpu, devices: 2, strategy: ddp}"]
    r = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(overrides)], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    b = {(rank, i): json.loads((tmp_path / f"rank{rank}-{i}.json").read_text()) for rank in (0, 1) for i in (0, 1)}
    assert b[0, 0]["world"] == 2
    x00, x10 = torch.tensor(b[0, 0]["x"]), torch.tensor(b[1, 0]["x"])
    assert not torch.equal(x00, x10)
    # each rank reads its own contiguous half of the stream, cut into columns
    stream = torch.from_numpy(prepared.stream("train").astype("int64"))
    half = len(stream) // 2
    bs, bptt = tiny_config.data.batch_size, tiny_config.data.bptt
    for rank in (0, 1):
        part = stream[rank * half:(rank + 1) * half]
        cols = part[: (len(part) // bs) * bs].view(bs, -1)
        assert torch.equal(torch.tensor(b[rank, 0]["x"]), cols[:, :bptt])
        assert torch.equal(torch.tensor(b[rank, 1]["x"]), cols[:, bptt:2 * bptt])  # in order: window 2 follows 1


def test_trained_checkpoint_fixture_carries_what_resume_needs(trained_checkpoint, prepared):
    ckpt = torch.load(trained_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 40
    hp = ckpt["hyper_parameters"]
    assert hp["tokenizer_sha256"] == prepared.tokenizer_sha256 and hp["config"]["train"]["seed"] == 1234
    assert ckpt["carried_state"] is not None and "torch_rng_state" in ckpt
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["position"] > 0


@pytest.mark.parametrize("cell,output", [("lstm", "adaptive"), ("gru", "softmax")])
def test_bf16_mixed_precision_trains_and_its_checkpoint_loads(tiny_config, prepared, tmp_path, cell, output):
    """The GPU recipe's precision flag (`train.trainer.precision: bf16-mixed`), exercised on CPU autocast: carried
    state, both output layers and the checkpoint survive it. (No GPU in CI; the accelerator flag itself is Lightning's.)"""
    from pipeline.checkpoints import load_checkpoint

    cfg = cfg_with(tiny_config, tmp_path, f"model.cell={cell}", f"model.output={output}", "model.tie_weights=false",
                   "model.cutoffs=[100, 300]", "train.max_steps=12", "train.limit_val_batches=2",
                   "train.val_check_interval=6", 'train.trainer={"precision": "bf16-mixed"}')
    losses = Losses()
    result = train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[losses])
    assert len(losses.losses) == 12 and all(torch.isfinite(torch.tensor(losses.losses)))
    # validation under autocast agrees with the best weights re-scored in plain fp32 on the same two windows
    best = load_checkpoint(result.best_checkpoint).model.eval()
    windows = BPTTWindows(batchify(prepared.stream("validation"), cfg.data.eval_batch_size), cfg.data.bptt)
    state, total, count = None, 0.0, 0
    with torch.no_grad():
        for (x, y), _ in zip(windows, range(2)):
            features, state = best(x, state)
            total, count = total + float(best.loss(features, y)) * y.numel(), count + y.numel()
    assert result.best_val_loss == pytest.approx(total / count, abs=0.05)  # bf16 rounding, not a different loss
    carried = torch.load(result.last_checkpoint, weights_only=True)["carried_state"]
    assert all(t.dtype == torch.float32 for t in (carried if isinstance(carried, list) else [carried]))
    bundle = load_checkpoint(result.last_checkpoint)
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())  # mixed: fp32 master weights
    lp = bundle.model.log_probs(bundle.model(torch.tensor([[5, 6, 7]]))[0])
    assert torch.allclose(lp.exp().sum(-1), torch.ones(1, 3), atol=1e-4)


def test_validation_interval_longer_than_an_epoch_is_a_config_error(tiny_config, prepared, tmp_path):
    from pipeline.config import ConfigError

    cfg = cfg_with(tiny_config, tmp_path, "train.val_check_interval=100000")
    with pytest.raises(ConfigError, match=r"train.val_check_interval=100000 is more than the \d+ training windows in "
                                          r"one epoch .* set it to at most \d+"):
        train(cfg, prepared, fresh=True, log=lambda *a: None)
