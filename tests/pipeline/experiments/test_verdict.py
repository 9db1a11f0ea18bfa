"""The pre-registered decision rules (pipeline/experiments/verdict.py) on hand-made comparisons."""
from pipeline.config import load_config
from pipeline.experiments.verdict import decide, kind_verdict, matched_checkpoint

CFG = load_config(None, [])  # decision_beyond 16, no difference within ±0.02 nats


def _seed(diff: tuple[float, float, float], eff_rnn, eff_lstm, copy_diff: float) -> dict:
    d, lo, hi = diff
    tables = {"kinds": {"prose": {
        "positions": 500, "documents": 40, "lengths": [0, 1, 16, 64],
        "models": {"rnn_tanh": {"effective": eff_rnn}, "lstm": {"effective": eff_lstm}},
        "paired": {"lstm": {"16": {"diff": d, "low": lo, "high": hi}}}}}}
    copy = {"prose": {"n": 80, "paired": {"diff": copy_diff, "low": copy_diff - 0.1, "high": copy_diff + 0.1}}}
    return {"tables": tables, "copy": copy}


def test_reads_further_needs_every_seed_and_every_condition():
    yes = _seed((0.05, 0.02, 0.08), 16, 64, 0.3)
    assert kind_verdict([yes, yes], "prose", CFG)["verdict"] == "reads further"
    assert kind_verdict([yes, _seed((0.05, -0.01, 0.1), 16, 64, 0.3)], "prose", CFG)["verdict"] == "unresolved"
    assert kind_verdict([yes, _seed((0.05, 0.02, 0.08), 64, 64, 0.3)], "prose", CFG)["verdict"] == "unresolved"
    assert kind_verdict([yes, _seed((0.05, 0.02, 0.08), 16, 64, -0.1)], "prose", CFG)["verdict"] == "unresolved"
    assert kind_verdict([yes, yes], "verse", CFG)["verdict"] == "unresolved"  # no table: nothing is decided


def test_no_difference_is_an_interval_inside_the_band_in_every_seed():
    flat = _seed((0.001, -0.015, 0.018), 16, 16, 0.0)
    assert kind_verdict([flat, flat], "prose", CFG)["verdict"] == "no difference"
    wide = _seed((0.001, -0.03, 0.018), 16, 16, 0.0)
    assert kind_verdict([flat, wide], "prose", CFG)["verdict"] == "unresolved"


def test_a_lead_that_vanishes_at_matched_quality_is_learning_faster():
    yes = _seed((0.05, 0.02, 0.08), 16, 64, 0.3)
    flat = _seed((0.001, -0.015, 0.018), 16, 16, 0.0)
    got = decide({"equal_pieces": [yes, yes], "matched": [flat, flat]}, ["prose"], CFG)
    assert got["kinds"]["prose"]["reading"].startswith("the LSTM learns faster")
    assert "Written before the run" in got["rules"]
    # a lead that merely misses one rule at matched quality is not "learns faster": it is unresolved
    shy = _seed((0.05, 0.02, 0.08), 16, 64, -0.001)
    got = decide({"equal_pieces": [yes, yes], "matched": [yes, shy]}, ["prose"], CFG)
    assert got["kinds"]["prose"]["reading"].startswith("unresolved: the LSTM reads further at equal pieces")


def test_the_matched_checkpoint_is_the_nearest_validation_loss():
    rnn = {"validations": [{"val_loss": 6.1}, {"val_loss": 5.8}, {"val_loss": 5.9}]}
    lstm = {"validations": [{"step": s, "val_loss": v, "pieces": s, "checkpoint": f"c{s}"}
                            for s, v in ((1, 6.3), (2, 5.85), (3, 5.6))]}
    got = matched_checkpoint(rnn, lstm)
    assert got["step"] == 2 and got["rnn_best_val_loss"] == 5.8
    assert matched_checkpoint({"validations": []}, lstm) is None
