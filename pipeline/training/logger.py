"""Lightning's MLFlowLogger for training runs: one call for a metric at many steps, a resumed run that continues its
MLflow run without a step logged twice, and the tags that make a run reproducible (hashes, seed, versions)."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from pipeline.config import Config
from pipeline.tracking import (
    RUN_NAME_TAG,
    artifact_location,
    drop_metrics_from,
    ensure_experiment,
    experiment_name,
    git_commit,
    log_corpus_inputs,
    tracking_uri,
)


def run_tags(cfg: Config, prepared) -> dict[str, str]:
    import pytorch_lightning
    import sentencepiece
    import torch

    return {"data_sha256": prepared.data_sha256, "tokenizer_sha256": prepared.tokenizer_sha256,
            "tokens_sha256": prepared.manifest["tokens_sha256"], "git_commit": git_commit(),
            "seed": str(cfg.train.seed), "config_hash": cfg.hash(), "cell": cfg.model.cell,
            "torch": torch.__version__, "lightning": pytorch_lightning.__version__,
            "sentencepiece": sentencepiece.__version__, "mlflow": mlflow.__version__,
            "python": platform.python_version()}


RESUME_CHANGES_TAG = "marathi_nwp.params_changed_on_resume"


class RunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger plus one call for a metric at many steps (one store write for all of them). Every
    write returns once it is in the store (`synchronous`, whatever MLFLOW_ENABLE_ASYNC_LOGGING says): a checkpoint
    written after it may not cover points still queued in another thread (see train.StepMetrics)."""

    def __init__(self, *args, synchronous: bool = True, **kwargs):
        super().__init__(*args, synchronous=synchronous, **kwargs)
        self._synchronous = synchronous

    def _starting_at(self, step: int) -> None:
        """Called with the step of every write, before it is made (see ResumedMLFlowLogger)."""

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        if step is not None:
            self._starting_at(step)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_metric_steps(self, key: str, pairs: list[tuple[int, float]]) -> None:
        from mlflow.entities import Metric

        self._starting_at(pairs[0][0])
        now = int(time.time() * 1000)
        for i in range(0, len(pairs), 1000):  # MLflow takes at most 1000 metrics per batch
            self.experiment.log_batch(self.run_id, metrics=[Metric(key, v, now, s) for s, v in pairs[i:i + 1000]],
                                      synchronous=self._synchronous)


class ResumedMLFlowLogger(RunLogger):
    """The logger of a resumed run. The killed attempt logged steps past its last checkpoint, and the resumed one
    logs those steps again: the first step this process logs is the first one redone, so every point of the run at
    that step or later is stale and is deleted before it is logged anew. The history then reads as one run, with
    no step twice and none missing, whichever checkpoint (last or previous) training resumed from."""

    _truncated = False

    def _starting_at(self, step: int) -> None:
        if not self._truncated:
            self._truncated = True
            drop_metrics_from(self.experiment, self.run_id, step)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """A resumed run keeps the params it started with: MLflow refuses to change one, and a setting outside the
        run's identity (its hash covers data, tokenizer, model and train) may have changed since, e.g. an evaluation
        key. New keys are logged; changed ones are named in a tag instead of failing the resume."""
        from lightning_fabric.utilities.logger import _convert_params, _flatten_dict
        from mlflow.entities import Param

        flat = {k: str(v)[:250] for k, v in _flatten_dict(_convert_params(params)).items()}
        have = self.experiment.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            self.experiment.log_batch(self.run_id, params=new[i:i + 100])
        changed = sorted(k for k, v in flat.items() if k in have and have[k] != v)
        if changed:
            self.experiment.set_tag(self.run_id, RESUME_CHANGES_TAG, ", ".join(changed)[:5000])


def make_logger(cfg: Config, client: MlflowClient, prepared, run_dir: Path, extra_tags: dict[str, str] | None = None):
    """An MLFlowLogger for this run; a resumed training run continues the same MLflow run. `extra_tags` are added to
    the run's tags (e.g. `nested_tags(parent_id)` to show it under a parent run)."""
    id_file = run_dir / "mlflow_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else None
    if run_id is not None:
        try:
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
        except MlflowException:
            run_id = None
    cls = ResumedMLFlowLogger if run_id is not None else RunLogger
    tags = {**run_tags(cfg, prepared), **(extra_tags or {})}
    run_name = tags.pop(RUN_NAME_TAG, cfg.model.cell)  # MLFlowLogger sets the name tag itself
    logger = cls(experiment_name=experiment_name(cfg), run_name=run_name,
                 tracking_uri=tracking_uri(cfg), tags=tags,
                 artifact_location=artifact_location(cfg, experiment_name(cfg)), run_id=run_id)
    ensure_experiment(client, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(logger.run_id)
    log_corpus_inputs(client, logger.run_id, cfg, prepared)
    if run_id is not None:
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    return logger
