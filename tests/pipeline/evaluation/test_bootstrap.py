import numpy as np
import pytest

from pipeline.evaluation.bootstrap import cell_seed, clustered_cell, replicates
from pipeline.evaluation.intervals import wilson


def test_two_clusters_by_hand():
    """Clusters A (one word, right) and B (one word, wrong): a replicate draws two clusters with replacement, so its
    accuracy is 1 (AA, p = 1/4), 1/2 (AB or BA, p = 1/2) or 0 (BB, p = 1/4); the 95 % interval is [0, 1]."""
    reps = replicates([0, 1], {"m": [1, 0]}, 20_000, seed=7)["m"]
    freq = {v: float(np.mean(reps == v)) for v in (0.0, 0.5, 1.0)}
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
    assert freq[0.0] == pytest.approx(0.25, abs=0.01) and freq[0.5] == pytest.approx(0.5, abs=0.01)
    c = clustered_cell([0, 1], {"m": [True, False]}, 2000, seed=7, key="k")
    assert c["models"]["m"] == {"acc": 0.5, "low": 0.0, "high": 1.0} and c["clusters"] == 2


def test_unequal_clusters_weigh_by_words():
    """A (3 words, all right) and B (1 word, wrong): AA = 1, AB = 6/8... the ratio estimator, not a mean of means."""
    reps = replicates([0, 0, 0, 1], {"m": [1, 1, 1, 0]}, 4000, seed=1)["m"]
    assert set(np.round(np.unique(reps), 6)) == {0.0, 0.75, 1.0}


def test_clustering_widens_the_interval_of_a_few_repetitive_documents():
    """Five documents of 200 words, each all right or all wrong (a refrain a model knows or not): 1,000 words but
    five independent pieces of evidence. Wilson treats them as 1,000; the clustered interval must not."""
    clusters = np.repeat(np.arange(5), 200)
    hits = np.repeat([1, 1, 0, 1, 0], 200).astype(bool)
    c = clustered_cell(clusters.tolist(), {"m": hits}, 2000, seed=3, key="k")
    lo, hi = wilson(int(hits.sum()), len(hits))
    width = c["models"]["m"]["high"] - c["models"]["m"]["low"]
    assert c["models"]["m"]["acc"] == pytest.approx(0.6)
    assert width > 5 * (hi - lo) and width > 0.5
    # the same words as 1,000 one-word documents: the clustered interval comes back to Wilson's width
    c1 = clustered_cell(list(range(1000)), {"m": hits}, 2000, seed=3, key="k")
    assert c1["models"]["m"]["high"] - c1["models"]["m"]["low"] == pytest.approx(hi - lo, rel=0.2)


def test_paired_difference_uses_the_same_draws():
    """B is A with one word more right in each of 50 documents: the paired difference is 1/10 in every replicate,
    while each model's own interval is several points wide."""
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(50), 10)
    a = rng.random(500) < 0.3
    a[::10] = False
    b = a.copy()
    b[::10] = True
    c = clustered_cell(clusters.tolist(), {"a": a, "b": b}, 1000, seed=5, key="k", reference="a")
    d = c["paired"]["b"]
    assert d["diff"] == pytest.approx(0.1) and d["low"] == pytest.approx(0.1) and d["high"] == pytest.approx(0.1)
    assert c["models"]["a"]["high"] - c["models"]["a"]["low"] > 0.05
    assert "a" not in c["paired"]


def test_seeded_by_cell_key():
    args = (list(range(40)), {"m": [i % 3 == 0 for i in range(40)]}, 500)
    x, y = cell_seed(1, "x"), cell_seed(1, "y")
    assert np.array_equal(replicates(*args, seed=x)["m"], replicates(*args, seed=x)["m"])
    assert not np.array_equal(replicates(*args, seed=x)["m"], replicates(*args, seed=y)["m"])
