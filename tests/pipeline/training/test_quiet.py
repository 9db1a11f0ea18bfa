"""Quiet output: a command prints the pipeline's own lines; Lightning's tips and notices and third-party deprecation
warnings are silenced, while real warnings (our own, or Lightning's about a config) still show."""
import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import model_checkpoint
from pytorch_lightning.loops.optimization.automatic import Closure
from pytorch_lightning.utilities.rank_zero import WarningCache

from pipeline.cli import LIGHTNING_LOGGERS, main, quiet_libraries
from pipeline.config import load_config
from pipeline.training.train import make_trainer, train
from tests.support import overrides_of

SILENCED = ("💡 Tip", "GPU available", "TPU available", "was configured so 100%",
            "was configured so validation will run at the end", "Restoring states from", "Restored all states",
            "`weights_only` was not set", "LeafSpec", "TF32 acceleration", "exists and is not empty",
            "`training_step` returned `None`")


def silenced_in(texts) -> list[str]:
    texts = list(texts)
    return [s for s in SILENCED for t in texts if s in t]


@pytest.fixture
def lightning_log():
    """The messages of every record a Lightning logger lets through (children's records reach these handlers)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep()
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield messages
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture(autouse=True)
def fresh_warning_caches(monkeypatch):
    """Lightning warns some things once per process (a WarningCache per module or class): give this test its own, so
    whether a warning shows here does not depend on which tests ran before."""
    monkeypatch.setattr(model_checkpoint, "warning_cache", WarningCache())
    monkeypatch.setattr(Closure, "warning_cache", WarningCache())


def test_train_command_prints_its_own_lines_and_real_warnings_only(tiny_config, prepared, tmp_path, capfd, recwarn,
                                                                    lightning_log):
    config = tmp_path / "tiny.yaml"
    config.write_text("{}\n")
    overrides = ["name=tiny", *overrides_of(tiny_config), f"train.runs_dir={tmp_path / 'runs'}", "train.max_steps=6"]
    args = ["train", "--config", str(config), *(a for o in overrides for a in ("--set", o))]
    assert main(args) == 0
    assert main(args) == 0  # the same config again: resumes from last.ckpt (restore notices, non-empty directory)
    out, err = capfd.readouterr()
    warned = [str(w.message) for w in recwarn]
    assert "resuming from" in out and '"best_checkpoint"' in out  # the pipeline's own lines
    assert silenced_in([out, err, *lightning_log, *warned]) == []
    # Live checks: Lightning's notices do reach the handler (why fit stopped is kept), and a real warning still shows:
    # this run stops before any validation, so there is no best checkpoint, and Lightning says so.
    assert any(m.startswith("`Trainer.fit` stopped: `max_steps=6` reached") for m in lightning_log)
    assert any("could not find the monitored key" in w for w in warned)


def test_only_the_named_warnings_are_silenced_and_only_while_a_command_runs(recwarn):
    before = [list(logging.getLogger(n).filters) for n in LIGHTNING_LOGGERS]
    with torch.backends.mkldnn.flags(enabled=False):  # outside: torch's TF32 notice is emitted (the check is live)
        pass
    assert any("TF32 acceleration" in str(w.message) for w in recwarn)
    recwarn.clear()
    with quiet_libraries():
        with torch.backends.mkldnn.flags(enabled=False):
            pass
        warnings.warn("a warning of our own")
        warnings.warn_explicit("store API is deprecated", DeprecationWarning, "sqlalchemy_store.py", 1,
                               module="mlflow.store.tracking.sqlalchemy_store")
        warnings.warn_explicit("our call is deprecated", FutureWarning, "tracking.py", 1, module="pipeline.tracking")
        warnings.warn_explicit("Checkpoint directory /x exists and is not empty.", UserWarning, "train.py", 1,
                               module="pipeline.training.train")  # the same text from our code is not Lightning's
    warned = [str(w.message) for w in recwarn]
    assert warned == ["a warning of our own", "our call is deprecated",
                      "Checkpoint directory /x exists and is not empty."]
    assert [list(logging.getLogger(n).filters) for n in LIGHTNING_LOGGERS] == before  # undone afterwards


@pytest.mark.parametrize("vci,lvb", [(1.0, 1.0), (0.5, 3)])
def test_whole_epoch_limits_go_unannounced_and_keep_their_meaning(tiny_config, tmp_path, lightning_log, vci, lvb):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), f"train.val_check_interval={vci}",
                             f"train.limit_val_batches={lvb}"])
    trainer = make_trainer(cfg, tmp_path)
    assert trainer.val_check_interval == vci and trainer.limit_val_batches == lvb
    assert not any("was configured so" in m for m in lightning_log)


class BlowUp(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            with torch.no_grad():
                pl_module.model.embedding.weight.fill_(float("inf"))


def test_a_recorded_divergence_is_not_reported_as_a_lightning_warning(tiny_config, prepared, tmp_path, recwarn):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), f"train.runs_dir={tmp_path / 'runs'}",
                             "train.max_steps=5", "model.cell=rnn_tanh", "train.allow_divergence=true"])
    with quiet_libraries():
        result = train(cfg, prepared, fresh=True, log=lambda *a: None, extra_callbacks=[BlowUp()])
    assert result.diverged_at == 2
    assert silenced_in(str(w.message) for w in recwarn) == []
