"""The controlled long-range task (DESIGN §8): a deterministic generator whose distractors carry no class
information, one fresh model per (cell, d, seed), and guards that the scoring measures what it claims."""
import json

import numpy as np
import pytest
import torch

from pipeline.config import LONGRANGE_CELLS
from pipeline.experiments.longrange import (
    ATTRACTORS,
    CELLS,
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
    format_table,
    run_longrange,
    stream,
    summarise,
    train_job,
    wilson,
)


def _job(cell, d, steps, seed=0, **kw):
    settings = {"steps": steps, "eval_every": kw.pop("eval_every", 50), "batch_size": 32, "embedding_dim": 32,
                "hidden_dim": kw.pop("hidden_dim", 64), "lr": 2e-3, "clip": 1.0, "n_test": kw.pop("n_test", 200)}
    return {"cell": cell, "d": d, "seed": seed, "settings": settings, **kw}


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


def test_labels_drawn_apart_from_the_cue_score_at_chance():
    # The same training that solves d = 5 (the control) learns nothing when the target's class ignores the cue:
    # then no token before the target carries the class, and the test accuracy must be chance's.
    torch.set_num_threads(1)
    # Measured: the control solves d = 5 in 350 steps.
    control = train_job(_job("rnn_tanh", 5, 1000, eval_every=25, n_test=400))
    assert control["success"]
    blind = train_job(_job("rnn_tanh", 5, 1000, eval_every=25, n_test=400, independent_labels=True))
    assert blind["steps_run"] == 1000 and not blind["success"]
    low, high = wilson(blind["correct"], blind["n"])
    assert low <= CHANCE <= high, blind["accuracy"]


@pytest.mark.slow
def test_a_tanh_rnn_fails_at_a_long_gap_where_a_gated_cell_succeeds():
    # Measured (seeds 0, 1, hidden 64): at d = 50 gru_z3 solved in 700 / 950 steps; rnn_tanh stayed at 0.264 after
    # 1500 steps. (The LSTMs, at either forget bias, need > 3000 steps from d = 20 on, so at this budget they cannot
    # stand for the gated cells here; the experiment's table shows it.) ~25 s on one core.
    torch.set_num_threads(1)
    gated = train_job(_job("gru_z3", 50, 1200))
    tanh = train_job(_job("rnn_tanh", 50, 1200))
    assert gated["success"] and gated["steps_run"] < 1200, gated
    assert not tanh["success"] and tanh["steps_run"] == 1200
    assert wilson(tanh["correct"], tanh["n"])[0] <= CHANCE + 0.05  # not even half-way


def test_tiny_run_writes_json_and_png_and_is_reused(tmp_path):
    torch.set_num_threads(1)
    kw = dict(distances=(5, 10), seeds=2, steps=20, eval_every=10, n_test=40, seed=3)
    r = run_longrange(["rnn_tanh", "lstm_f3"], tmp_path, workers=2, log=lambda *a: None, **kw)
    for name in ("rnn_tanh", "lstm_f3"):
        c = r["cells"][name]
        assert sorted(c["by_d"]) == ["10", "5"] and c["spec"] == CELLS[name]
        for b in c["by_d"].values():
            assert [s["seed"] for s in b["seeds"]] == [3, 4] and b["runs"] == 2
            assert all(s["n"] == 40 and 0 <= s["accuracy"] <= 1 and s["steps_run"] <= 20 for s in b["seeds"])
            assert b["low"] <= b["success_rate"] <= b["high"] and 0 <= b["mean_accuracy"] <= 1
        assert len(c["gradient"]["trained"]["g"]) == 10  # seed 3 at the longest d
    saved = json.loads((tmp_path / "longrange.json").read_text(encoding="utf-8"))
    assert saved["chance"] == CHANCE == 0.25 and saved["settings"]["n_test"] == 40 and saved["settings_hash"]
    assert (tmp_path / "longrange.png").stat().st_size > 1000
    assert "lstm_f3" in format_table(r) and "d=10" in format_table(r)
    # a worker process gives what the same job gives here (seeded, one thread)
    one = train_job(_job("rnn_tanh", 10, 20, seed=4, eval_every=10, n_test=40))
    assert {k: one[k] for k in ("correct", "steps_run")} == \
        {k: r["cells"]["rnn_tanh"]["by_d"]["10"]["seeds"][1][k] for k in ("correct", "steps_run")}
    said = []
    again = run_longrange(["rnn_tanh", "lstm_f3"], tmp_path, workers=1, log=said.append, **kw)
    assert "reusing" in said[0] and again["settings_hash"] == saved["settings_hash"]


def test_summary_counts_a_failed_seed_as_never():
    runs = [{"success": True, "steps_to_success": 100, "accuracy": 1.0},
            {"success": True, "steps_to_success": 300, "accuracy": 0.97},
            {"success": False, "steps_to_success": None, "accuracy": 0.3}]
    s = summarise(runs, 1000)
    assert s["median_steps"] == 300 and s["successes"] == 2 and s["low"] < 2 / 3 < s["high"]
    assert summarise(runs[1:], 1000)["median_steps"] is None  # half failed: "> budget"


def test_the_cells_are_the_configs_cells():
    assert tuple(CELLS) == LONGRANGE_CELLS


def test_bad_settings_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="unknown long-range cell 'transformer'; choose from rnn_tanh, irnn"):
        run_longrange(["transformer"], "unused")
    with pytest.raises(ValueError, match=r"long-range cells \[\]: give at least one"):
        run_longrange([], "unused")
    with pytest.raises(ValueError, match="long-range steps=0: give at least one training step"):
        run_longrange(["lstm_f1"], "unused", steps=0)
    with pytest.raises(ValueError, match="long-range seeds=0: give at least one seed"):
        run_longrange(["lstm_f1"], "unused", seeds=0)
    with pytest.raises(ValueError, match=r"long-range distances \[1, 5\]: each d must be >= 2"):
        run_longrange(["lstm_f1"], "unused", distances=(1, 5))
    with pytest.raises(ValueError, match="distance d=1: the task needs d >= 2"):
        example(np.random.default_rng(0), 1, 0)
