"""Gradients made visible (DESIGN §8): g(d) is exact on a linear RNN; the exploding demonstration blows up unclipped."""
import math

import numpy as np
import pytest
import torch

from models.recurrent import RecurrentLM
from pipeline.experiments.gradients import (
    gradient_curves,
    decay_rate,
    exploding_demo,
    gradient_by_distance,
    gradient_metrics,
    half_life,
    plot_gradient_by_distance,
    validation_windows,
)


def linear_rnn(a: float, vocab: int = 50, size: int = 8) -> RecurrentLM:
    """rnn_relu with W_hh = a·I, zero biases and positive W_ih and embeddings: every pre-activation is positive, so
    ReLU is the identity and h_t = a·h_{t−1} + W x_t exactly (float64)."""
    torch.manual_seed(0)
    m = RecurrentLM(vocab, "rnn_relu", size, size, 1, 0.0, tie_weights=False, init="identity").double()
    with torch.no_grad():
        m.layers[0].weight_hh_l0.copy_(a * torch.eye(size, dtype=torch.float64))
        m.layers[0].weight_ih_l0.abs_()
        m.embedding.weight.abs_().add_(0.01)
    return m


@pytest.mark.parametrize("a", [0.5, 0.8, 0.95])
def test_linear_rnn_gradient_falls_exactly_as_a_to_the_d(a):
    torch.manual_seed(1)
    windows = torch.randint(0, 50, (6, 25))  # 24 inputs + the target
    g = gradient_by_distance(linear_rnn(a), windows)
    assert g.shape == (24,)
    np.testing.assert_allclose(g / g[0], a ** np.arange(24), rtol=1e-5)
    assert decay_rate(g) == pytest.approx(math.log(a), abs=1e-6)
    assert half_life(decay_rate(g)) == pytest.approx(math.log(2) / -math.log(a), rel=1e-5)


def test_targets_may_be_passed_apart_and_the_model_is_left_as_it_was():
    m = linear_rnn(0.7)
    m.train()
    windows = torch.randint(0, 50, (4, 11))
    g1 = gradient_by_distance(m, windows)
    g2 = gradient_by_distance(m, windows[:, :-1], targets=windows[:, -1])
    np.testing.assert_array_equal(g1, g2)
    assert m.training and all(p.grad is None for p in m.parameters())


def test_the_decay_rate_is_fitted_on_the_windows_interior():
    """A curve that falls as 0.5^d inside but bends at both ends (the target's own inputs, the window's start):
    the interior fit finds 0.5 exactly, a fit over the whole window does not."""
    from pipeline.experiments.gradients import fit_range

    lo, hi = fit_range(64)
    assert (lo, hi) == (2, 55)  # 2 nearest and 8 farthest distances left out
    g = 0.5 ** np.arange(64.0)
    g[:lo] *= 5.0
    g[hi + 1:] = g[hi] * 3.0  # flat, raised tail at the window's start
    assert decay_rate(g, lo, hi) == pytest.approx(math.log(0.5))
    assert abs(decay_rate(g) - math.log(0.5)) > 0.03  # the ends pull the whole-window slope flatter


def test_decay_rate_skips_zero_and_non_finite_distances():
    g = 0.5 ** np.arange(10.0)
    g[[3, 7]] = [0.0, np.nan]
    assert decay_rate(g) == pytest.approx(math.log(0.5))
    assert math.isnan(decay_rate(np.array([1.0, 0.0])))
    assert half_life(0.1) == math.inf


def test_untrained_tanh_rnn_vanishes_faster_than_an_lstm():
    # Measured over 6 seeds × hidden 32/128 (rate ≈ −0.51…−0.62 vs −0.44…−0.49); both vanish at init.
    torch.manual_seed(100)
    windows = torch.randint(0, 600, (16, 33))
    rates = {}
    for cell in ("rnn_tanh", "lstm"):
        torch.manual_seed(0)
        rates[cell] = decay_rate(gradient_by_distance(RecurrentLM(600, cell, 32, 32, 1, 0.0, True), windows))
    assert rates["rnn_tanh"] < rates["lstm"] < 0


def test_checkpoint_curves_at_init_and_trained(trained_checkpoint, prepared, tmp_path):
    a = validation_windows(prepared, 8, 16, seed=3)
    assert a.shape == (8, 17) and torch.equal(a, validation_windows(prepared, 8, 16, seed=3))
    from pipeline.checkpoints import load_checkpoint

    curves = gradient_curves(load_checkpoint(trained_checkpoint), prepared, n_windows=8, seed=0)
    assert curves["length"] == 16  # the run's data.bptt
    for when in ("init", "trained"):
        assert len(curves[when]["g"]) == 16 and all(v >= 0 for v in curves[when]["g"])
        assert math.isfinite(curves[when]["decay_rate"])
    assert set(gradient_metrics(curves)) == {"grad/decay_rate_init", "grad/decay_rate_trained",
                                             "grad/half_life_init", "grad/half_life_trained"}
    png = plot_gradient_by_distance({"lstm": curves}, tmp_path / "g.png")
    assert png.stat().st_size > 1000


@pytest.mark.slow
def test_unclipped_run_explodes_and_clipped_run_trains(tiny_config, prepared, tmp_path):
    import dataclasses

    cfg = tiny_config.replace(train=dataclasses.replace(tiny_config.train, runs_dir=str(tmp_path / "runs"),
                                                        trainer={"enable_progress_bar": False}))
    r = exploding_demo(cfg, prepared, steps=100, init_scale=1.5, lr=5.0, clip=0.25, out_dir=tmp_path,
                       log=lambda *a: None)
    un, cl = r["unclipped"], r["clipped"]
    assert un["diverged_at"] is not None or un["max_grad_norm"] > 100 * cl["max_grad_norm"]
    losses = np.array(cl["losses"])
    assert len(losses) == 100 and np.isfinite(losses).all() and cl["diverged_at"] is None
    assert losses[-10:].mean() < losses[:10].mean()
    assert len(cl["grad_norms"]) == 100
    assert (tmp_path / "exploding.png").stat().st_size > 1000 and (tmp_path / "exploding.json").exists()


def test_step_recorder_records_a_skipped_step_as_nan():
    """A diverged step returns no loss (Lightning hands the callback an empty dict): recorded as NaN, no crash."""
    from pipeline.experiments.gradients import StepRecorder

    rec = StepRecorder()
    rec.on_train_batch_end(None, None, {}, None, 0)
    rec.on_train_batch_end(None, None, {"loss": torch.tensor(2.5)}, None, 1)
    rec.on_train_batch_end(None, None, None, None, 2)
    assert math.isnan(rec.losses[0]) and rec.losses[1] == 2.5 and math.isnan(rec.losses[2])


def test_windows_longer_than_the_stream_are_refused(prepared):
    n = len(prepared.stream("validation"))
    with pytest.raises(ValueError, match=rf"the validation stream has {n} pieces, fewer than a window of {n + 1}; "
                                         r"use a shorter length"):
        validation_windows(prepared, 2, n)
