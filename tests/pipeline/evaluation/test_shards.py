"""The whole-split passes on several forked workers give what one process gives."""
import dataclasses

import pytest
import torch

from pipeline.evaluation.shards import balanced


def test_shards_are_balanced_by_cost_and_keep_document_order():
    weights = [9, 1, 1, 1, 8, 1, 1]
    shards = balanced(weights, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(weights)))  # every document, once
    assert all(s == sorted(s) for s in shards)
    assert sorted(sum(weights[i] for i in s) for s in shards) == [11, 11]
    assert balanced([5], 3) == [[0]]  # no empty shard


@pytest.mark.slow
def test_two_workers_rank_score_and_type_what_one_process_does(tiny_config, mixed_checkpoint):
    from pipeline.checkpoints import load_local
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import MixtureScorer, NeuralScorer, mixture_of, run_scorer, sampled_targets
    from pipeline.evaluation.loop import _score

    bundle = load_local(mixed_checkpoint)
    mixture = mixture_of(bundle)
    docs = documents(tiny_config, "test")
    got = {}
    for workers in (1, 2):
        ec = dataclasses.replace(tiny_config.eval, max_words=300, workers=workers)
        mixed = MixtureScorer(NeuralScorer(bundle, ec, "net"), mixture.lm, mixture.weights, mixture.candidates)
        tokens, targets, chosen, _ = sampled_targets(docs, ec)
        with torch.no_grad():
            *_, top, logp, _ = _score(mixed, docs, ec, ec.k, "test")
            typed = run_scorer(mixed, tokens, targets, chosen, ec.keystroke_slots, workers)
        got[workers] = (top, logp, typed, dict(mixed.search_stats), dict(mixed.settle_stats))
    one, two = got[1], got[2]
    assert len(docs) > 1 and len(one[0]) > 100 and two[0] == one[0]  # the same top k at every scored word
    assert two[1].keys() == one[1].keys() and all(two[1][k] == pytest.approx(v, abs=1e-4) for k, v in one[1].items())
    assert two[2]["typed"] == one[2]["typed"] and two[2]["echo"] == one[2]["echo"]
    # the workers' counters come back to the parent's scorer: the same searches were run
    assert two[3] == one[3] and two[4] == one[4] and one[3]["rows"] > 0
