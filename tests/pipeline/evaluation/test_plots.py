"""The evaluation plots draw whatever side of its point a rounded interval bound lands on."""
from __future__ import annotations

from pipeline.evaluation.plots import write_all


def _row(balanced: float, low: float, high: float) -> dict:
    return {"n": 40, "correct": 20, "accuracy": balanced, "chance": 0.5, "low": low, "high": high,
            "balanced": balanced, "balanced_low": low, "balanced_high": high, "balanced_chance": 0.5, "margin": 0.1}


def test_probes_plot_is_written_when_a_bound_lies_on_the_wrong_side_of_its_point(tmp_path, capsys):
    """A Wilson bound at 0 % or 100 % can come out a rounding error past the point: a negative bar length, which
    matplotlib refuses ("'yerr' must not contain negative values"); the plot clips it and is written."""
    table = {"1": _row(1.0, 0.9, 1.0 - 1e-12), "4": _row(0.0, 1e-12, 0.1), "16": _row(0.5, 0.5 + 1e-15, 0.6),
             "all": _row(0.5, 0.4, 0.6)}
    results = {"models": {"lstm": {"probes": {"kinds": {"agreement": table}}},
                          "rnn": {"probes": {"kinds": {"agreement": {**table, "4": _row(0.25, 0.2, 0.2 - 1e-15)}}}}}}
    files = write_all(results, tmp_path)
    assert [f.name for f in files] == ["probes_by_distance.png"], capsys.readouterr().out
    assert files[0].stat().st_size > 1000
    assert "could not draw" not in capsys.readouterr().out
