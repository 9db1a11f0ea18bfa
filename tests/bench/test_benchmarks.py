"""The performance benchmarks on tiny sizes: they run end to end and their figures mean what they say."""
import pytest
import torch

from bench import kernels, sweep, time_to_quality
from pipeline.bench import bare_tokens_per_s
from pipeline.config import load_config
from tests.support import overrides_of


@pytest.mark.parametrize("cell,gates", [("rnn_tanh", 1), ("lstm", 4)])
@pytest.mark.slow
def test_recurrence_flops_per_token_are_the_hand_count(cell, gates):
    # GFLOP/s ÷ tokens/s = FLOPs per token: 3 × (forward GEMMs) = 3 × Σ_layers 2·G·H·(in + H), by hand for
    # in = 256, H = 512, 2 layers: (768 + 1024) × 1024 × G × 3
    gflops, tokens_per_s = kernels.recurrence_gflops(cell)
    assert gflops * 1e9 / tokens_per_s == pytest.approx(3 * 2 * gates * 512 * (768 + 1024), rel=1e-9)


def test_sweep_point_trains_the_configured_model(tiny_config, monkeypatch):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "model.output=adaptive",
                             "model.tie_weights=false", "model.cutoffs=[100, 300]"])
    assert sweep._scaled_cutoffs((100, 300), 1200, 600) == (200, 600)
    seen = []

    def recording(model, windows, *args, **kw):
        before = [p.detach().clone() for p in model.parameters()]
        rate = bare_tokens_per_s(model, windows, *args, **kw)
        seen.append((model, next(iter(windows))[0].shape, before, rate))
        return rate

    monkeypatch.setattr(sweep, "bare_tokens_per_s", recording)
    for output in ("adaptive", "softmax"):
        sweep.point(cfg, threads=1, batch=4, bptt=8, vocab=1200, output=output, steps=2)
    (adaptive, shape_a, before_a, _), (softmax, shape_s, _, _) = seen
    assert adaptive.output == "adaptive" and adaptive.adaptive.cutoffs[:2] == [200, 600]  # scaled to vocab 1200
    assert softmax.output == "softmax" and softmax.vocab_size == adaptive.vocab_size == 1200
    assert shape_a == shape_s == (4, 8)
    assert any(not torch.equal(b, p) for b, p in zip(before_a, adaptive.parameters()))  # it took optimizer steps


def test_time_to_quality_budgets_and_variants(tiny_config):
    assert time_to_quality.budgets(["lstm", "gru"], "7") == {"lstm": 7.0, "gru": 7.0}
    assert time_to_quality.budgets(["lstm", "gru"], "lstm=30,gru=12") == {"lstm": 30.0, "gru": 12.0}
    with pytest.raises(KeyError):
        time_to_quality.budgets(["lstm", "gru"], "lstm=30")
    v = time_to_quality.entry_config(tiny_config, "lstm-4k", 5)
    assert (v.model.cell, v.tokenizer.vocab_size, v.model.cutoffs, v.train.max_time_minutes) == ("lstm", 4000,
                                                                                                 (500, 1500), 5)
    assert time_to_quality.entry_config(tiny_config, "gru", 5).model.cell == "gru"


@pytest.mark.slow
def test_time_to_quality_curve_on_a_tiny_run(tiny_config, monkeypatch):
    cfg = load_config(None, ["name=tiny", *overrides_of(tiny_config), "train.max_steps=100000",
                             "train.val_check_interval=10", "train.limit_val_batches=2"])
    monkeypatch.setenv("TTQ_CELLS", "rnn_tanh")
    monkeypatch.setenv("TTQ_MINUTES", "0.05")
    monkeypatch.setenv("TTQ_EVERY_MINUTES", "0.01")
    monkeypatch.setenv("TTQ_SAMPLE_WORDS", "120")
    out = time_to_quality.run(cfg)
    # the word budget is 120 words; the figures rest on those with a letter (numerals apart), with clustered intervals
    assert 100 < out["sample"]["words"] <= 120 and 0 <= out["ngram"]["top1"] < 1
    assert out["ngram"]["top1_low"] <= out["ngram"]["top1"] <= out["ngram"]["top1_high"]
    cell = out["cells"]["rnn_tanh"]
    assert len(cell["curve"]) >= 2
    times = [p["train_s"] for p in cell["curve"]]
    assert times == sorted(times) and times[-1] <= 0.05 * 60 + 2  # evaluation time is not on the training clock
    assert all(p["words"] == out["sample"]["words"] and 0 <= p["top1"] <= 1 for p in cell["curve"])
    passed = cell["passed_ngram_at_s"]
    first_above = next((p["train_s"] for p in cell["curve"] if p["top1"] > out["ngram"]["top1"]), None)
    assert (passed is None) == (first_above is None)
    if passed is not None:
        assert passed == pytest.approx(first_above, abs=0.06)


def test_time_to_quality_of_a_finished_run_scores_its_kept_checkpoints(tiny_config, trained_checkpoint,
                                                                       tiny_rnn_checkpoint, tmp_path, monkeypatch):
    import dataclasses
    import json
    import shutil

    from pipeline.checkpoints import load_checkpoint
    from pipeline.corpus.prepare import document_sources, documents
    from pipeline.evaluation import NeuralScorer

    kept = tmp_path / "run" / "checkpoints"
    kept.mkdir(parents=True)
    steps = {20: tiny_rnn_checkpoint, 40: trained_checkpoint}  # two different networks, in training order
    for step, ckpt in steps.items():
        shutil.copy2(ckpt, kept / f"val-{step:07d}.ckpt")
    shutil.copy2(trained_checkpoint, kept / "best.ckpt")
    # as trained elsewhere: the stored paths do not exist here, the files sit beside validations.json
    (kept / "validations.json").write_text(json.dumps([
        {"step": s, "pieces": s * 64, "val_loss": 5.0 - s / 100, "checkpoint": f"/elsewhere/val-{s:07d}.ckpt"}
        for s in steps]))
    monkeypatch.setenv("TTQ_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("TTQ_SAMPLE_WORDS", "120")
    out = time_to_quality.run(tiny_config)
    assert [p["step"] for p in out["curve"]] == [20, 40] and 100 < out["sample"]["words"] <= 120
    assert out["evaluated_step"] == load_checkpoint(trained_checkpoint).meta["global_step"]
    ec = dataclasses.replace(tiny_config.eval, max_words=120)
    docs, sources = documents(tiny_config, "test"), document_sources(tiny_config, "test")
    for point, ckpt in zip(out["curve"], steps.values()):
        words, hits = time_to_quality.sample_hits(NeuralScorer(load_checkpoint(ckpt), ec, "net"), docs, ec, sources)
        pooled = "all" if "all" in point["kinds"] else next(iter(point["kinds"]))
        assert point["kinds"][pooled]["top1"]["acc"] == pytest.approx(hits[~words.numeral].mean())  # its own weights
        for c in point["kinds"].values():
            assert c["minus_ngram"]["diff"] == pytest.approx(c["top1"]["acc"] - c["ngram"]["acc"])
            assert c["minus_ngram"]["low"] <= c["minus_ngram"]["diff"] <= c["minus_ngram"]["high"]
    first = out["curve"][0]["kinds"]
    for kind, at in out["passed_ngram"].items():
        hit = next(p for p in out["curve"] if p["kinds"].get(kind, {}).get("minus_ngram", {}).get("low", 0) > 0)
        assert at["step"] == hit["step"]
    assert all(c["minus_ngram"]["low"] <= 0 for k, c in first.items() if k not in out["passed_ngram"])


def test_one_factor_check_pairs_each_run_with_the_first_on_the_same_words(tiny_config, trained_checkpoint,
                                                                         tiny_rnn_checkpoint, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    from bench import time_to_quality
    from pipeline.checkpoints import load_checkpoint
    from pipeline.corpus.prepare import document_sources, documents
    from pipeline.evaluation import NeuralScorer

    runs = []
    for name, ckpt in (("lstm-run", trained_checkpoint), ("rnn-run", tiny_rnn_checkpoint)):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        shutil.copy2(ckpt, tmp_path / name / "checkpoints" / "best.ckpt")
        runs.append(str(tmp_path / name))
    monkeypatch.setenv("TTQ_RUN", ",".join(runs))
    monkeypatch.setenv("TTQ_SAMPLE_WORDS", "150")
    out = time_to_quality.run(tiny_config)
    assert out["reference"] == "lstm-run" and list(out["runs"]) == ["lstm-run", "rnn-run"]
    ec = dataclasses.replace(tiny_config.eval, max_words=150)
    docs, sources = documents(tiny_config, "test"), document_sources(tiny_config, "test")
    words, hits, logp = time_to_quality.sample_scores(NeuralScorer(load_checkpoint(tiny_rnn_checkpoint), ec, "x"),
                                                      docs, ec, sources)
    letter = ~words.numeral
    pooled = out["cells"]["all"] if "all" in out["cells"] else out["cells"][next(iter(out["cells"]))]
    assert pooled["top1"]["rnn-run"]["acc"] == pytest.approx(hits[letter].mean())  # its own weights
    assert out["runs"]["rnn-run"]["mean_logp"] == pytest.approx(logp[letter].mean())
    for c in out["cells"].values():
        d = c["minus_first"]["rnn-run"]
        assert d["diff"] == pytest.approx(c["top1"]["rnn-run"]["acc"] - c["top1"]["lstm-run"]["acc"])
        assert d["low"] <= d["diff"] <= d["high"]
        assert c["minus_ngram"]["lstm-run"]["diff"] == pytest.approx(
            c["top1"]["lstm-run"]["acc"] - c["top1"][out["ngram"]]["acc"])
    # the frequency-rank cells split the words with a letter: together they hold every one of them once
    ranks = [c["n"] for k, c in out["cells"].items() if k.startswith("rank ")]
    assert sum(ranks) <= int(letter.sum()) and ranks
    losses = out["runs"]["lstm-run"]["loss_per_piece"]  # eval-mode loss on training and held-out text
    assert losses["train"] > 0 and losses["train_minus_validation"] == pytest.approx(losses["train"] - losses["validation"])
    lp = out["logp_minus_first"]["rnn-run"]
    assert lp["diff"] == pytest.approx(out["runs"]["rnn-run"]["mean_logp"] - out["runs"]["lstm-run"]["mean_logp"])


@pytest.mark.slow
def test_evaluation_speed_benchmark_scores_what_evaluate_scores(tiny_config, trained_checkpoint, monkeypatch):
    import dataclasses

    from bench import evaluate as bench_evaluate
    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import NeuralScorer, evaluate_scorer

    cfg = tiny_config.replace(eval=dataclasses.replace(tiny_config.eval, max_words=None, context_lengths=(1, 4)))
    monkeypatch.setenv("BENCH_EVAL_MODEL", str(trained_checkpoint))
    monkeypatch.setenv("BENCH_EVAL_WORDS", "150")
    fig = bench_evaluate.run(cfg)
    assert fig["words"] == 150 and fig["words_available"] > 150 and not fig["whole_split_measured"]
    assert fig["search"]["rows"] == 150  # one exact top-k search per scored word
    # the whole-split figure is the measured seconds scaled from the sampled words to all of them; both figures are
    # rounded to 0.1 s, so the scaled rounding error (0.05 s x the scale) bounds the difference
    scale = fig["words_available"] / fig["words"]
    assert fig["whole_split_s"] == pytest.approx(fig["seconds"] * scale, abs=0.05 * scale + 0.05)
    ec = dataclasses.replace(cfg.eval, max_words=150)
    same = evaluate_scorer(NeuralScorer(load_local(trained_checkpoint), ec, "x"), documents(cfg, "test"), ec)
    assert fig["top1"] == pytest.approx(same["top1"], abs=1e-4)


@pytest.mark.slow
def test_mixture_speed_times_the_mixture_against_the_network(mixed_checkpoint, tiny_config, monkeypatch):
    from bench import mixture_speed

    monkeypatch.setenv("MARATHI_NWP_BENCH_MODEL", str(mixed_checkpoint))
    monkeypatch.setenv("BENCH_WORDS", "40")
    out = mixture_speed.run(tiny_config)
    assert out["sample"]["words"] == 40 and out["candidates"] == tiny_config.mixture.candidates
    for phase in ("evaluate", "keystrokes"):
        net, mix = out[f"{phase}_network"], out[f"{phase}_mixture"]
        assert net["seconds"] > 0 and mix["words_per_s"] > 0 and "whole_split_minutes_extrapolated" in mix
        assert out[f"{phase}_mixture_over_network"] == pytest.approx(mix["seconds"] / net["seconds"], abs=0.01)
    assert out["goals"]["measured_on"].startswith("a sample")


def test_mixture_shortlist_compares_the_one_beam_with_the_exact_search(mixed_checkpoint, tiny_config, monkeypatch):
    from bench import mixture_shortlist

    monkeypatch.setenv("MARATHI_NWP_BENCH_MODEL", str(mixed_checkpoint))
    monkeypatch.setenv("BENCH_ROWS", "30")
    out = mixture_shortlist.run(tiny_config)
    assert out["rows"] == 30 and out["k"] == tiny_config.mixture.candidates
    assert out["exact_search"]["rows"] == 30 and out["rows_the_one_beam_could_not_prove"] <= 30
    assert 0 <= out["same_set_of_k"] <= out["overlap_of_k"] <= 1 and out["one_beam_ms_per_row"] > 0


def test_the_int8_twin_is_served_quantized_with_its_mixture(mixed_checkpoint, tmp_path):
    from bench import serve as bench_serve
    from pipeline.checkpoints import load_local
    from pipeline.serving.mixed import load_for, predictor_for

    export = bench_serve.int8_twin(load_local(mixed_checkpoint), tmp_path / "float")
    (export / "config.yaml").write_text((export / "config.yaml").read_text().replace("int8: true", "int8: false"))
    # twice: from a checkpoint, then from an export directory, whose own config.yaml must not replace the twin's
    for source in (mixed_checkpoint, export):
        twin = load_local(bench_serve.int8_twin(load_local(source), tmp_path / f"int8-{source.name}"))
        assert twin.config["eval"]["int8"] is True and load_local(source).config["eval"]["int8"] is False
        mixture = load_for(twin)
        assert mixture is not None and mixture.weights.parts == ("net", "kn", "cache")
        served = predictor_for(twin, mixture, "lstm")
        assert all(isinstance(x, torch.ao.nn.quantized.dynamic.LSTM) for x in served.pred.model.layers)


def test_int8_accuracy_pairs_the_float_and_the_int8_network_on_the_same_words(tiny_config, trained_checkpoint,
                                                                            monkeypatch):
    from bench import serve as bench_serve
    from models.build import int8_copy
    from pipeline.checkpoints import load_local
    from pipeline.evaluation import network_scorer

    quantized = []
    monkeypatch.setattr(network_scorer, "int8_copy", lambda m: quantized.append(int8_copy(m)) or quantized[-1])
    monkeypatch.setenv("BENCH_INT8_WORDS", "150")
    got = bench_serve.int8_accuracy(load_local(trained_checkpoint), tiny_config)
    assert len(quantized) == 1  # the second scorer, and only it, reads through int8 weights
    assert 100 < got["words"] <= 150 and 0 <= got["same_top1_hit"] <= 1
    diff = got["top1"]["int8"]["acc"] - got["top1"]["float"]["acc"]
    assert got["int8_minus_float"]["diff"] == pytest.approx(diff)
