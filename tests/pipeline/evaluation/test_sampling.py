"""The evaluation sample: seeded, word budget met exactly, long documents keep their share, never 'the first N'."""
import random

import pytest

from pipeline.evaluation.sampling import LENGTH_EDGES, stratum_of, word_sample


def _lengths(seed=0):
    # a split shaped like the full test split: many short documents first, a few very long ones at the end
    rng = random.Random(seed)
    return [rng.randint(2, 40) for _ in range(3000)] + [3000, 5200, 4100, 2600, 7000]


def test_no_budget_scores_every_word():
    assert word_sample([3, 0, 2], None, 0) == [[0, 1, 2], [], [0, 1]]
    assert word_sample([3, 2], 10, 0) == [[0, 1, 2], [0, 1]]


def test_budget_is_met_exactly_and_indices_are_valid():
    lengths = _lengths()
    for budget in (1, 777, 5000, 20_000):
        sel = word_sample(lengths, budget, seed=3)
        assert sum(map(len, sel)) == budget
        for n, idx in zip(lengths, sel):
            assert idx == sorted(set(idx)) and all(0 <= i < n for i in idx)


def test_long_documents_keep_their_share_of_words():
    lengths = _lengths()
    long_share = sum(n for n in lengths if n > 1024) / sum(lengths)
    sel = word_sample(lengths, 6000, seed=1)
    got = sum(len(s) for n, s in zip(lengths, sel) if n > 1024) / 6000
    assert long_share > 0.25 and got == pytest.approx(long_share, abs=1 / 6000 * len(LENGTH_EDGES) + 1e-9)
    # positions deep inside long documents are sampled (what "the first N documents" never reaches)
    assert any(i >= 256 for n, s in zip(lengths, sel) if n > 1024 for i in s)


def test_sample_is_seeded_and_not_the_first_documents():
    lengths = _lengths()
    a, b, c = (word_sample(lengths, 3000, seed=s) for s in (7, 7, 8))
    assert a == b and a != c
    short_docs = [d for d, s in enumerate(a) if s and lengths[d] <= 40]
    assert max(short_docs) > 2000  # spread over the split, not a prefix of it


def test_every_word_is_equally_likely_within_a_stratum():
    # 20 documents of 10 words (one stratum): over many seeds each document is chosen about equally often
    lengths = [10] * 20
    counts = [0] * 20
    for seed in range(400):
        for d, s in enumerate(word_sample(lengths, 50, seed)):
            counts[d] += len(s)
    expected = 400 * 50 / 20
    assert all(abs(c - expected) < 0.2 * expected for c in counts)


def test_strata_and_errors():
    assert [stratum_of(n) for n in (1, 16, 17, 64, 65, 256, 1024, 1025)] == [0, 0, 1, 1, 2, 2, 3, 4]
    with pytest.raises(ValueError, match="give a positive word budget"):
        word_sample([10, 10], 0, 0)
