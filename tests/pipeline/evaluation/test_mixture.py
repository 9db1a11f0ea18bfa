"""The mixture of the network, the n-gram and the cache: a proper distribution, EM that finds the right weights,
fitted weights that beat every part alone on text built to need both the n-gram and the cache."""
import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.config import MixtureConfig
from pipeline.evaluation import MIXES, MixtureScorer, MixtureWeights, NeuralScorer, evaluate_scorer, fit, read_all
from pipeline.evaluation.mixture import cache_distributions
from pipeline.evaluation.mixture_fit import em_weights
from pipeline.evaluation.ngram import KneserNey

SYLLABLES = ["का", "मा", "रा", "ली", "नू", "पे", "सो", "ती", "गा", "धू", "बी", "चे", "वा", "हो", "जु", "टा"]
TEMPLATES = ["{n} आज सकाळी शाळेत गेला .", "{n} घरी परत आला आणि जेवला .", "मग {n} बाजारात भाजी आणायला गेला .",
             "{n} म्हणाला की पाऊस खूप पडला ."]


def synthetic_docs(n_docs: int, seed: int) -> list[str]:
    """Templated sentences (an n-gram learns them from other documents) around a name that is new in every document
    and recurs inside it (only a cache can know it)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        name = "".join(rng.choice(SYLLABLES) for _ in range(3))
        docs.append(" ".join(rng.choice(TEMPLATES).format(n=name) for _ in range(rng.randint(4, 8))))
    return docs


@pytest.fixture(scope="module")
def net(trained_checkpoint, tiny_config):
    ec = dataclasses.replace(tiny_config.eval, max_words=None, context_lengths=(1, 4), context_curves={"short": 4})
    return NeuralScorer(load_local(trained_checkpoint), ec, "lstm")


def test_em_recovers_known_weights():
    rng = np.random.default_rng(0)
    # two parts; each word was drawn from part 0 with probability 0.3, and the part that drew it gives it a high
    # probability: EM on the rows must find 0.3 / 0.7
    drawn = rng.random(20000) < 0.3
    probs = np.where(drawn[:, None], [0.5, 0.01], [0.01, 0.5]) * rng.uniform(0.8, 1.2, (20000, 2))
    lam = em_weights(probs, 200)
    assert lam == pytest.approx([0.3, 0.7], abs=0.02) and lam.sum() == pytest.approx(1.0)
    assert em_weights(np.c_[probs[:, :1], np.zeros(20000)])[1] == 0.0  # a part that never helps gets nothing


def test_cache_attends_only_to_earlier_words_in_its_window():
    keys = torch.eye(4)  # word i's key is e_i: a query equal to e_0 looks only at word 0 (when θ is large)
    ids = [0, 1, 0, 2]
    dist = cache_distributions(keys[[0, 3]], keys, ids, [2, 3], theta=50.0, window=2, vocab=3)
    # target at position 2 sees words 0, 1 (window 2) and its query is e_0: nearly all mass on word id 0
    assert dist[0, 0] > 0.99 and dist[0].sum() == pytest.approx(1.0)
    # target at position 3 sees words 1, 2 only (word 0 is outside the window): its query e_3 matches none, so the
    # mass is spread evenly over ids 1 and 0 (position 2 holds id 0)
    assert dist[1, 0] == pytest.approx(0.5) and dist[1, 1] == pytest.approx(0.5) and dist[1, 2] == 0
    assert cache_distributions(keys[[0]], keys, ids, [0], 1.0, 5, vocab=3).sum() == 0  # nothing before: empty


def test_mixture_probabilities_sum_to_at_most_one(net):
    lm = KneserNey(3).fit(synthetic_docs(60, 1))
    doc = synthetic_docs(1, 2)[0].split()
    weights = MixtureWeights(("net", "kn", "cache"), {"all": [0.4, 0.4, 0.2]}, theta=0.5, window=50,
                             context_dependent=False)
    mix = MixtureScorer(net, lm, weights, candidates=10)
    ctx = " ".join(doc[:12])
    # every word any part can give mass to: the n-gram's vocabulary, the cache's words, and the network's every
    # word of up to two pieces (the rest of the network's mass lies on longer words, which only lowers the sum)
    from tests.support import brute_force

    ids = net.pred.context_ids(ctx)
    words = {w for w, _ in brute_force(net.model, net.tok, ids, 10 ** 9)}
    words |= {w for w in lm.vocab if w not in ("<unk>", "<s>", "</s>") and any(ch.isalpha() for ch in w)}
    words |= set(doc[:12])
    words = sorted(w for w in words if " " not in w)
    total = sum(math.exp(v) for v in mix.score([ctx], [words])[0])
    assert 0.3 < total <= 1.0 + 1e-6, total
    # and it is exactly λ-weighted part by part: the network's and the cache's totals on their own, the n-gram's from
    # the n-gram directly over its own vocabulary (a word it has never seen gets none of its <unk> mass)
    alone = {p: sum(math.exp(v) for v in MixtureScorer(net, lm, MixtureWeights((p,), {"all": [1.0]}, 0.5, 50, False),
                                                        10).score([ctx], [words])[0]) for p in ("net", "cache")}
    known = [w for w in words if w in lm.index]
    kn = float(np.exp(lm.log_prob([doc[:12]] * len(known), known)).sum())
    assert total == pytest.approx(0.4 * alone["net"] + 0.4 * kn + 0.2 * alone["cache"], rel=1e-6)


@pytest.mark.slow
def test_fitted_weights_beat_every_part_alone_on_text_that_needs_both(net, tiny_config):
    lm = KneserNey(3).fit(synthetic_docs(300, 1))
    mc = MixtureConfig(thetas=(0.1, 1.0), windows=(50, 200), fit_words=1500, candidates=10)
    ec = dataclasses.replace(net.ec, max_words=None, context_lengths=(1, 4), context_curves={"short": 4})
    valid, test = synthetic_docs(60, 2), synthetic_docs(40, 3)
    weights, info = fit(net, lm, ("net", "kn", "cache"), valid, mc, ec)
    assert info["validation_words"] == 1500 and weights.theta in mc.thetas and weights.window in mc.windows
    ppl = {}
    for name, parts, w in [("mixture", None, weights),
                           ("net", ("net",), MixtureWeights(("net",), {"all": [1.0]}, context_dependent=False)),
                           ("kn", ("kn",), MixtureWeights(("kn",), {"all": [1.0]}, context_dependent=False)),
                           ("net+kn", None, fit(net, lm, ("net", "kn"), valid, mc, ec)[0])]:
        r = evaluate_scorer(MixtureScorer(net, lm, w, 10, name), test, ec)
        ppl[name] = r["word_ppl"]
    # the cache knows each document's name, the n-gram its templates, so the three-way mixture beats every part
    # alone and the mixture without the cache
    assert ppl["mixture"] < min(ppl["net"], ppl["kn"], ppl["net+kn"]), ppl
    # the fitted λ beat uniform ones on the validation words they were fitted on (EM climbs a concave likelihood)
    uniform = MixtureWeights(weights.parts, {"all": [1 / 3] * 3}, weights.theta, weights.window, False)
    on_valid = evaluate_scorer(MixtureScorer(net, lm, uniform, 10), valid, dataclasses.replace(ec, max_words=1500))
    assert info["validation_word_ppl"] < on_valid["word_ppl"]
    # and the weights say so: in the classes with a cache, both the n-gram and the cache carry real weight
    lams = np.array([v for c, v in weights.weights.items() if not c.endswith("nocache") and c != "all"])
    assert (lams[:, 1].max() > 0.1) and (lams[:, 2].max() > 0.1), weights.weights


def test_a_class_with_few_validation_words_keeps_the_pooled_weights():
    from pipeline.evaluation.mixture_fit import MIN_CLASS_WORDS, fit_weights

    rng = np.random.default_rng(1)
    n = 2000
    probs = rng.uniform(0.01, 1.0, (n, 2))
    classes = [(3, False)] * (n - 10) + [(0, False)] * 10  # 10 words of class o0: too few to fit
    probs[-10:, 1] = 0.0  # they alone would fit the network's λ = 1
    w, _ = fit_weights(("net", "kn"), {0.0: {0: probs}}, classes, True, 50)
    assert 10 < MIN_CLASS_WORDS and "o0" not in w.weights and "o3" in w.weights
    assert list(w.lam("o0")) == w.weights["all"] and w.weights["all"][0] < 1.0


def test_only_the_parts_candidates_are_ranked(net):
    """A target no part proposes is scored but never enters the ranking, however long the list."""
    lm = KneserNey(3).fit(synthetic_docs(60, 1))
    mix = MixtureScorer(net, lm, MixtureWeights(("net", "kn", "cache"), {"all": [0.4, 0.4, 0.2]}, 0.5, 50, False),
                        candidates=10)
    doc = synthetic_docs(1, 2)[0].split()[:12] + ["झक्झकाटपुरी"]
    top, logp = read_all(mix, [doc], [[12]], 1000)
    assert "झक्झकाटपुरी" not in top[(0, 12)] and len(top[(0, 12)]) >= 10
    assert math.isfinite(logp[(0, 12)])


@pytest.mark.slow
def test_the_mixtures_typist_searches_again_only_where_its_first_list_cannot_say(net, monkeypatch):
    """Under a typed prefix, the row's search with nothing typed (exact words and a bound on the rest) settles most
    rows; a search under the prefix runs for the others; the characters typed are those of the full ranking under
    every prefix."""
    from pipeline.evaluation import type_documents
    from pipeline.evaluation.scorer import TargetBatch

    lm = KneserNey(3).fit(synthetic_docs(80, 3))
    weights = MixtureWeights(("net", "kn", "cache"), {"all": [0.3, 0.5, 0.2]}, theta=0.5, window=50,
                             context_dependent=False)
    docs = [d.split() for d in synthetic_docs(6, 4)]
    targets = [[j for j, t in enumerate(d) if t != "."] for d in docs]
    mix = MixtureScorer(net, lm, weights, candidates=10)
    fast = type_documents(mix, docs, targets, 3)
    assert 0 < mix.settle_stats["searched"] < mix.settle_stats["rows"]
    full_mix = MixtureScorer(net, lm, weights, candidates=10)
    words = TargetBatch.words
    monkeypatch.setattr(TargetBatch, "words", lambda self, k, prefixes=None, rows=None, settle=None:
                        words(self, k, prefixes, rows))  # every bar ranked in full
    assert type_documents(full_mix, docs, targets, 3) == fast and full_mix.settle_stats["rows"] == 0
    assert any(t > 0 for t, _ in fast.values())


def test_the_mixtures_top_k_is_exact(net):
    """mixed_search's top k is the top k of the mixture's exact probability over every word the parts can name: the
    n-gram's vocabulary, the cache's words and a very wide network search, scored one by one."""
    from pipeline.evaluation.mixture import mix_probs
    from pipeline.evaluation.mixture_search import mixed_search
    from pipeline.evaluation.ngram import context_tail

    lm = KneserNey(3).fit(synthetic_docs(80, 3))
    weights = MixtureWeights(("net", "kn", "cache"), {"all": [0.5, 0.3, 0.2]}, theta=0.5, window=50,
                             context_dependent=False)
    mix = MixtureScorer(net, lm, weights, candidates=4)
    doc = synthetic_docs(1, 5)[0].split()[:30] + ["क"]
    targets = [[j for j, t in enumerate(doc) if t != "."][5:]]
    checked = 0
    for nb in net.read([doc], targets, logp=False, vectors=True):
        feats = mix.features([doc], [[j for _, j in nb.keys]], nb.vectors, full=True)
        for r, key in enumerate(nb.keys):
            ctx, feat = context_tail(doc, key[1]), feats[key]
            state = tuple(s[:, r:r + 1] for s in nb.state)
            lp = nb.next_lp[r:r + 1]
            for prefix in ("", doc[key[1]][:1]):
                row = mixed_search(weights, lm, net.pred, 4, state, lp, [ctx], [feat], [prefix], 3)[0]
                wide, _ = net.pred.search_words(state, lp, 128, [prefix])
                names = {x for x, _ in wide[0]} | {x for x in feat["cache"] if x.startswith(prefix)} | \
                    {lm.vocab[i] for i in np.flatnonzero(lm.word_ok) if lm.vocab[i].startswith(prefix)}
                names = sorted(names)
                net_lp = dict(zip(names, net.pred.word_log_prob(state.__class__(s.expand(-1, len(names), -1)
                                                                                for s in state),
                                                                 lp.expand(len(names), -1), names).tolist()))
                probs = mix_probs(weights, lm, feat, ctx, names, net_lp, True)
                best = sorted(zip(names, probs), key=lambda t: -t[1])[:3]
                assert row.proven(3)
                assert [x for x, _ in row.words[:3]] == [x for x, _ in best]
                assert [p for _, p in row.words[:3]] == pytest.approx([p for _, p in best], rel=1e-4)
                checked += 1
    assert checked >= 40


def test_mix_command_fits_and_writes_every_row(trained_checkpoint, tiny_config, tmp_path):
    from types import SimpleNamespace

    from pipeline.evaluation.commands import mix_cli as cli
    from pipeline.evaluation.mixture import mix_label

    mixes = {mix_label("net", parts, 4): parts for parts in MIXES}

    cfg = tiny_config.replace(eval=dataclasses.replace(tiny_config.eval, max_words=80, context_lengths=(1,),
                                                       context_curves={"short": 1}, probes=None),
                              mixture=MixtureConfig(thetas=(0.3,), windows=(50,), fit_words=200, candidates=5))
    assert cli(SimpleNamespace(model=str(trained_checkpoint), data=None, save=False, out=str(tmp_path / "mix")),
               cfg) == 0
    import json

    res = json.loads((tmp_path / "mix" / "results.json").read_text())
    assert list(res["models"]) == ["lstm-1x32", *mixes, "4-gram"]
    assert all(r["words"] == 80 for r in res["models"].values())
    # each mix paired with the network on the same words, by kind (the tiny corpus is all "short")
    assert res["paired_reference"] == "lstm-1x32" and set(res["kinds"]["short"]["top1"]["paired"]) == {
        *mixes, "4-gram"}
    weights = json.loads((tmp_path / "mix" / "mixture_weights.json").read_text())
    for name, w in weights.items():
        assert tuple(w["parts"]) == mixes[name]
        assert all(abs(sum(lam) - 1) < 1e-4 for lam in w["weights"].values())
    assert res["mixture_fit"]["net + 4-gram + cache, one fixed λ"]["validation_word_ppl"] > 0


def test_the_cache_can_leave_out_what_was_just_typed():
    """skip = s: a target reads keys [t - W, t - s): the last s words are not suggested back."""
    from pipeline.evaluation.mixture import cache_history

    keys = torch.eye(4)
    ids = [0, 1, 2, 0]
    dist = cache_distributions(keys[[3]], keys, ids, [4], theta=1.0, window=10, vocab=3, skip=2)
    assert dist[0, 2] == 0 and dist[0, 0] > 0 and dist[0, 1] > 0  # word 2 (and the last word, id 0) left out
    assert dist[0].sum() == pytest.approx(1.0)
    assert cache_distributions(keys[[0]], keys, ids, [2], 1.0, 10, vocab=3, skip=2).sum() == 0  # nothing left
    assert [cache_history(n, 10, 0, 2) for n in (0, 1, 2, 3, 20)] == [0, 0, 0, 1, 8]


def test_the_fit_chooses_a_skip_on_validation(net, tiny_config):
    from pipeline.corpus.prepare import documents

    lm = KneserNey(3).fit(synthetic_docs(60, 1))
    mc = MixtureConfig(thetas=(0.3,), windows=(50,), fit_words=200, cache_skips=(0, 2), rank_words=60)
    w, info = fit(net, lm, ("net", "kn", "cache"), documents(tiny_config, "validation"), mc, tiny_config.eval)
    assert w.skip in (0, 2) and w.window == 50 and info["validation_words"] == 200
    # chosen by the bar: among the skips that echo at most echo_limit × as often as the text repeats itself, the one
    # whose top 3 holds the next word most often on the ranking sample; none within the limit: the least echo
    skips = info["skips"]
    assert set(skips) == {"0", "2"} and all(v["rank_words"] == 60 and 0 <= v["echo_rate"] <= 1 for v in skips.values())
    within = [v for v in skips.values() if v["echo_rate"] <= mc.echo_limit * v["text_repeat_rate"]]
    assert info["skip_choice"] == {"skip": w.skip, "echo_limit": mc.echo_limit, "within_limit": bool(within)}
    if within:
        assert skips[str(w.skip)]["top3"] == max(v["top3"] for v in within)
    else:
        assert skips[str(w.skip)]["echo_rate"] == min(v["echo_rate"] for v in skips.values())
    assert load_roundtrip(w).skip == w.skip
    # a limit no skip meets: the skip that echoes least
    strict = dataclasses.replace(mc, echo_limit=1e-9)
    w2, info2 = fit(net, lm, ("net", "kn", "cache"), documents(tiny_config, "validation"), strict, tiny_config.eval)
    echoes = {k: v["echo_rate"] for k, v in info2["skips"].items()}
    assert min(echoes.values()) > 0 and len(set(echoes.values())) > 1  # the fixture's skips echo, and differently
    assert not info2["skip_choice"]["within_limit"] and echoes[str(w2.skip)] == min(echoes.values())


def load_roundtrip(w):
    from pipeline.evaluation import MixtureWeights

    d = w.to_dict()
    return MixtureWeights(tuple(d["parts"]), d["weights"], d["theta"], d["window"], d["context_dependent"],
                          tuple(d["history_edges"]), d["skip"])
