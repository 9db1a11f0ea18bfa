"""reports/experiment.md, part by part, from hand-made summaries."""
from pipeline.evaluation.probes import summarize
from pipeline.experiments.report import probe_section
from tests.conftest import hand_scored_probes


def _summary(rows):
    """(kind, distance, right, n, candidates) -> a probe summary as the experiment stores it."""
    return summarize(*hand_scored_probes(rows))


def test_probe_section_shows_distance_only_where_the_ceiling_is_above_chance():
    lstm = _summary([("gender_agreement", 2, 54, 60, 3), ("gender_agreement", 8, 30, 60, 3),
                     ("recall", 3, 16, 60, 4), ("recall", 8, 15, 60, 4)])
    rnn = _summary([("gender_agreement", 2, 21, 60, 3), ("gender_agreement", 8, 20, 60, 3),
                    ("recall", 3, 14, 60, 4), ("recall", 8, 15, 60, 4)])
    text = "\n".join(probe_section([("lstm", {"probes": lstm}), ("rnn_tanh", {"probes": rnn}),
                                    ("kn4gram", {"top1": 0.1})]))  # a model scored without probes
    assert "| kind | chance % | shortest d | lstm | rnn_tanh |" in text
    assert "| gender_agreement | 33.3 | 2 (n=60) | 90.0 [79.9, 95.3], informative | 35.0 [24.2, 47.6], at chance |" \
        in text
    assert "**gender_agreement** (chance 33.3 %" in text and "| lstm | 90.0 [79.9, 95.3] | 50.0" in text
    assert "| rnn_tanh | 35.0" not in text  # an uninformative model's curve is not shown ...
    assert "At chance even at d=2, so saying nothing about distance: rnn_tanh." in text  # ... but named
    assert ("**recall**: at chance even at its shortest distance (d=3) for every model, so it says nothing about "
            "distance.") in text
    assert probe_section([("lstm", {"top1": 0.1})])[-2] == "No probe file was scored."
