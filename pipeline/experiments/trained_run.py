"""One configuration trained as one MLflow run, and its evaluation logged to that run: the path that `make run`
(pipeline/job.py) and the experiment's grid (grid_models.py) share.

    train_run      Lightning's MLFlowLogger opens (or, after a kill, reopens) the run; train; log the run's files
                   (config snapshot, tokenizer, checkpoint). A divergence is the run's outcome, not a crash, when the
                   caller records it (the grid goes on; `make run` stops with the message).
    log_evaluation the evaluation's tables, plots and metrics (at the checkpoint's step) into the same run
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def train_run(cfg: Config, prepared, client, tags: dict[str, str] | None = None, log=print,
              record_divergence: bool = False) -> TrainedRun:
    logger = make_logger(cfg, client, prepared, run_dir_for(cfg), tags)
    run_id = logger.run_id
    with tracking.terminated_on_interrupt(client, run_id):
        try:
            result = train(cfg, prepared, logger=logger, log=log)
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
