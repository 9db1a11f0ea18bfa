import pytest

from pipeline.corpus.cleaning import words
from pipeline.evaluation.distance import (
    DISTANCE_BUCKETS,
    accuracy_by,
    bucket,
    distances,
    metric_suffix,
    position_bucket,
)


def test_distances_on_a_marathi_document():
    doc = "मी घरी गेलो . मी पुन्हा घरी आलो , आणि मी झोपलो ."
    ws = words(doc)
    assert ws == ["मी", "घरी", "गेलो", "मी", "पुन्हा", "घरी", "आलो", "आणि", "मी", "झोपलो"]
    assert distances(ws) == [None, None, None, 3, None, 4, None, None, 5, None]
    assert [bucket(d) for d in distances(ws)] == ["first", "first", "first", "1-4", "first", "1-4", "first",
                                                  "first", "5-16", "first"]


@pytest.mark.parametrize("d,b", [(1, "1-4"), (4, "1-4"), (5, "5-16"), (16, "5-16"), (17, "17-64"), (64, "17-64"),
                                 (65, "65-256"), (256, "65-256"), (257, "257+"), (10_000, "257+"), (None, "first")])
def test_bucket_edges(d, b):
    assert bucket(d) == b


def test_position_bucket_counts_context_words():
    # a target with 4 words before it has 4 words of context: bucket "1-4" (DESIGN §7), the first word "0"
    assert [position_bucket(c) for c in (0, 1, 4, 5, 16, 17, 256, 257)] == ["0", "1-4", "1-4", "5-16", "5-16",
                                                                            "17-64", "65-256", "257+"]
    with pytest.raises(ValueError, match="context_words must be >= 0"):
        position_bucket(-1)


def test_accuracy_by_keeps_empty_buckets_and_counts():
    t = accuracy_by(["1-4", "1-4", "first"], {"top1": [True, False, True]}, DISTANCE_BUCKETS)
    assert t["1-4"] == {"n": 2, "top1": 0.5}
    assert t["first"] == {"n": 1, "top1": 1.0}
    assert t["257+"] == {"n": 0, "top1": None}


def test_metric_suffix():
    assert [metric_suffix(b) for b in DISTANCE_BUCKETS] == ["d1_4", "d5_16", "d17_64", "d65_256", "d257plus",
                                                            "first"]
