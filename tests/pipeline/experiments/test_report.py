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


def _model(top1: float, n_first: int, by: dict[str, tuple[int, int]]) -> dict:
    """A model's evaluation as `evaluate` stores it; by: bucket -> (right, n)."""
    words = sum(n for _, n in by.values())
    return {"top1": top1, "top5": top1 + 0.05, "word_ppl": 100.0, "words": words, "documents": 10,
            "words_available": words, "documents_available": 10, "max_words": None, "seed": None,
            "by_distance": {b: {"n": n, "top1": r / n, "top5": r / n} for b, (r, n) in by.items()}}


def test_mixture_section_says_which_part_earns_its_weight_in_which_bucket():
    from pipeline.experiments.report import mixture_section

    net = _model(0.10, 0, {"1-4": (100, 400), "first": (200, 2000)})
    cache = _model(0.12, 0, {"1-4": (200, 400), "first": (196, 2000)})   # +25 points near: separated
    kn = _model(0.13, 0, {"1-4": (104, 400), "first": (300, 2000)})      # +1 near (overlap), +5 on first words
    both = _model(0.15, 0, {"1-4": (210, 400), "first": (290, 2000)})
    res = {"k": 5, "models": {"lstm": net, "net + cache": cache, "net + 4-gram": kn, "net + 4-gram + cache": both,
                              "4-gram": _model(0.13, 0, {"1-4": (90, 400), "first": (300, 2000)})},
           "mixture_fit": {"net + 4-gram + cache": {"validation_word_ppl": 80.0, "theta": 0.1, "window": 500,
                                                    "weights": {"all": [0.5, 0.4, 0.1]}}}}
    text = "\n".join(mixture_section(res, "experiment/mixture"))
    assert "| net + cache − lstm | +25.0 ▲ | -0.2 |" in text
    assert "| net + 4-gram − lstm | +1.0 | +5.0 ▲ |" in text
    assert "| net + 4-gram + cache − lstm | +27.5 ▲ | +4.5 ▲ |" in text
    assert "| net + 4-gram + cache | 80 | 0.1 | 500 | all: 0.50, 0.40, 0.10 |" in text
    assert "(experiment/mixture/accuracy_by_distance.png)" in text
