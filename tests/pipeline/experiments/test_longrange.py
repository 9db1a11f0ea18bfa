"""The controlled long-range task (DESIGN §8): a deterministic generator whose distractors carry no class
information, one fresh model per (cell, d, seed) trained on what is scored, diagnostics checked against autograd,
and guards that the scoring measures what it claims."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import LONGRANGE_CELLS
from pipeline.evaluation.intervals import wilson
from pipeline.experiments.longrange import LongrangeSettings, format_table, report_lines, run_longrange
from pipeline.experiments.longrange_grid import choose_lr, job_key, summarise
from pipeline.experiments.longrange_report import fisher_tests, frontier, slopes, survival
from pipeline.experiments.longrange_task import (
    ATTRACTORS,
    CHANCE,
    CLASSES,
    CUES,
    FORMS,
    NOUNS,
    POOL,
    QUERIES,
    VOCAB,
    batch,
    example,
    stream,
)
from pipeline.experiments.longrange_train import CELLS, RATIO, build, diagnose, train_job


def _job(cell, d, steps, seed=0, **kw):
    settings = {"steps": steps, "eval_every": kw.pop("eval_every", 50), "batch_size": 32, "embedding_dim": 32,
                "hidden_dim": kw.pop("hidden_dim", 64), "clip": 1.0, "n_test": kw.pop("n_test", 200),
                "t_max": 400.0}
    return {"cell": cell, "d": d, "seed": seed, "lr": kw.pop("lr", 2e-3), "settings": settings, **kw}


def test_generator_is_deterministic():
    a = batch(stream(7, 20, "test"), 20, 10)
    b = batch(stream(7, 20, "test"), 20, 10)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], batch(stream(8, 20, "test"), 20, 10)[0])  # another seed, other data
    assert not torch.equal(a[0], batch(stream(7, 20, "train"), 20, 10)[0])  # the streams are apart
    x, y, cand = a
    assert x.shape == (10, 20) and y.shape == (10,) and cand.shape == (10, len(CLASSES))


@pytest.mark.parametrize("d", [2, 5, 50])
def test_the_cue_is_the_only_class_dependent_token_before_the_target(d):
    for seed in range(20):
        runs = [example(np.random.default_rng(seed), d, c) for c in range(len(CLASSES))]
        words = [w for w, _ in runs]
        assert all(len(w) == d + 1 for w in words) and all(c == runs[0][1] for _, c in runs)
        for c, w in enumerate(words):
            differ = [i for i, (u, v) in enumerate(zip(words[0], w)) if u != v]
            assert differ == ([] if c == 0 else [0, d])  # the cue and the target, d apart; all else the same draws
            assert w[0] in CUES[c] and w[d] == runs[c][1][c] and w[d - 1] in QUERIES
            assert all(t in POOL for t in w[1:d - 1])  # one pool for every class
    assert not set(POOL) & ({w for c in CUES for w in c} | set(QUERIES) | {w for f in FORMS for w in f})
    assert len(VOCAB) == len(set(VOCAB))


def test_the_pool_has_200_words_and_attractor_nouns_of_every_class():
    assert len(POOL) >= 200 and len(set(POOL)) == len(POOL)
    assert set(ATTRACTORS) <= set(POOL) and len(ATTRACTORS) >= 100
    for gender in ("m", "f"):  # oblique singular and plural of every cue lexeme, of both genders
        for noun in NOUNS[gender]:
            assert sum(w.startswith(noun[2]) for w in ATTRACTORS) >= 5 and noun[3] + "च्या" in ATTRACTORS
    assert {"मुलाबरोबर", "मुलांना", "मुलीला", "मुलींच्या"} <= set(ATTRACTORS)
    x, _, _ = batch(stream(0, 200, "train"), 200, 64)
    assert len(set(x[:, 1:-1].flatten().tolist())) > 0.9 * len(POOL)  # drawn from the whole pool


def test_test_sets_are_balanced_and_training_batches_carry_every_class():
    _, y, cand = batch(stream(0, 10, "test"), 10, 40, balanced=True)
    cls = (cand == y[:, None]).int().argmax(1)
    assert torch.bincount(cls, minlength=4).tolist() == [10, 10, 10, 10]
    _, y, cand = batch(stream(0, 5, "train"), 5, 64)
    assert len(set((cand == y[:, None]).int().argmax(1).tolist())) == 4


@pytest.mark.parametrize("d", [5, 20])
def test_a_predictor_that_sees_all_but_the_cue_scores_at_chance(d):
    # Naive Bayes on (position, word) pairs, fitted on 20 000 training items: it sees every input but the cue (the
    # query word, every distractor at its place) and the verb's 4 forms, and must be at chance on 2 000 test items.
    # The control, the same predictor with the cue, is right on nearly every item: the predictor can find a class.
    x, y, cand = batch(stream(0, d, "train"), d, 20_000)
    cls = (cand == y[:, None]).int().argmax(1).numpy()
    xt, yt, ct = batch(stream(0, d, "test"), d, 2_000, balanced=True)
    truth = (ct == yt[:, None]).int().argmax(1).numpy()
    for first, expect_chance in ((1, True), (0, False)):
        counts = np.ones((len(CLASSES), d, len(VOCAB)))  # Laplace
        np.add.at(counts, (cls[:, None], np.arange(d)[None, :], x.numpy()), 1)
        logp = np.log(counts / counts.sum(-1, keepdims=True))  # (classes, d, V)
        score = logp[:, np.arange(first, d)[None, :], xt.numpy()[:, first:]].sum(-1)  # (classes, n)
        right = int((score.argmax(0) == truth).sum())
        low, high = wilson(right, len(truth))
        if expect_chance:
            assert low <= CHANCE <= high, right / len(truth)
        else:
            assert right / len(truth) > 0.99


@pytest.mark.slow
def test_labels_drawn_apart_from_the_cue_score_at_chance():
    # The same training that solves d = 5 (the control) learns nothing when the target's class ignores the cue:
    # then no token before the target carries the class, and the test accuracy must be chance's.
    # Measured: the control solves d = 5 by step 200 (test 1.000); the blind run ends at 0.250 after 1000.
    control = train_job(_job("rnn_tanh", 5, 1000, eval_every=100, n_test=400))
    assert control["success"]
    blind = train_job(_job("rnn_tanh", 5, 1000, eval_every=100, n_test=400, independent_labels=True))
    assert blind["steps_run"] == 1000 and not blind["success"]
    low, high = wilson(blind["correct"], blind["n"])
    assert low <= CHANCE <= high, blind["accuracy"]


def test_the_gradient_ratio_is_the_closed_form_of_a_one_unit_tanh_rnn():
    # h_t = tanh(a e_t + w h_(t-1)), one unit, scalar embeddings: dh_T/de_k = a w^(T-k) prod_(t=k..T) (1 - h_t^2), so
    # ‖∂L/∂e_0‖ / ‖∂L/∂e_(T-1)‖ = |w|^(T-1) prod_(t=0..T-2) (1 - h_t^2) for one item, whatever the loss does at h_T.
    torch.manual_seed(0)
    d, a, w = 7, 0.9, 0.8
    model = build(CELLS["rnn_tanh"], 1, 1).double()
    layer = model.layers[0]
    with torch.no_grad():
        layer.weight_ih_l0.fill_(a), layer.weight_hh_l0.fill_(w), layer.bias_ih_l0.zero_(), layer.bias_hh_l0.zero_()
    x, y, cand = (t[:1] for t in batch(stream(0, d, "test"), d, 4))
    e = model.embedding.weight.detach()[x[0], 0].numpy()  # (d,)
    h, hs = 0.0, []
    for t in range(d):
        h = math.tanh(a * e[t] + w * h)
        hs.append(h)
    expect = abs(w) ** (d - 2) * np.prod([1 - v * v for v in hs[:d - 2]])
    got = diagnose(model, CELLS["rnn_tanh"], x, y, cand)
    assert got[RATIO] == pytest.approx(expect, rel=1e-9)
    assert got["tanh_state_slope"] == pytest.approx(1 - hs[-1] ** 2, rel=1e-9)


@pytest.mark.parametrize("cell", ["lstm_f3", "lstm_f3_fullvocab", "gru_z1", "irnn", "rnn_tanh_residual"])
def test_the_diagnostics_match_a_direct_autograd_computation(cell):
    # Item by item, the loss written out from the decoder's rows (4 forms, or the whole vocabulary for the ablation):
    # the ratio of the mean gradient norms at the cue and at the last distractor, and the saturation in its range.
    torch.manual_seed(1)
    spec, d = CELLS[cell], 9
    model = build(spec, 8, 16).double()
    x, y, cand = batch(stream(2, d, "validation"), d, 12, balanced=True)
    norms = []
    for i in range(len(y)):
        e = model.embedding(x[i:i + 1]).detach().requires_grad_(True)  # (1, d, E)
        zeros = torch.zeros(spec.get("num_layers", 1), 1, 16, dtype=torch.float64)
        features, _ = model.recur(e, (zeros, zeros) if spec["cell"] == "lstm" else zeros)
        logits = model.decoder(features[0, -1])  # (V,)
        loss = (F.cross_entropy(logits[None], y[i:i + 1]) if spec["loss"] == "vocab" else
                F.cross_entropy(logits[cand[i]][None], (cand[i] == y[i]).nonzero()[0]))
        (g,) = torch.autograd.grad(loss, e)
        norms.append((float(g[0, 0].norm()), float(g[0, d - 2].norm())))
    cue, last = np.mean(norms, axis=0)
    got = diagnose(model, spec, x, y, cand, curve=True)
    assert got[RATIO] == pytest.approx(cue / last, rel=1e-9)
    assert got["g"][-1] == pytest.approx(cue, rel=1e-9) and got["g"][1] == pytest.approx(last, rel=1e-9)
    (key,) = set(got) - {RATIO, "g"}
    assert key == {"lstm": "lstm_readout_slope", "gru": "tanh_state_slope", "rnn_relu": "relu_zero_share",
                   "rnn_tanh": "tanh_state_slope"}[spec["cell"]]
    assert 0 <= got[key] <= 1


def test_the_lstm_readout_slope_is_the_closed_form_of_a_bias_only_cell():
    # All weights 0, biases only: c_t = σ(b_f) c_(t-1) + σ(b_i) tanh(b_g), so after d steps
    # c = σ(b_i) tanh(b_g) (1 - σ(b_f)^d) / (1 - σ(b_f)), and the readout's slope is 1 - tanh²(c) for every unit.
    d, (bi, bf, bg) = 6, (0.5, 3.0, 1.0)
    model = build(CELLS["lstm_f3"], 4, 5).double()
    layer, hd = model.layers[0], 5
    with torch.no_grad():
        for p in (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_hh_l0):
            p.zero_()
        layer.bias_ih_l0.copy_(torch.tensor([bi] * hd + [bf] * hd + [bg] * hd + [0.0] * hd))
    x, y, cand = batch(stream(0, d, "test"), d, 4, balanced=True)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c = sig(bi) * math.tanh(bg) * (1 - sig(bf) ** d) / (1 - sig(bf))
    got = diagnose(model, CELLS["lstm_f3"], x, y, cand)
    assert got["lstm_readout_slope"] == pytest.approx(1 - math.tanh(c) ** 2, rel=1e-9)




def _tiny(**kw) -> LongrangeSettings:
    base = dict(cells=("rnn_tanh", "lstm_f3"), distances=(5,), seeds=1, steps=20, eval_every=10, batch_size=16,
                embedding_dim=8, hidden_dim=8, n_test=40, lrs=(0.01,), sweep_d=3, sweep_seeds=1, sweep_steps=2,
                ablation_distances=(), workers=1)
    return LongrangeSettings(**{**base, **kw})


def test_a_cached_job_is_reused_and_a_changed_hash_retrains(tmp_path):
    first = run_longrange(tmp_path, _tiny(), log=lambda *a: None)
    t = first["timing"]
    assert t["jobs_trained"] == 4 and t["jobs_reused"] == 0  # 2 cells × (1 sweep job + 1 grid job)
    assert len(list((tmp_path / "jobs").glob("*.json"))) == 4
    said = []
    again = run_longrange(tmp_path, _tiny(cpu_minutes=30.0), log=said.append)  # the budget is not in a job's hash
    assert again["timing"]["jobs_trained"] == 0 and again["timing"]["jobs_reused"] == 4 and not said[1:] == []
    assert again["cells"]["lstm_f3"]["by_d"]["5"]["seeds"] == first["cells"]["lstm_f3"]["by_d"]["5"]["seeds"]
    assert again["timing"]["cpu_seconds"] == t["cpu_seconds"]  # what the results cost, reused or not
    changed = run_longrange(tmp_path, _tiny(hidden_dim=12), log=lambda *a: None)  # another hash: trained again
    assert changed["timing"]["jobs_trained"] == 4 and changed["timing"]["jobs_reused"] == 0
    assert changed["cells"]["lstm_f3"]["parameters"] != first["cells"]["lstm_f3"]["parameters"]
    # the key covers what decides a job, and only that
    s = _tiny()
    k = job_key("lstm_f3", 5, 0, 0.01, 20, s)
    assert k == job_key("lstm_f3", 5, 0, 0.01, 20, _tiny(cpu_minutes=1.0, workers=2, cells=("lstm_f3",)))
    assert len({k, job_key("lstm_f3", 5, 1, 0.01, 20, s), job_key("lstm_f3", 5, 0, 0.02, 20, s),
                job_key("lstm_f3", 10, 0, 0.01, 20, s), job_key("lstm_f3", 5, 0, 0.01, 40, s),
                job_key("lstm_f1", 5, 0, 0.01, 20, s)}) == 6
    assert job_key("lstm_chrono", 5, 0, 0.01, 20, s) != job_key("lstm_chrono", 5, 0, 0.01, 20, _tiny(t_max=50.0))
    assert job_key("lstm_f3", 5, 0, 0.01, 20, s) == job_key("lstm_f3", 5, 0, 0.01, 20, _tiny(t_max=50.0))


@pytest.mark.slow
def test_a_gated_cell_solves_a_gap_the_tanh_rnn_does_not(tmp_path):
    # The tiny grid: both cells train the 4-way loss at d = 30 from N(0, 1) embeddings, one seed, 400 steps. Measured
    # (seed 0): lstm_f3 solved by step 250 (test 0.99); rnn_tanh ends at 0.24, its cue gradient ~1e-6 of the last
    # distractor's; the cell that solved nothing stops climbing (d = 60 beyond its frontier). ~5 s.
    r = run_longrange(tmp_path, _tiny(distances=(30, 60), steps=400, eval_every=25, hidden_dim=64,
                                      embedding_dim=32, batch_size=32, n_test=200, lrs=(2e-3,), cpu_minutes=0.3),
                      log=lambda *a: None)
    gated, tanh = r["cells"]["lstm_f3"]["by_d"]["30"], r["cells"]["rnn_tanh"]["by_d"]["30"]
    assert gated["successes"] == 1 and gated["median_steps"] <= 300
    assert tanh["successes"] == 0 and tanh["seeds"][0]["steps_run"] == 400
    assert wilson(tanh["seeds"][0]["correct"], 200)[0] <= CHANCE + 0.05  # not even half-way
    assert tanh["diagnostics"][RATIO]["end"] < 1e-3 < gated["diagnostics"][RATIO]["end"]
    assert r["cells"]["rnn_tanh"]["by_d"]["60"] == {"status": "beyond"}
    assert r["frontier"]["lstm_f3"]["largest_d"] == 30 and r["frontier"]["rnn_tanh"]["largest_d"] is None


def test_the_budget_marks_what_does_not_fit_not_run_never_failed(tmp_path):
    # A budget of a few CPU-seconds: the sweep and d = 5 fit, the worst case of d = 400 (200 steps × 400 words ×
    # the cell's rate) does not; it and everything above it are "not run", with what they would need.
    r = run_longrange(tmp_path, _tiny(distances=(5, 400, 800), cpu_minutes=0.05, steps=200, eval_every=1000),
                      log=lambda *a: None)
    c = r["cells"]["lstm_f3"]["by_d"]
    assert c["5"]["status"] == "run" and c["5"]["successes"] == 1  # solved (measured), so d = 400 is next
    assert c["400"]["status"] == "not run" and c["400"]["would_need_cpu_minutes"] > 0.05
    assert c["800"]["status"] == "not run"
    row = next(line for line in format_table(r).splitlines() if line.strip().startswith("lstm_f3"))
    assert row.count("not run") == 2 and "beyond" not in row
    assert r["timing"]["cpu_seconds"] <= 0.05 * 60


def test_chrono_and_orthogonal_cells_are_built_as_named():
    torch.manual_seed(0)
    lstm = build(CELLS["lstm_chrono"], 8, 64, t_max=400.0).layers[0]
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    assert 0 <= float(b[64:128].min()) and float(b[64:128].max()) <= math.log(399)
    torch.testing.assert_close(b[:64], -b[64:128])
    w = build(CELLS["rnn_tanh_orth"], 8, 16).layers[0].weight_hh_l0.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chrono cell needs T_max"):
        build(CELLS["gru_chrono"], 8, 16)


def _fake(cells_by_d: dict[str, dict[str, tuple[int, list[int]]]], seeds=5, steps=4000, ds=(5, 10, 20, 50)):
    """A result with (successes, steps to success of the solved seeds) per cell and d; absent d: beyond."""
    cells = {}
    for name, by in cells_by_d.items():
        out = {}
        for d in ds:
            if str(d) not in by:
                out[str(d)] = {"status": "beyond"}
                continue
            k, hit = by[str(d)]
            runs = [{"seed": i, "success": i < k, "steps_to_success": hit[i] if i < k else None, "accuracy": 1.0,
                     "steps_run": hit[i] if i < k else steps} for i in range(seeds)]
            out[str(d)] = summarise(runs, steps)
        cells[name] = {"spec": CELLS[name], "role": "grid", "start": "x", "lr": 0.002, "by_d": out}
    r = {"settings": {"distances": list(ds), "steps": steps, "seeds": seeds}, "cells": cells}
    r["frontier"] = {n: frontier(c, list(ds), seeds) for n, c in cells.items()}
    return r


def test_frontier_fisher_slopes_and_survival_come_from_the_counts():
    r = _fake({"rnn_tanh": {"5": (5, [100] * 5), "10": (2, [300, 400])},
               "lstm_f3": {"5": (5, [100] * 5), "10": (5, [200] * 5), "20": (4, [400] * 4), "50": (0, [])}})
    assert r["frontier"]["rnn_tanh"]["largest_d"] == 5 and r["frontier"]["rnn_tanh"]["next_d"] == 10
    assert r["frontier"]["lstm_f3"]["largest_d"] == 20 and r["frontier"]["lstm_f3"]["next"]["successes"] == 0
    p = fisher_tests(r)["rnn_tanh"]["lstm_f3"]
    assert p["5"] == pytest.approx(1.0) and p["10"] == pytest.approx(0.1667, abs=1e-4)  # 5/5 vs 2/5
    assert p["20"] is None and p["50"] is None  # the tanh RNN did not run there: no test
    sl = slopes(r)["lstm_f3"]
    assert sl["points"] == [(5, 100), (10, 200), (20, 400)] and sl["slope"] == pytest.approx(1.0)
    rows = [x for x in survival(r) if x["cell"] == "rnn_tanh" and x["d"] == 10]
    assert [(x["step"], x["solved"]) for x in rows] == [(0, 0), (300, 1), (400, 2), (4000, 2)]
    assert all(x["runs"] == 5 for x in rows)


def test_the_sweep_picks_most_solved_then_fewest_steps():
    runs = [{"lr": lr, "stopped": None, "success": ok, "steps_to_success": st if ok else None, "val_accuracy": va}
            for lr, ok, st, va in ((0.001, True, 900, 0.96), (0.001, True, 700, 0.96), (0.002, True, 300, 0.97),
                                   (0.002, True, 500, 0.96), (0.005, True, 100, 0.99), (0.005, False, None, 0.5))]
    lr, table = choose_lr(runs, (0.001, 0.002, 0.005))
    assert lr == 0.002 and table["0.005"]["successes"] == 1 and table["0.002"]["median_steps"] == 400


def test_summary_counts_a_failed_seed_as_never():
    runs = [{"success": True, "steps_to_success": 100, "accuracy": 1.0},
            {"success": True, "steps_to_success": 300, "accuracy": 0.97},
            {"success": False, "steps_to_success": None, "accuracy": 0.3}]
    s = summarise(runs, 1000)
    assert s["median_steps"] == 300 and s["successes"] == 2 and s["low"] < 2 / 3 < s["high"]
    assert summarise(runs[1:], 1000)["median_steps"] is None  # half failed: "> budget"


def test_the_report_section_comes_from_the_result(tmp_path):
    r = run_longrange(tmp_path, _tiny(cells=("rnn_tanh", "lstm_f3", "lstm_f3_fullvocab"), ablation_distances=(5,)),
                      log=lambda *a: None)
    md = "\n".join(report_lines(r, "experiment"))
    assert md.startswith("## Long-range") and "![longrange](experiment/longrange/longrange.png)" in md
    assert "Does gating move the frontier" in md and "Exact Fisher" in md
    assert "| lstm_f3_fullvocab | full vocabulary" in md
    assert f"**{r['timing']['cpu_seconds'] / 60:.1f} CPU-minutes**" in md
    for f in ("longrange.json", "survival.csv", "longrange.png", "survival.png", "steps_vs_d.png"):
        assert (tmp_path / f).stat().st_size > 100
    saved = json.loads((tmp_path / "longrange.json").read_text(encoding="utf-8"))
    assert saved["chance"] == CHANCE == 0.25 and saved["settings"]["n_test"] == 40
    assert saved["ablation"]["cells"] == ["lstm_f3", "lstm_f3_fullvocab"]


def test_the_cells_are_the_configs_cells():
    assert tuple(CELLS) == LONGRANGE_CELLS


def test_bad_settings_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown long-range cell 'transformer'; choose from rnn_tanh"):
        run_longrange(tmp_path, _tiny(cells=("transformer",)))
    with pytest.raises(ValueError, match=r"long-range cells \[\]: give at least one"):
        run_longrange(tmp_path, _tiny(cells=()))
    with pytest.raises(ValueError, match="long-range steps=0: give at least one training step"):
        run_longrange(tmp_path, _tiny(steps=0))
    with pytest.raises(ValueError, match="long-range seeds=0: give at least one seed"):
        run_longrange(tmp_path, _tiny(seeds=0))
    with pytest.raises(ValueError, match=r"long-range distances \[1, 5\].*each d must be >= 2"):
        run_longrange(tmp_path, _tiny(distances=(1, 5)))
    with pytest.raises(ValueError, match=r"long-range t_max=2.0: chrono init"):
        run_longrange(tmp_path, _tiny(t_max=2.0))
    with pytest.raises(ValueError, match="distance d=1: the task needs d >= 2"):
        example(np.random.default_rng(0), 1, 0)
