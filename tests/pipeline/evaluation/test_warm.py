import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.corpus.cleaning import is_word
from pipeline.evaluation import NeuralScorer, NgramScorer, read_all
from pipeline.evaluation.ngram import KneserNey
from pipeline.evaluation.warm import Stream, Warm, WarmStarts
from tests.support import sample_texts

DOCS = [t.split() for t in sample_texts("test", 12)]


@pytest.fixture(scope="module")
def scorer(trained_checkpoint, tiny_config):
    return NeuralScorer(load_local(trained_checkpoint), tiny_config.eval, "lstm")


def _plain(scorer, ids: list[int], words: list[tuple[int, int]]) -> list[float]:
    """Whole-word log-probabilities by one plain forward over `ids` (from zeros): words given as (first piece,
    last piece) indices."""
    with torch.no_grad():
        feats, _ = scorer.model(torch.tensor([ids]), None)
        lp = scorer.model.log_probs(feats)[0]
    boundary = scorer.pred.masks.boundary
    out = []
    for s, e in words:
        v = sum(float(lp[t - 1, ids[t]]) for t in range(s, e + 1))
        out.append(v + float(torch.logsumexp(lp[e][boundary], 0)))
    return out


def test_warm_texts_are_other_documents_seeded_and_exact():
    ws = WarmStarts(DOCS, words=40, pool=3, seed=7)
    again = WarmStarts(DOCS, words=40, pool=3, seed=7)
    for d, doc in enumerate(DOCS):
        w = ws.warm(d)
        assert all(seg is not ws.docs[d] for seg in w.stream.segments)  # never the document itself
        assert sum(is_word(t) for seg in w.stream.segments for t in seg) >= 40
        assert [list(s) for s in again.warm(d).stream.segments] == [list(s) for s in w.stream.segments]
        stream, burn = ws.replacing(d)
        assert burn == w.tokens and stream.tokens == burn + len(doc)  # the replacement is exactly as long
    assert len({ws.warm(d).stream for d in range(len(DOCS))}) <= 3 + len(DOCS)  # shared streams are one object
    with pytest.raises(ValueError, match="warm_start=false"):
        WarmStarts(DOCS[:1], 40, 3, 7)


@pytest.mark.parametrize("chunk,rows", [(256, 512), (3, 2)])
def test_loss_only_reading_equals_the_stepwise_one(scorer, monkeypatch, chunk, rows):
    """Also read 3 pieces at a time, 2 rows a batch: the chunks carry the state and pick the right outputs."""
    import pipeline.evaluation.network_scorer as ns

    monkeypatch.setattr(ns, "LOSS_CHUNK", chunk)
    monkeypatch.setattr(ns, "LOSS_ROWS", rows)
    targets = [[j for j, t in enumerate(d) if is_word(t)] for d in DOCS]
    _, stepped = read_all(scorer, DOCS, targets, 1)
    _, fused = read_all(scorer, DOCS, targets, 0)
    assert stepped.keys() == fused.keys()
    for key in stepped:
        assert fused[key] == pytest.approx(stepped[key], abs=1e-4)


@pytest.mark.parametrize("bos", [True, False])
def test_a_warm_start_differs_from_a_zero_start_only_in_the_state(scorer, bos):
    """Reading a document after Warm(stream, n) gives exactly what one plain forward over the stream's first n
    tokens (each segment from its bos) followed by the document gives; without warm, what it gives from zeros."""
    stream = Stream((tuple(DOCS[3]), tuple(DOCS[4])))
    n = len(DOCS[3]) + 2  # into the second segment
    doc = DOCS[5]
    targets = [j for j, t in enumerate(doc) if is_word(t)][1:]
    for warm in (Warm(stream, n), None):
        ids, words = [], []
        if warm is not None:
            ids += scorer._encode(list(DOCS[3]))[0] + scorer._encode(list(DOCS[4][:2]))[0]
        doc_ids, starts = scorer._encode(doc, bos)
        off = len(ids)
        ids += doc_ids
        for j in targets:
            e = (starts[j + 1] if j + 1 < len(starts) else len(doc_ids)) - 1
            words.append((off + starts[j], off + e))
        expect = _plain(scorer, ids, words)
        for rank in (True, False):
            reading = scorer.read([doc], [targets], bos, warm=[warm], rank=rank)
            for batch in reading:
                if rank:
                    batch.words(1)
            got = [reading.logp[(0, j)] for j in targets]
            assert got == pytest.approx(expect, abs=1e-4)
    if not bos:  # a loss-only reading also scores a row's first word, predicted by the warm start alone
        first_ids = scorer._encode(list(DOCS[3]))[0] + scorer._encode(list(DOCS[4][:2]))[0]
        pieces = scorer._encode(doc[:1], False)[0]
        expect = _plain(scorer, first_ids + pieces, [(len(first_ids), len(first_ids) + len(pieces) - 1)])
        reading = scorer.read([doc[:1]], [[0]], False, warm=[Warm(stream, n)], rank=False)
        list(reading)
        assert reading.logp[(0, 0)] == pytest.approx(expect[0], abs=1e-4)


def test_top_words_after_a_warm_start_match_the_plain_forward(scorer):
    stream = Stream((tuple(DOCS[1]),))
    ctx = DOCS[2][:6]
    ids = scorer._encode(list(DOCS[1]))[0] + scorer._encode(ctx, False)[0]
    state, lp = scorer.pred.read([ids])  # from zeros over the warm text and the context together
    expect = [w for w, _ in scorer.pred.top_words(state, lp, 3)[0]]
    assert scorer.top_words([ctx], 3, bos=False, warm=[Warm(stream, stream.tokens)])[0] == expect


def test_ngram_reads_the_warm_tail_only_mid_document(tiny_config):
    lm = KneserNey(3).fit([" ".join(d) for d in DOCS])
    ng = NgramScorer(lm)
    stream = Stream((("अ", "ब", "क"),))
    doc = ["ड", "इ"]
    warm = [Warm(stream, 3)]
    reading = ng.read([doc], [[0, 1]], bos=False, warm=warm)
    list(reading)
    expect = lm.log_prob([["ब", "क"], ["क", "ड"]], doc, bos=False)
    assert [reading.logp[(0, 0)], reading.logp[(0, 1)]] == pytest.approx(list(expect))
    fresh = ng.read([doc], [[0]], bos=True, warm=warm)
    list(fresh)
    assert fresh.logp[(0, 0)] == pytest.approx(float(lm.log_prob([[]], ["ड"], bos=True)[0]))


def test_one_document_is_read_from_zero_states_and_says_so(scorer, tiny_config):
    from pipeline.evaluation import evaluate_scorer, sample_line

    ec = tiny_config.eval
    one = [" ".join(DOCS[0])]
    r = evaluate_scorer(scorer, one, ec)
    assert not r["warm_start"] and "read from zero states (one document" in sample_line(r)
    two = evaluate_scorer(scorer, one + [" ".join(DOCS[1])], ec)
    assert two["warm_start"] and "zero states" not in sample_line(two)


def test_a_streams_tail_is_the_last_tokens_of_its_cut():
    stream = Stream((("a", "b", "c"), ("d",), ("e", "f", "g", "h")))
    flat = ["a", "b", "c", "d", "e", "f", "g", "h"]
    for n in range(0, 9):
        for last in (1, 2, 3, 5):
            assert stream.tail(n, last) == flat[max(0, n - last):n], (n, last)
    assert stream.tokens == 8 and Stream(()).tokens == 0
