"""MLflow tracking: one run with params, tags, metric histories and artifacts; pyfunc + registry; store faults."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.bench import free_port
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.corpus.prepare import documents, prepare, sha256_file
from tests.support import overrides_of


def _cfg(tiny_config, store: Path, *extra: str):
    return load_config(None, ["name=tiny", *overrides_of(tiny_config),
                              f"tracking.tracking_uri=sqlite:///{store / 'mlflow.db'}",
                              f"tracking.artifact_location={store / 'artifacts'}", "train.max_steps=12",
                              "train.val_check_interval=6", f"train.runs_dir={store / 'runs'}", *extra])


def _run_job(cfg, prepared):
    from pipeline.evaluation import build_baseline
    from pipeline.job import train_and_register

    client = tracking.open_store(cfg)
    docs = {s: documents(cfg, s)[:8] for s in ("validation", "test")}
    return client, train_and_register(cfg, prepared, client, docs, build_baseline(cfg))


@pytest.fixture(scope="module")
def tracked(tiny_config, prepared, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    cfg = _cfg(tiny_config, store, "train.log_every_n_steps=5")
    client, row = _run_job(cfg, prepared)
    return cfg, client, row, store


@pytest.mark.slow
def test_one_run_with_params_tags_metrics_and_artifacts(tracked):
    cfg, client, row, _ = tracked
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert any(k.endswith("model/cell") or k.endswith("model.cell") for k in params)
    for tag in ("data_sha256", "tokenizer_sha256", "git_commit", "seed", "torch", "lightning", "sentencepiece",
                "mlflow"):
        assert run.data.tags.get(tag), tag
    for metric in ("train/loss", "train/grad_norm", "train/clipped_share"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert len(history) > 1, metric
        assert len({m.step for m in history}) == len(history), f"{metric} has duplicated steps"
    # the pre-clip norm at every optimizer step, whatever log_every_n_steps is
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm"))
    assert steps == list(range(cfg.train.max_steps))
    assert client.get_metric_history(run.info.run_id, "val/loss")
    assert client.get_metric_history(run.info.run_id, "val/ppl")
    assert any(k.startswith("lr") for k in run.data.metrics)
    for metric in ("test/top1", "test/top5", "test/word_ppl", "validation/word_ppl"):
        assert metric in run.data.metrics, metric
        assert f"mixture/{metric}" in run.data.metrics, metric  # the fitted mixture's row, logged beside
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "tokenizer", "checkpoints", "evaluation"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "tokenizer")] == ["tokenizer/spm.model"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    # MLflow 3 shows the experiment as model development, and the runs table's Dataset column is filled
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train.jsonl", "validation.jsonl", "test.jsonl"}
    directory = prepare(cfg, log=lambda *a: None).directory
    for split in ("train", "validation", "test"):
        i = inputs[f"{split}.jsonl"]
        assert {t.key: t.value for t in i.tags}["mlflow.data.context"] == split
        assert i.dataset.digest == sha256_file(directory / f"{split}.npy")[:16]


@pytest.mark.slow
@pytest.mark.slow
def test_the_job_keeps_each_scorers_measurements_and_registers_the_eval_settings(tracked):
    from pipeline.training.train import run_dir_for

    cfg, _, row, _ = tracked
    kept = sorted(p.name for p in (run_dir_for(cfg) / "evaluation-parts").glob("*.json"))
    assert kept == ["lstm.json", "lstm_4-gram_cache.json"]  # the job here runs without the n-gram baseline
    bundle, _ = tracking.load_bundle("models:/marathi-nwp-lstm@champion", cfg)
    assert bundle.config["eval"] == cfg.to_dict()["eval"]  # what the server reads its search settings and int8 from


def test_registered_model_loads_in_a_fresh_process(tracked, tmp_path):
    cfg, _, row, _ = tracked
    assert row["registry"]["promoted"]
    code = ("import json, mlflow; m = mlflow.pyfunc.load_model('models:/marathi-nwp-lstm@champion'); "
            "out = m.predict(['मी आज', 'महाराष्ट्र'], params={'k': 3}); "
            "net = m.predict(['मी आज'], params={'k': 3, 'mix': 'net'}); "
            "print(json.dumps([[list(w) for w in out['words']], list(out['model']), list(net['model'])], "
            "ensure_ascii=False))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(cfg)}
    # run from an empty directory: the model must not need the project's config files
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    words, mixed, alone = json.loads(out.stdout.strip().splitlines()[-1])
    # the registered model carries its n-gram and fitted weights: it suggests from the mixture unless told not to
    assert mixed == ["lstm + 4-gram + cache"] * 2 and alone == ["lstm"]
    assert len(words) == 2 and all(len(w) == 3 for w in words)
    assert all(isinstance(x, str) and x for w in words for x in w)


@pytest.mark.slow
def test_a_worse_model_does_not_take_the_champion_alias(tracked):
    cfg, client, row, _ = tracked
    name = row["registry"]["name"]
    champion = client.get_model_version_by_alias(name, tracking.CHAMPION).version
    uri = client.get_run(row["run_id"]).data.tags[tracking.MODEL_URI_TAG]
    worse = tracking.register(client, uri, "lstm", row["metrics"]["validation/word_ppl"] * 2, row["run_id"])
    assert not worse["promoted"]
    assert client.get_model_version_by_alias(name, tracking.CHAMPION).version == champion
    better = tracking.register(client, uri, "lstm", row["metrics"]["validation/word_ppl"] / 2, row["run_id"])
    assert better["promoted"]
    assert client.get_model_version_by_alias(name, tracking.CHAMPION).version == better["version"]
    # a registry name of its own (tracking.registered_name: the served model) is weighed against its own champion
    served = tracking.register(client, uri, "lstm", row["metrics"]["validation/word_ppl"] * 4, row["run_id"],
                               "marathi-nwp-served")
    assert served["name"] == "marathi-nwp-served" and served["promoted"]
    assert client.get_model_version_by_alias(name, tracking.CHAMPION).version == better["version"]


@pytest.mark.slow
def test_load_bundle_resolves_alias_version_and_run_id(tracked):
    from pipeline.serving.mixed import load_for

    cfg, client, row, _ = tracked
    tracking.open_store(cfg)
    for ref in (f"models:/{row['registry']['name']}/{row['registry']['version']}", row["run_id"]):
        bundle, info = tracking.load_bundle(ref)
        assert bundle.model.vocab_size == bundle.tokenizer.vocab_size
        assert load_for(bundle).weights.parts == ("net", "kn", "cache")  # stored beside the registered weights
        assert info["run_id"] == row["run_id"]


def test_unwritable_store_fails_before_training(tmp_path):
    # a store whose directory cannot exist (a file stands in its way): fails even for root, where chmod would not
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cfg = load_config(None, [f"tracking.tracking_uri=sqlite:///{blocker / 'mlflow.db'}"])
    with pytest.raises(tracking.TrackingError, match="not writable"):
        tracking.open_store(cfg)


def test_unwritable_artifacts_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cfg = load_config(None, [f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                             f"tracking.artifact_location={blocker / 'artifacts'}"])
    with pytest.raises(tracking.TrackingError, match=r"MLflow artifacts directory .* is not writable"):
        tracking.open_store(cfg)


@pytest.mark.slow
def test_model_references_that_do_not_resolve(tmp_path):
    from pipeline.checkpoints import CheckpointError

    cfg = load_config(None, [f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                             f"tracking.artifact_location={tmp_path / 'artifacts'}"])
    client = tracking.open_store(cfg)
    run_id = client.create_run(client.create_experiment("bare")).info.run_id
    with pytest.raises(CheckpointError, match=f"MLflow run {run_id} has no logged model"):
        tracking.load_bundle(run_id, cfg)
    with pytest.raises(CheckpointError, match=r"'no-such-thing' is neither a file, an MLflow run id, nor"):
        tracking.load_bundle("no-such-thing", cfg)
    with pytest.raises(CheckpointError, match=r"cannot load models:/ghost@champion from the MLflow store .* run "
                                              r"`make run`"):
        tracking.load_bundle("models:/ghost@champion", cfg)


def test_bad_uri_fails_with_the_uri_named(tmp_path):
    cfg = load_config(None, ["tracking.tracking_uri=nosuchscheme://x/y"])
    with pytest.raises(tracking.TrackingError, match="nosuchscheme://x/y"):
        tracking.open_store(cfg)


@pytest.mark.slow
def test_cli_reports_store_errors_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pipeline", "run", "--set",
                          "tracking.tracking_uri=nosuchscheme://x/y"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("error: cannot open the MLflow store nosuchscheme://x/y")
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_shared_tracking_server_over_http(tiny_config, prepared, tmp_path):
    """The path a team with a shared tracking server takes: MLFLOW_TRACKING_URI=http://..."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        cfg = _cfg(tiny_config, tmp_path, f"tracking.tracking_uri={uri}")
        client, row = _run_job(cfg, prepared)
        # read the run back over HTTP, as another team member would
        req = urllib.request.Request(f"{uri}/api/2.0/mlflow/runs/get?run_id={row['run_id']}")
        run = json.load(urllib.request.urlopen(req, timeout=10))["run"]
        assert run["info"]["status"] == "FINISHED"
        names = {m["key"] for m in run["data"]["metrics"]}
        assert {"train/loss", "test/top1", "val/loss"} <= names
    finally:
        server.terminate()
        server.wait(timeout=30)
