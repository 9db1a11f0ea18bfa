"""One configuration trained as one MLflow run, and its evaluation logged to that run: the path that `make run`
(pipeline/job.py) and the experiment's grid (grid_models.py) share.

    train_run      Lightning's MLFlowLogger opens (or, after a kill, reopens) the run; train; log the run's files
                   (config snapshot, tokenizer, checkpoint). A divergence is the run's outcome, not a crash, when the
                   caller records it (the grid goes on; `make run` stops with the message).
    ValidationCheckpoints  the weights and validation loss at every validation (the experiment's matched-quality
                   pair is chosen among them)
    log_evaluation the evaluation's tables, plots and metrics (at the checkpoint's step) into the same run
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from pipeline import tracking
from pipeline.config import Config
from pipeline.evaluation import write_outputs
from pipeline.training.logger import make_logger
from pipeline.training.train import DivergenceError, TrainResult, run_dir_for, train


@dataclass
class TrainedRun:
    run_id: str
    result: TrainResult | None  # None: training diverged (`failure` says how)
    failure: str | None = None

    @property
    def checkpoint(self) -> str:
        """The best checkpoint, or the last one when validation never ran."""
        r = self.result
        return r.best_checkpoint if Path(r.best_checkpoint).is_file() else r.last_checkpoint


class ValidationCheckpoints(pl.Callback):
    """After every validation: the weights (checkpoints/val-<step>.ckpt, no optimizer state) and the loss, in
    checkpoints/validations.json. A resumed run validates again from where it was killed, so entries at or after a
    step are replaced when that step comes round again."""

    def __init__(self, directory: Path, pieces_per_step: int):
        self.dir, self.pieces_per_step = Path(directory), pieces_per_step

    @property
    def history_file(self) -> Path:
        return self.dir / "validations.json"

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.history_file.read_text()) if self.history_file.is_file() else []

    def on_validation_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None:
            return
        step = trainer.global_step
        path = self.dir / f"val-{step:07d}.ckpt"
        trainer.save_checkpoint(path, weights_only=True)
        kept = [h for h in self.history() if h["step"] < step]
        kept.append({"step": step, "pieces": step * self.pieces_per_step, "val_loss": float(loss),
                     "checkpoint": str(path)})
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history_file.write_text(json.dumps(kept, indent=1))


def train_run(cfg: Config, prepared, client, tags: dict[str, str] | None = None, log=print,
              record_divergence: bool = False, extra_callbacks=()) -> TrainedRun:
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg), tags)
    run_id = logger.run_id
    with tracking.terminated_on_interrupt(client, run_id):
        try:
            result = train(cfg, prepared, logger=logger, log=log, extra_callbacks=extra_callbacks)
        except DivergenceError as e:
            if not record_divergence:
                raise
            log(f"    {cfg.name} failed: {e}")
            return TrainedRun(run_id, None, str(e))
        run = TrainedRun(run_id, result)
        tracking.log_run_files(client, run_id, cfg, prepared, run.checkpoint)
    if result.diverged_at is not None:  # a blow-up the config asked to record (the exploding-gradient demo)
        tracking.set_tags(client, run_id, {"diverged_at_step": str(result.diverged_at)})
    return run


def log_evaluation(client, run_id: str, results: dict[str, Any], out: Path, metrics: dict[str, float], step: int,
                   artifact_path: str, files: dict[str, Any] | None = None) -> None:
    """write_outputs(results) and the JSON `files` into `out`, all of it logged as the run's `artifact_path`, and
    `metrics` at `step` (the checkpoint's global step)."""
    write_outputs(results, out)
    for name, blob in (files or {}).items():
        (out / name).write_text(json.dumps(blob, indent=1, ensure_ascii=False, allow_nan=True, default=str))
    tracking.log_metrics(client, run_id, metrics, step=step)
    tracking.log_artifacts(client, run_id, out, artifact_path)
