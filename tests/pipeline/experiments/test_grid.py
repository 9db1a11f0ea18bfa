"""The comparison experiment: budget split, parameter matching, one parent run with nested runs, the report, reuse."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.experiments.grid import match_parameters, plan_budget, rate_source, variant_config
from tests.support import overrides_of


def _cfg(tiny_config, store, *extra: str):
    return load_config(None, ["name=tiny", *overrides_of(tiny_config),
                              f"tracking.tracking_uri=sqlite:///{store / 'mlflow.db'}",
                              f"tracking.artifact_location={store / 'artifacts'}", "tracking.experiment=tiny-exp",
                              f"train.runs_dir={store / 'runs'}", "train.max_steps=8", "train.val_check_interval=4",
                              "eval.max_words=60", "experiment.models=[rnn_tanh, lstm]",
                              "experiment.budget_minutes=1", "experiment.overhead_minutes=0",
                              "experiment.eval_minutes_per_model=0", "experiment.longrange_minutes=0.04",
                              "experiment.exploding_share=0.04", "experiment.exploding_steps=6",
                              "experiment.longrange_distances=[2, 5]", "experiment.longrange_hidden=8",
                              "experiment.longrange_embedding=8", "experiment.longrange_batch=8",
                              "experiment.longrange_n_test=10", "experiment.longrange_cells=[rnn_tanh, lstm_f3]",
                              "experiment.longrange_steps=4", "experiment.longrange_eval_every=2",
                              "experiment.longrange_seeds=1", "experiment.longrange_workers=1",
                              "experiment.gradient_windows=4",
                              "experiment.log_models=false", f"experiment.report_dir={store / 'reports'}",
                              "experiment.train_pieces=null", "experiment.seeds={}", *extra])


def test_budget_gives_every_model_the_same_training_time_and_fits_the_budget(tiny_config):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "experiment.budget_minutes=120",
                             "experiment.overhead_minutes=6", "experiment.eval_minutes_per_model=5",
                             "experiment.longrange_minutes=15", "experiment.exploding_share=0.1"])
    # by hand, 6 models: reserves 6 + 6 × 5 + 15 = 51; the rest 69 gives 6.9 to the demo and 62.1 / 6 to each model
    assert plan_budget(cfg) == pytest.approx({"budget_minutes": 120, "models": 6, "overhead_minutes": 6,
                                              "eval_minutes_per_model": 5, "longrange_minutes": 15,
                                              "exploding_minutes": 6.9, "train_minutes": 10.35})
    assert plan_budget(cfg, n_models=3)["train_minutes"] == pytest.approx((120 - 6 - 15 - 15) * 0.9 / 3)
    with pytest.raises(ConfigError, match="budget_minutes"):
        plan_budget(cfg.replace(experiment=cfg.experiment.__class__(budget_minutes=5)))


def hand_count(name: str, h: int, layers: int, v: int = 600, e: int = 32) -> int:
    """Parameters of the tiny config's tied-softmax model, by hand: embedding, G gate blocks per layer (weights over
    input and state, two biases), the projection to the embedding size when H != E, the decoder's bias."""
    g = {"lstm": 4, "gru": 3}.get(name, 1)
    recurrent = sum(g * h * ((e if i == 0 else h) + h) + 2 * g * h for i in range(layers))
    return v * e + recurrent + (h * e + e if h != e else 0) + v


def test_grid_parameter_counts_match_within_ten_percent(tiny_config):
    from pipeline.experiments.grid import variant_config

    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "model.cell=lstm", "model.hidden_dim=64",
                             "model.num_layers=2"])
    matched = match_parameters(cfg, 600)
    assert set(matched["models"]) == set(cfg.experiment.models)
    for name, m in matched["models"].items():
        assert abs(m["parameters"] / matched["target"] - 1) <= 0.10, name
        assert m["parameters"] == hand_count(name, m["hidden_dim"], m["num_layers"])
    assert matched["models"]["lstm"]["hidden_dim"] == 64
    assert matched["models"]["rnn_tanh"]["hidden_dim"] > matched["models"]["gru"]["hidden_dim"] > 64
    assert matched["models"]["rnn_tanh_residual"]["num_layers"] == cfg.experiment.residual_layers
    noclip = variant_config(cfg, "rnn_tanh_noclip")
    assert noclip.train.gradient_clip_val is None and variant_config(cfg, "rnn_tanh").train.gradient_clip_val
    assert variant_config(cfg, "irnn").model.init == "identity"


def test_one_factor_variants_train_at_the_rate_swept_for_the_model_they_vary(tiny_config):
    from pipeline.experiments.report_reach import sweep_section

    assert [rate_source(n) for n in ("rnn_tanh_noclip", "rnn_tanh_residual", "irnn", "lstm_s2", "gru")] == \
        ["rnn_tanh", "rnn_tanh", "irnn", "lstm", "gru"]
    noclip = variant_config(tiny_config, "rnn_tanh_noclip", 16, lr=0.001, pieces=1000)
    assert noclip.train.lr == 0.001 and noclip.train.gradient_clip_val is None and noclip.model.cell == "rnn_tanh"
    text = "\n".join(sweep_section({"pieces": 10, "rates": [0.001], "models": {"rnn_tanh": {
        "runs": {"0.001": {"val_loss": 6.0}}, "chosen_key": "0.001", "minutes": 1.0}}}))
    assert "rnn_tanh_noclip at rnn_tanh's" in text and "rnn_tanh_residual at rnn_tanh's" in text


def test_bad_experiment_settings_are_config_errors(tiny_config):
    for bad in ("experiment.models=[rnn_foo]", "experiment.budget_minutes=0", "experiment.nope=1",
                "experiment.longrange_minutes=-1", "experiment.exploding_share=0.95", "experiment.models=[]",
                "experiment.curve_models=[foo]"):
        with pytest.raises(ConfigError, match="experiment"):
            load_config(None, ["name=tiny", *overrides_of(tiny_config), bad])


def test_budget_and_parameter_matching_errors_say_what_to_change(tiny_config):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "experiment.budget_minutes=2",
                             "experiment.overhead_minutes=1", "experiment.eval_minutes_per_model=1"])
    with pytest.raises(ConfigError, match=r"leaves no training time .* give more minutes or lower the reserves"):
        plan_budget(cfg)
    exact = load_config(None, ["name=tiny", *overrides_of(tiny_config), "model.cell=lstm", "model.hidden_dim=64",
                               "experiment.parameter_tolerance=0.0"])
    with pytest.raises(ConfigError, match=r"cannot match \d+ parameters within 0% .* change model.hidden_dim or "
                                          r"experiment.parameter_tolerance"):
        match_parameters(exact, 600)


@pytest.mark.slow
def test_experiment_makes_nested_runs_and_a_report_and_reuses_them(tiny_config, prepared, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline import tracking
    from pipeline.experiments.experiment import run_experiment

    cfg = _cfg(tiny_config, tmp_path)
    s = run_experiment(cfg, "test", log=lambda *a: None)
    client = MlflowClient(tracking.tracking_uri(cfg))
    exp = client.get_experiment_by_name("tiny-exp")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    nested = [r for r in runs if r.data.tags.get(tracking.PARENT_TAG) == s["parent_run_id"]]
    assert [p.info.run_id for p in parent] == [s["parent_run_id"]] and len(runs) == 3
    assert sorted(r.data.tags["mlflow.runName"] for r in nested) == ["lstm", "rnn_tanh"]
    for r in nested:
        assert r.info.status == "FINISHED"
        for metric in ("test/top1", "test/top5", "test/word_ppl", "grad/decay_rate_init", "grad/decay_rate_trained",
                       "train/clipped_share", "train/seconds", "train/tokens_per_s_mean", "model/parameters",
                       "test/ksr", "test/echo_rate"):
            assert metric in r.data.metrics, metric
    assert parent[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(s["parent_run_id"])} >= {"experiment.md", "report", "longrange",
                                                                          "exploding", "baseline"}
    report = (tmp_path / "reports" / "experiment.md").read_text(encoding="utf-8")
    for needle in ("| rnn_tanh ", "| lstm ", "| kn4gram ", "## Long-range task", "## Exploding gradients",
                   "(experiment/gradients.png)", "## Reading", "## Natural text by kind",
                   "then by distance to the word's last occurrence", "lstm − rnn_tanh", "document-clustered",
                   "commit:", "## Keystroke savings", "− rnn_tanh (points)"):
        assert needle in report, needle
    for png in ("gradients.png", "accuracy_by_distance.png", "longrange/longrange.png", "exploding/exploding.png"):
        assert (tmp_path / "reports" / "experiment" / png).is_file(), png
    budget = {r["train_minutes_budget"] for r in s["rows"]}
    assert len(budget) == 1  # the same training time for every model

    again = run_experiment(cfg, "test", log=lambda *a: None)
    assert len(client.search_runs([exp.experiment_id])) == 3  # nothing new: the grid was reused
    assert again["parent_run_id"] == s["parent_run_id"]
    assert all(r["reused"] for r in again["rows"])
    assert [r["run_id"] for r in again["rows"]] == [r["run_id"] for r in s["rows"]]
    assert again["longrange"].get("reused") and again["exploding"].get("reused")
    # the keystrokes are cached apart and reused too: the same typist's record for every model and the n-gram
    assert again["keystrokes"] == s["keystrokes"] and set(s["keystrokes"]["tables"]["short"]["models"]) == {
        "rnn_tanh", "lstm", "kn4gram"}

    # a change to the evaluation scores the trained models again, in their own runs, without training them again
    rescored = run_experiment(cfg.replace(eval=dataclasses.replace(cfg.eval, bootstrap_replicates=200)), "test",
                              log=lambda *a: None)
    assert [r["run_id"] for r in rescored["rows"]] == [r["run_id"] for r in s["rows"]]
    assert not any(r["reused"] for r in rescored["rows"])
    assert [r["train_seconds"] for r in rescored["rows"]] == [r["train_seconds"] for r in s["rows"]]
    nested = [r for r in client.search_runs([exp.experiment_id]) if tracking.PARENT_TAG in r.data.tags]
    assert len(nested) == 2
    assert "test/short/top1_minus_rnn_tanh" in client.get_run(s["rows"][1]["run_id"]).data.metrics


@pytest.mark.slow
def test_parts_of_the_grid_trained_apart_are_reused_by_the_full_run(tiny_config, prepared, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline import tracking
    from pipeline.experiments.experiment import run_experiment

    cfg = _cfg(tiny_config, tmp_path, "experiment.curve_models=[lstm]", "eval.context_curves={short: 2}")
    part = run_experiment(cfg, "test", log=lambda *a: None, train_only=True, only=("rnn_tanh",))
    assert part["partial"] and part["trained"] == ["rnn_tanh"]
    client = MlflowClient(tracking.tracking_uri(cfg))
    exp = client.get_experiment_by_name("tiny-exp")
    trained = [r for r in client.search_runs([exp.experiment_id]) if tracking.PARENT_TAG in r.data.tags]
    assert [r.data.tags["mlflow.runName"] for r in trained] == ["rnn_tanh"]
    assert not (tmp_path / "reports" / "experiment.md").exists()  # no report from a part
    full = run_experiment(cfg, "test", log=lambda *a: None)
    rows = {r["name"]: r for r in full["rows"]}
    assert rows["rnn_tanh"]["run_id"] == trained[0].info.run_id  # trained once, evaluated by the full run
    assert rows["lstm"]["run_id"] != rows["rnn_tanh"]["run_id"] and (tmp_path / "reports" / "experiment.md").exists()
    # the context-length curves only for experiment.curve_models (and the n-gram)
    assert rows["lstm"]["test"]["context"]["short"]["positions"] > 0 and rows["rnn_tanh"]["test"]["context"] == {}
    assert set(full["curves"]["short"]["curve"]["1"]["models"]) == {"lstm", "kn4gram"}


@pytest.mark.slow
def test_equal_pieces_sweep_seeds_and_the_matched_pair(tiny_config, prepared, tmp_path):
    """Training parity: each comparison cell at its best rate of the sweep, every model on the same pieces, two
    seeds, a checkpoint at every validation, the LSTM checkpoint nearest the RNN's best loss ablated, and the report
    with the sweep, the rules and a verdict."""
    from pipeline.experiments.experiment import run_experiment
    from pipeline.experiments.grid import pieces_per_step

    cfg = _cfg(tiny_config, tmp_path, "experiment.lr_sweep=[0.001, 0.01]", "experiment.lr_sweep_models=[lstm]",
               "eval.context_curves={short: 2}", "eval.ablation_contexts={short: 2}", "eval.ablation_lengths=[1, 2]", "eval.copy_targets=40",
               "eval.ablation_shuffle_positions=40", "experiment.curve_models=[lstm]", "eval.keystrokes=false")
    step = pieces_per_step(cfg)
    cfg = cfg.replace(experiment=dataclasses.replace(cfg.experiment, train_pieces=6 * step, lr_sweep_pieces=2 * step,
                                                     lr_sweep_extend=1,
                                                     validation_every_pieces=2 * step,
                                                     seeds={"rnn_tanh": 2, "lstm": 2}))
    s = run_experiment(cfg, "test", log=lambda *a: None)
    rows = {r["name"]: r for r in s["rows"]}
    assert list(rows) == ["rnn_tanh", "rnn_tanh_s2", "lstm", "lstm_s2"]
    sweep = s["lr_sweep"]["models"]["lstm"]
    best = min(sweep["runs"], key=lambda k: sweep["runs"][k]["val_loss"])
    tried = sorted(float(k) for k in sweep["runs"])
    assert {0.001, 0.01} <= set(tried) and sweep["chosen_key"] == best
    # with two rates the best is at an edge: the sweep went one step past it (lr_sweep_extend = 1)
    assert len(tried) == 3 and (tried[0] == 0.0005 or tried[-1] == 0.02)
    assert rows["lstm"]["lr"] == rows["lstm_s2"]["lr"] == float(best) and rows["rnn_tanh"]["lr"] == cfg.train.lr
    assert rows["rnn_tanh_s2"]["seed"] == rows["rnn_tanh"]["seed"] + 1
    for r in rows.values():  # the same pieces for all, a validation (and a kept checkpoint) every 2 steps
        assert r["max_steps"] == 6 and [v["step"] for v in r["validations"]] == [2, 4, 6]
        assert all(Path(v["checkpoint"]).is_file() for v in r["validations"])
    pairs = s["matched_pairs"]
    assert [p["seed"] for p in pairs] == [1, 2]
    for p, suffix in zip(pairs, ("", "_s2")):
        rnn_best = min(v["val_loss"] for v in rows["rnn_tanh" + suffix]["validations"])
        lstm_losses = [v["val_loss"] for v in rows["lstm" + suffix]["validations"]]
        assert p["val_loss"] == min(lstm_losses, key=lambda v: abs(v - rnn_best))
    assert len(s["comparisons"]["matched"]) == 2 and s["verdict"]["kinds"]
    report = (tmp_path / "reports" / "experiment.md").read_text(encoding="utf-8")
    for needle in ("## Learning-rate sweep", "## Equal data", "## Does the LSTM read further", "Decision rules",
                   "## How far back each model reads", "Matched quality, seed 2"):
        assert needle in report, needle
