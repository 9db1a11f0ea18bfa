"""MLflow (DESIGN §9): the MLflow store, runs, the registry and loading a model by
reference. It imports neither Lightning nor the serving code: the pyfunc model is logged from its file's path.

Lightning's `MLFlowLogger` (pipeline/training/logger.py) records params and per-step metrics; the client logs the rest with simple artifact names
(MLflow rejects names like `model-epoch=00-val_loss=0.78`, and `MLFlowLogger(log_model=...)` has had open bugs, so
checkpoints are logged explicitly). The trained model is logged as a pyfunc (weights, tokenizer and config travel as
artifacts), registered as `marathi-nwp-<cell>`, and the alias `champion` moves only to a better model.

Every MLflow call of the project lives in this one module (STYLE.md habit 11), which is why it runs past 400 lines:
the store, runs and their tags, artifacts, the pyfunc, the registry and loading a model by reference.
"""
from __future__ import annotations

import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import CheckpointError, ModelBundle, export, load_local
from pipeline.config import PROJECT_ROOT, Config

PYFUNC_ENTRY = PROJECT_ROOT / "pipeline" / "serving" / "mlflow_model.py"  # MLflow's "models from code" file
CHAMPION = "champion"
SCORE_TAG = "val_word_ppl"  # lower is better; the champion alias follows it
MODEL_URI_TAG = "marathi_nwp.model_uri"


class NotRegistered(CheckpointError):
    """The registry has no such model (or alias): the one case where the server may fall back to a local run."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and the fix."""


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        # bench/results.json is what benchmarks append to, reports/ what the experiment writes: a record written
        # there does not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results.json", ":!reports"], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tracking_uri(cfg: Config) -> str:
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def artifact_location(cfg: Config, experiment: str) -> str | None:
    """Local stores keep artifacts under mlartifacts/; a tracking server decides for itself."""
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(cfg.tracking.artifact_location) / experiment).as_uri()


def open_store(cfg: Config) -> MlflowClient:
    """Check the store works before any training time is spent."""
    uri = tracking_uri(cfg)
    m = re.match(r"sqlite:///(.+)", uri)
    if m:
        db = Path(m.group(1))
        where = db if db.exists() else db.parent
        if not where.is_dir() and not db.exists() or not os.access(where, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: {where} is not writable; fix its permissions or set "
                                "MLFLOW_TRACKING_URI (or tracking.tracking_uri) to a writable store")
    if artifact_location(cfg, "x"):
        art = Path(cfg.tracking.artifact_location)
        parent = art if art.exists() else art.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise TrackingError(f"MLflow artifacts directory {art} is not writable; fix its permissions or set "
                                "tracking.artifact_location")
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    except (MlflowException, sqlite3.Error, OSError, Exception) as e:  # noqa: BLE001 - any failure means unusable
        raise TrackingError(f"cannot open the MLflow store {uri} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}); check MLFLOW_TRACKING_URI / "
                            "tracking.tracking_uri (e.g. sqlite:///mlflow.db or http://127.0.0.1:5000)") from None
    mlflow.set_tracking_uri(uri)
    return client


def experiment_name(cfg: Config) -> str:
    return cfg.tracking.experiment or cfg.name


# MLflow 3 opens an experiment without this tag in its GenAI (tracing) view, which hides the training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, cfg: Config) -> str:
    name = experiment_name(cfg)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=artifact_location(cfg, name), tags=EXPERIMENT_KIND)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def log_corpus_inputs(client: MlflowClient, run_id: str, cfg: Config, prepared) -> None:
    """The corpus splits as the run's dataset inputs (the runs table's Dataset column): one per split, named after
    its file or hub dataset, with the SHA-256 of the prepared split's token stream as its digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from pipeline.corpus.prepare import sha256_file

    inputs = []
    for split in ("train", "validation", "test"):
        stream = Path(prepared.directory) / f"{split}.npy"
        path = getattr(cfg.data, split)
        if not stream.exists() or (path is None and cfg.data.hub is None):
            continue
        with warnings.catch_warnings():  # a local path matches MLflow's local source under two registrations
            warnings.simplefilter("ignore", UserWarning)
            source = HuggingFaceDatasetSource(path=cfg.data.hub, config_name=cfg.data.hub_config, split=split) \
                if cfg.data.hub else resolve_dataset_source(path)
        name = f"{cfg.data.hub}:{split}" if cfg.data.hub else Path(path).name
        # the run input MLflow builds from a dataset, made from its public to_dict()
        d = MetaDataset(source, name=name, digest=sha256_file(stream)[:16]).to_dict()
        entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"])
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", split)]))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def drop_metrics_from(client: MlflowClient, run_id: str, step: int) -> int:
    """Delete the run's metric points at `step` or later (they are about to be logged again) and recompute the
    run's latest values from what remains; returns the number of points deleted.

    MLflow has no delete-metric API, so this goes through the SQL store's own session and ORM models (the schema
    MLflow migrates); a store without them (a tracking server over HTTP) is left as it is, and 0 is returned.
    """
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        return 0
    with store.ManagedSessionMaker(read_only=False) as session:
        stale = session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id, SqlMetric.step >= step)
        keys = {k for (k,) in stale.with_entities(SqlMetric.key).distinct()}
        deleted = stale.delete(synchronize_session=False)
        for key in keys:  # latest_metrics must follow: the newest remaining point per key, or none
            session.query(SqlLatestMetric).filter(SqlLatestMetric.run_uuid == run_id,
                                                  SqlLatestMetric.key == key).delete(synchronize_session=False)
            newest = (session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id, SqlMetric.key == key)
                      .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc()).first())
            if newest is not None:
                session.add(SqlLatestMetric(run_uuid=run_id, key=key, value=newest.value, timestamp=newest.timestamp,
                                            step=newest.step, is_nan=newest.is_nan))
    return deleted


# ------------------------------------------------------------------------------------- parent and nested runs

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI shows the run under its parent
RUN_NAME_TAG = "mlflow.runName"


def nested_tags(parent_run_id: str, name: str | None = None, **tags: str) -> dict[str, str]:
    """Tags that put a run under `parent_run_id` (pass them to `make_logger(extra_tags=...)`)."""
    return {PARENT_TAG: parent_run_id, **({RUN_NAME_TAG: name} if name else {}), **tags}


def find_runs(client: MlflowClient, cfg: Config, tags: dict[str, str], status: str | None = None) -> list:
    """Runs of the config's experiment carrying all `tags` (and `status`, e.g. FINISHED), newest first."""
    exp = client.get_experiment_by_name(experiment_name(cfg))
    if exp is None:
        return []
    parts = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if status:
        parts.append(f"attributes.status = '{status}'")
    return client.search_runs([exp.experiment_id], filter_string=" and ".join(parts),
                              order_by=["attributes.start_time DESC"])


def open_parent_run(client: MlflowClient, cfg: Config, name: str, tags: dict[str, str]) -> tuple[str, bool]:
    """The newest run with `tags` (set RUNNING again), or a new one; returns (run_id, reused)."""
    found = find_runs(client, cfg, tags)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id, True
    run = client.create_run(ensure_experiment(client, cfg), run_name=name, tags=tags)
    return run.info.run_id, False


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Params once per run; a value already logged with the same content is skipped (MLflow rejects changes)."""
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])


def finish_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(run_id, status)


def latest_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    return dict(client.get_run(run_id).data.metrics)


def log_file(client: MlflowClient, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client.log_artifact(run_id, str(path), artifact_path)


def download_artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """A run's artifact file or directory copied under `dst`, or None when the run does not have it."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None


@contextmanager
def terminated_on_interrupt(client: MlflowClient, run_id: str) -> Iterator[None]:
    """SIGTERM/Ctrl-C mark the run KILLED instead of leaving it RUNNING."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        _set_terminated(client, run_id, "KILLED")
        raise
    except BaseException as e:
        _set_terminated(client, run_id, "FAILED")
        if _is_store_fault(e):
            raise store_fault(client.tracking_uri, e) from e
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_store_fault(e: BaseException) -> bool:
    import sqlalchemy.exc

    return isinstance(e, (MlflowException, sqlalchemy.exc.OperationalError, sqlite3.Error))


def store_fault(uri: str, e: BaseException) -> TrackingError:
    """The store failed mid-run (locked by another process, no longer writable, gone): say which and what to do.
    Checkpoints are written atomically apart from the store, so the run resumes once the store works again."""
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return TrackingError(f"the MLflow store {uri} failed during the run ({type(e).__name__}: {detail}); another "
                         "process may hold a lock on it (close it) or it is no longer writable (fix its directory, or "
                         "set MLFLOW_TRACKING_URI / tracking.tracking_uri to a writable store). The checkpoints under "
                         "runs/ are intact: run the same command again to resume.")


def _set_terminated(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001 - the store itself may be what failed; the original error is the one to show
        pass


def log_run_files(client: MlflowClient, run_id: str, cfg: Config, prepared, checkpoint: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "config.yaml"
        snap.write_text(cfg.to_yaml(), encoding="utf-8")
        client.log_artifact(run_id, str(snap))
    client.log_artifact(run_id, str(prepared.tokenizer_path), "tokenizer")
    if checkpoint and Path(checkpoint).exists():
        with tempfile.TemporaryDirectory() as tmp:
            link = Path(tmp) / "best.ckpt"  # a simple name: MLflow rejects '=' in artifact paths
            link.symlink_to(Path(checkpoint).resolve())
            client.log_artifact(run_id, str(link), "checkpoints")


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    clean = [Metric(re.sub(r"[^a-zA-Z0-9_/. -]+", "_", k), float(v), now, step)
             for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))]
    for i in range(0, len(clean), 500):
        client.log_batch(run_id, metrics=clean[i:i + 500])


def log_artifacts(client: MlflowClient, run_id: str, directory: Path, artifact_path: str | None = None) -> None:
    client.log_artifacts(run_id, str(directory), artifact_path)


def log_pyfunc(bundle: ModelBundle, run_id: str, mixture_dir: Path | None = None) -> str:
    """Log the bundle as a pyfunc model of the run, with the files of its fitted mixture (mixture_dir: mixture.json
    and the ARPA n-gram) beside the weights; returns its model URI."""
    import pandas as pd
    from mlflow.models import infer_signature

    example = ["आज हवामान खूप"]
    out = pd.DataFrame({"text": example, "words": [["खूपच"]], "probs": [[0.1]], "completing": ["खूप"],
                        "model": ["lstm + 4-gram + cache"]})
    # `k`, `mix` and `mode` must be declared, or MLflow drops them
    signature = infer_signature(example, out, params={"k": 5, "mix": "auto", "mode": "auto"})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export(bundle, Path(tmp) / "model")
        for f in sorted(mixture_dir.iterdir()) if mixture_dir is not None else []:
            shutil.copy2(f, model_dir / f.name)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_ENTRY), artifacts={"model_dir": str(model_dir)},
                signature=signature, input_example=example,
                code_paths=[str(PROJECT_ROOT / "pipeline"), str(PROJECT_ROOT / "models")],
                pip_requirements=_requirements())
    MlflowClient().set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "sentencepiece", "mlflow", "pyyaml",
                                              "numpy", "pandas")]


def register(client: MlflowClient, model_uri: str, cell: str, score: float, run_id: str, name: str | None = None
             ) -> dict[str, Any]:
    """Register a new version (under `name`, default marathi-nwp-<cell>); it takes `champion` only if its validation
    word perplexity beats the champion's."""
    name = name or f"marathi-nwp-{cell}"
    mv = mlflow.register_model(model_uri, name, tags={SCORE_TAG: f"{score:.6g}", "run_id": run_id})
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
        champ_score = float(champ.tags.get(SCORE_TAG, "inf"))
    except MlflowException:
        champ, champ_score = None, math.inf
    promoted = math.isfinite(score) and (champ is None or score < champ_score)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    return {"name": name, "version": mv.version, "promoted": promoted,
            "champion_version": mv.version if promoted else champ.version if champ else None,
            "champion_score": score if promoted else champ_score}


def load_bundle(ref: str, cfg: Config | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """A model from an MLflow run id, `models:/NAME@ALIAS`, `models:/NAME/VERSION`, a checkpoint or an export dir.
    MLflow references are looked up in the config's store (or $MLFLOW_TRACKING_URI / ./mlflow.db)."""
    info: dict[str, Any] = {"uri": ref, "name": None, "version": None, "run_id": None}
    if Path(ref).exists():
        bundle = load_local(ref)
        p = Path(ref)
        info["name"] = p.parent.parent.name if p.suffix == ".ckpt" else p.name  # runs/<run>/checkpoints/x.ckpt
        return bundle, info
    uri = tracking_uri(cfg) if cfg is not None else os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    uri = ref
    try:
        m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", ref)
        if m:
            name, alias, version = m.groups()
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
            info.update(name=name, version=mv.version, run_id=mv.run_id)
        elif re.fullmatch(r"[0-9a-f]{32}", ref):
            run = client.get_run(ref)
            uri = run.data.tags.get(MODEL_URI_TAG)
            if not uri:
                raise CheckpointError(f"MLflow run {ref} has no logged model; pass a run made by `make run`")
            info.update(name=run.data.tags.get("mlflow.runName"), run_id=ref)
        else:
            raise CheckpointError(f"{ref!r} is neither a file, an MLflow run id, nor a models:/NAME@ALIAS or "
                                  "models:/NAME/VERSION URI")
        pyfunc = mlflow.pyfunc.load_model(uri)
    except MlflowException as e:
        missing = e.error_code == "RESOURCE_DOES_NOT_EXIST" or (e.error_code == "INVALID_PARAMETER_VALUE"
                                                                and "alias" in str(e).lower())
        if missing and ref.startswith("models:/"):
            raise NotRegistered(f"cannot load {ref} from the MLflow store {mlflow.get_tracking_uri()} (not "
                                "registered); run `make run` to train and register a model, or pass a checkpoint "
                                "path") from None
        raise CheckpointError(f"cannot load {ref} from the MLflow store {mlflow.get_tracking_uri()} "
                              f"({str(e).splitlines()[0][:160]}); run `make run` to train and register a model, "
                              "or pass a checkpoint path") from None
    return pyfunc.unwrap_python_model().bundle, info
