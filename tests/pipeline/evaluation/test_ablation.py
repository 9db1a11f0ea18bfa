import dataclasses
import math
import random
from collections import Counter

import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.evaluation import NeuralScorer, NgramScorer
from pipeline.evaluation.ablation import FrequencyClasses, context_ablation, train_counts
from pipeline.evaluation.ablation_tables import ablation_lines, ablation_tables, effective_context
from pipeline.evaluation.ngram import KneserNey
from pipeline.evaluation.sampling import sample_of
from pipeline.evaluation.text_kinds import scored_words
from pipeline.evaluation.warm import WarmStarts
from tests.support import sample_texts

TEXTS = sample_texts("test", 40)
TRAIN = sample_texts("train", 300)


@pytest.fixture(scope="module")
def ec(tiny_config):
    return dataclasses.replace(tiny_config.eval, ablation_contexts={"all": 8}, ablation_lengths=(1, 2, 4, 8),
                               ablation_shuffle_lengths=(2,), ablation_shuffle_positions=40, copy_targets=60,
                               bootstrap_replicates=200, warm_words=20, warm_pool=4)


@pytest.fixture(scope="module")
def setup(ec):
    tokens, targets, chosen, _ = sample_of(TEXTS, None, 1)
    words = scored_words(tokens, targets, chosen, [""] * len(TEXTS), ec)
    return tokens, targets, words, WarmStarts(tokens, ec.warm_words, ec.warm_pool, 5), train_counts(TRAIN)


class Recording:
    """A scorer wrapper that keeps every row it is asked to read (the rows the ablation builds)."""

    def __init__(self, inner):
        self.inner, self.name, self.search_stats, self.rows = inner, inner.name, None, []

    def read(self, docs, targets, bos=True, logp=True, warm=None, rank=True):
        self.rows += [(list(d), list(t), w, bos) for d, t, w in zip(docs, targets, warm or [None] * len(docs))]
        return self.inner.read(docs, targets, bos, logp, warm, rank)


@pytest.fixture(scope="module")
def network(trained_checkpoint, ec):
    return NeuralScorer(load_local(trained_checkpoint), ec, "lstm")


@pytest.fixture(scope="module")
def net_result(network, setup, ec):
    tokens, targets, words, ws, counts = setup
    rec = Recording(network)
    return rec, context_ablation(rec, tokens, targets, words, ws, ec, counts)


def _plain_word_loss(scorer, segments, row: list[str], j: int) -> float:
    """−log P(row[j]) by one plain forward from zeros over the segments (each from its bos) and row[:j] (no bos)."""
    ids = [i for seg in segments for i in scorer._encode(list(seg))[0]]
    ctx, starts = scorer._encode(row[:j + 1], False)
    off = len(ids)
    ids += ctx
    with torch.no_grad():
        feats, _ = scorer.model(torch.tensor([ids]), None)
        lp = scorer.model.log_probs(feats)[0]
    s, e = off + starts[j], len(ids) - 1
    total = sum(float(lp[t - 1, ids[t]]) for t in range(s, e + 1))
    return -(total + float(torch.logsumexp(lp[e][scorer.pred.masks.boundary], 0)))


def test_ablation_equals_a_hand_built_replacement(network, net_result, setup, ec):
    """Δ(c) at a position is the loss after exactly this text: the document's first tokens up to its c-th word back
    replaced by as many tokens of other documents (after the same burn-in), then the last c words."""
    tokens, targets, words, ws, _ = setup
    _, res = net_result
    info = res["kinds"]["all"]
    assert len(info["doc"]) > 30
    rng = random.Random(3)
    for n in rng.sample(range(len(info["doc"])), 4):
        d, i = info["doc"][n], info["word"][n]
        ts = targets[d]
        stream, burn = ws.replacing(d)
        for c in (0, 2, 8):
            first = ts[i - c]
            owed, segs = burn + first, []
            for seg in stream.segments:  # the stream's first burn + first tokens, segment by segment
                if owed <= 0:
                    break
                segs.append(seg[:owed])
                owed -= len(segs[-1])
            row = tokens[d][first:ts[i] + 1]
            assert info["loss"][str(c)][n] == pytest.approx(_plain_word_loss(network, segs, row, len(row) - 1),
                                                            abs=2e-4)
        # the full context: the document from its own bos, after its warm start
        expect = _plain_full(network, ws.warm(d).stream.segments, tokens[d][:ts[i] + 1])
        assert info["full"][n] == pytest.approx(expect, abs=2e-4)


def _plain_full(scorer, segments, doc: list[str]) -> float:
    ids = [i for seg in segments for i in scorer._encode(list(seg))[0]]
    own, starts = scorer._encode(doc, True)
    off = len(ids)
    ids += own
    with torch.no_grad():
        feats, _ = scorer.model(torch.tensor([ids]), None)
        lp = scorer.model.log_probs(feats)[0]
    s, e = off + starts[-1], len(ids) - 1
    total = sum(float(lp[t - 1, ids[t]]) for t in range(s, e + 1))
    return -(total + float(torch.logsumexp(lp[e][scorer.pred.masks.boundary], 0)))


def test_a_model_that_reads_only_the_last_word_has_effective_context_1(setup, ec):
    """A bigram reads one token back: keeping the last word keeps everything it uses (Δ(1) = 0 exactly), dropping
    it costs (Δ(0) > 0)."""
    tokens, targets, words, ws, counts = setup
    lm = KneserNey(2).fit(TRAIN + TEXTS)
    res = context_ablation(NgramScorer(lm, "bigram"), tokens, targets, words, ws, ec, counts)
    tables = ablation_tables({"bigram": res}, ec)
    r = tables["kinds"]["all"]["models"]["bigram"]
    assert r["effective"] == 1
    assert all(abs(r["delta"][str(c)]["mean"]) < 1e-9 for c in (1, 2, 4, 8))
    assert r["delta"]["0"]["mean"] > 0.05
    assert effective_context({0: 1.0, 1: 0.5, 2: 0.005, 4: 0.02}, 0.01) == 2
    assert effective_context({0: 1.0, 1: 0.5}, 0.01) is None


def test_the_copy_test_changes_only_the_earlier_occurrences(net_result, setup, ec):
    tokens, targets, words, ws, counts = setup
    rec, res = net_result
    classes = FrequencyClasses(counts)
    copy_rows = [(row, w) for row, ts, w, bos in rec.rows
                 if w is not None and len(w.stream.segments) and w.stream.segments[-1] in ws.docs
                 and not bos and w.tokens < w.stream.tokens]
    info = res["copy"]["all"]
    assert len(info["doc"]) > 10 and len(copy_rows) >= len(info["doc"])
    checked = 0
    for n, (d, i) in enumerate(zip(info["doc"], info["word"])):
        target = tokens[d][targets[d][i]]
        occ = [targets[d][k] for k in range(i) if tokens[d][targets[d][k]] == target]
        original = tokens[d][occ[0]:targets[d][i]] + [target]
        row = next(r for r, w in copy_rows if w.stream.segments[-1] == ws.docs[d] and len(r) == len(original)
                   and r[-1] == target and sum(a != b for a, b in zip(r, original)) == len(occ))
        changed = [t for t, (a, b) in enumerate(zip(row, original)) if a != b]
        assert [occ[0] + t for t in changed] == occ  # every earlier occurrence, nothing else
        replacement = {row[t] for t in changed}
        assert len(replacement) == 1 and replacement.isdisjoint(tokens[d])
        assert abs(classes.of(replacement.pop()) - classes.of(target)) <= 1
        assert not math.isnan(info["replaced"][n])
        checked += 1
    assert checked == len(info["doc"])


def test_the_copy_test_scores_the_replaced_text_exactly(network, net_result, setup):
    """A replaced score is the loss after exactly this text: the burn-in, the document up to the first occurrence
    (from its bos), then the rest with every earlier occurrence replaced (what the recorded row holds)."""
    tokens, targets, words, ws, _ = setup
    rec, res = net_result
    info = res["copy"]["all"]
    for n in range(0, len(info["doc"]), max(1, len(info["doc"]) // 3)):
        d, i = info["doc"][n], info["word"][n]
        target = tokens[d][targets[d][i]]
        occ0 = next(targets[d][k] for k in range(i) if tokens[d][targets[d][k]] == target)
        row = next(r for r, ts, w, bos in rec.rows if w is not None and w.stream.segments[-1] == ws.docs[d]
                   and len(r) == targets[d][i] - occ0 + 1 and r[-1] == target and w.tokens - w.stream.tokens
                   == occ0 - len(tokens[d]))
        segs = ws.burn_in(d) + (tuple(tokens[d][:occ0]),)
        assert info["replaced"][n] == pytest.approx(_plain_word_loss(network, segs, row, len(row) - 1), abs=2e-4)


def test_tables_lines_and_plot(net_result, setup, ec, tmp_path):
    _, res = net_result
    tables = ablation_tables({"rnn_tanh": res, "lstm": res}, ec)
    t = tables["kinds"]["all"]
    assert t["paired"]["lstm"]["8"]["diff"] == 0.0  # the same model twice: no difference
    lines = ablation_lines(tables, kinds=("all",), at=(2, 8))
    assert any("effective context" in line for line in lines)
    assert tables["kinds"]["all"]["shuffle"]["positions"] == 40
    from pipeline.evaluation.plots import ablation_plot

    png = ablation_plot({"ablation": tables}, tmp_path / "context_ablation.png")
    assert png.stat().st_size > 1000


def test_frequency_classes_pick_a_word_as_frequent():
    counts = Counter({"अ": 1, "ब": 1, "क": 100, "ड": 120, "इ": 3})
    fc = FrequencyClasses(counts)
    assert fc.replacement("क", set(), random.Random(0)) == "ड"
    assert fc.replacement("अ", {"ब"}, random.Random(0)) in {"इ"}  # nearest class when its own is used up


def test_the_ablate_command_writes_its_tables_and_refuses_a_single_document(trained_checkpoint, tiny_config,
                                                                          tmp_path, capsys):
    from types import SimpleNamespace

    from pipeline.evaluation.commands import ablate_cli
    from tests.support import write_jsonl

    cfg = tiny_config.replace(eval=dataclasses.replace(
        tiny_config.eval, ablation_contexts={k: 4 for k in ("short", "prose", "verse", "all")},
        ablation_lengths=(1, 2, 4), copy_targets=30, ablation_shuffle_positions=30, bootstrap_replicates=200))
    one = write_jsonl(tmp_path / "one.jsonl", TEXTS[:1])
    args = SimpleNamespace(model=[str(trained_checkpoint)], data=str(one), baseline=False, out=str(tmp_path / "o1"))
    assert ablate_cli(args, cfg) == 2
    assert "has 1 document(s): the ablation replaces context with text of other documents" in capsys.readouterr().err
    many = write_jsonl(tmp_path / "many.jsonl", TEXTS[:20])
    args = SimpleNamespace(model=[str(trained_checkpoint)], data=str(many), baseline=True, out=str(tmp_path / "o2"))
    assert ablate_cli(args, cfg) == 0
    out = capsys.readouterr().out
    assert "effective context" in out and "kn4gram" in out
    import json

    got = json.loads((tmp_path / "o2" / "ablation.json").read_text())
    assert len(got["models"]) == 2 and "kn4gram" in got["models"] and got["tables"]["kinds"]
