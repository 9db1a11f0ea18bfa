"""The served mixture: the same suggestions and probabilities as the evaluated mixture, exact with the state cache,
a cache that reads only what was typed, the network alone on request, and stored mixtures that fail clearly."""
from __future__ import annotations

import dataclasses
import gzip
import json
import shutil

import pytest
import torch

from pipeline.checkpoints import ModelBundle, load_local
from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.evaluation import MixtureScorer, NeuralScorer
from pipeline.evaluation.mixture import ARPA_FILE, WEIGHTS_FILE, MixtureError, load_mixture
from pipeline.serving.mixed import load_for, mixture_dir, predictor_for
from pipeline.serving.statecache import StateCache

# a name that recurs (the cache's case), with ordinary words around it
TEXTS = ["सुमित्रा आज सकाळी बाजारात गेली . तिथे सुमित्रा",
         "मी उद्या",
         "तो म्हणाला की पाऊस खूप पडला आणि आम्ही घरी परत आलो . मग तो"]


@pytest.fixture(scope="module")
def bundle(mixed_checkpoint):
    return load_local(mixed_checkpoint)


@pytest.fixture(scope="module")
def served(bundle):
    return predictor_for(bundle, load_for(bundle), "lstm")


def test_the_mixture_is_found_beside_the_checkpoint(bundle, mixed_checkpoint):
    assert mixture_dir(bundle) == mixed_checkpoint.parent.parent / "mixture"
    m = load_for(bundle)
    assert m is not None and m.weights.parts == ("net", "kn", "cache") and m.lm is not None
    assert sum(m.weights.lam("all")) == pytest.approx(1.0, abs=1e-5)


def test_served_suggestions_are_the_evaluated_mixtures(served, bundle, tiny_config):
    """Two code paths, one model: the server (whole text encoded at once, state cache, chunk outputs as cache keys)
    and the evaluator (token by token, teacher forcing) must rank the same words with the same probabilities."""
    scorer = MixtureScorer(NeuralScorer(bundle, tiny_config.eval, "lstm"), served.mixture.lm, served.mixture.weights,
                           served.mixture.candidates)
    with torch.no_grad():
        for text in TEXTS:
            got = served.predict([text + " "], 5)[0]
            assert got["completing"] is None
            want = scorer.top_words([clean_text(text).split()], 5)[0]
            assert [w["word"] for w in got["words"]] == want, text
            logp = scorer.score([text], [want])[0]
            assert [w["prob"] for w in got["words"]] == pytest.approx([float(torch.tensor(v).exp()) for v in logp],
                                                                      rel=1e-4)


def test_an_int8_model_is_served_as_it_was_evaluated(bundle, tiny_config):
    """eval.int8 in the model's own config: the server quantizes the network as the evaluator does and ranks the same
    words with the same probabilities; the loaded model itself stays float (/explain differentiates through it)."""
    ec = dataclasses.replace(tiny_config.eval, int8=True)
    int8_bundle = ModelBundle(bundle.model, bundle.tokenizer, {**bundle.config, "eval": {**bundle.config["eval"],
                                                                                         "int8": True}}, bundle.meta)
    served = predictor_for(int8_bundle, load_for(bundle), "lstm")
    assert all(isinstance(layer, torch.ao.nn.quantized.dynamic.LSTM) for layer in served.pred.model.layers)
    assert all(isinstance(layer, torch.nn.LSTM) for layer in bundle.model.layers)
    assert all(isinstance(layer, torch.nn.LSTM)
               for layer in predictor_for(int8_bundle, None, "lstm", int8=False).pred.model.layers)
    scorer = MixtureScorer(NeuralScorer(bundle, ec, "lstm"), served.mixture.lm, served.mixture.weights,
                           served.mixture.candidates)
    with torch.no_grad():
        for text in TEXTS:
            got = served.predict([text + " "], 5)[0]
            want = scorer.top_words([clean_text(text).split()], 5)[0]
            assert [w["word"] for w in got["words"]] == want, text
            logp = scorer.score([text], [want])[0]
            # int8 activations are quantized per call, on the range of what that call reads: the server reads the
            # text in one call, the evaluator piece by piece, so probabilities agree to ~3e-4 (measured on this
            # model), not 1e-6; the tolerance leaves room for other tiny models
            assert [w["prob"] for w in got["words"]] == pytest.approx([float(torch.tensor(v).exp()) for v in logp],
                                                                      rel=2e-3)


@pytest.mark.parametrize("prefix", ["स", "प्र", "क्", "आ"])
def test_served_completions_are_the_evaluated_mixtures(served, bundle, tiny_config, prefix):
    """A typed prefix: the server's completions are the evaluator's (the keystroke simulation's bar) on the same
    text, every one starts with the prefix, and their probabilities are renormalised over the candidates."""
    scorer = MixtureScorer(NeuralScorer(bundle, tiny_config.eval, "lstm"), served.mixture.lm, served.mixture.weights,
                           served.mixture.candidates)
    for text in TEXTS:
        got = served.predict([f"{text} {prefix}"], 5)[0]
        assert got["completing"] == prefix
        words = [w["word"] for w in got["words"]]
        assert words and all(w.startswith(prefix) for w in words)
        assert words == scorer.top_words([clean_text(text).split()], 5, prefixes=[prefix])[0], (text, prefix)
        everything = served.predict([f"{text} {prefix}"], 1000)[0]["words"]  # every candidate
        assert sum(w["prob"] for w in everything) == pytest.approx(1.0)


def test_mixture_is_a_distribution_and_says_so(served):
    rows = [r["words"] for r in served.predict([t + " " for t in TEXTS], 20)]
    for row in rows:
        probs = [w["prob"] for w in row]
        assert probs == sorted(probs, reverse=True) and all(p > 0 for p in probs)
        assert sum(probs) <= 1 + 1e-9 and len({w["word"] for w in row}) == len(row)
    assert served.label() == "lstm + 4-gram + cache" and served.label("net") == "lstm"


def _rows(result):
    return [r["words"] if isinstance(r, dict) else r for r in result]


def _words(result):
    return [[w["word"] for w in row] for row in _rows(result)]


def _probs(result):
    return [w["prob"] for row in _rows(result) for w in row]


def test_mix_net_is_the_network_alone(served, bundle):
    alone = predictor_for(bundle, None, "lstm")
    assert alone.label() == "lstm" and alone.default_mix == "net"
    # the same words in the same order, the same probabilities up to float rounding: the two predictors read the
    # texts in differently shaped batches, and a matmul's last bits depend on the shape
    for a, b in ((served.predict(TEXTS, 5, "net"), alone.predict(TEXTS, 5)),
                 ([r["words"] for r in alone.predict(TEXTS, 5)], alone.engine.predictor.predict(TEXTS, 5))):
        assert _words(a) == _words(b) and _probs(a) == pytest.approx(_probs(b), rel=1e-5)
    with pytest.raises(ValueError, match="no fitted mixture"):
        alone.predict(TEXTS, 5, "mixture")


def test_typing_key_by_key_through_the_state_cache_is_exact(bundle):
    """Word by word and character by character: the cache component's keys come from the state cache on a hit,
    and a keystroke inside a word re-reads nothing; the results must not change by a bit."""
    m = load_for(bundle)
    cached = predictor_for(bundle, m, "lstm", StateCache(64, 2**24))
    fresh = predictor_for(bundle, m, "lstm", None)
    text = TEXTS[2]
    for i in range(1, len(text) + 1):
        assert cached.predict([text[:i]], 8) == fresh.predict([text[:i]], 8), text[:i]
    assert cached.engine.cache.hits > 0 and cached.engine.pieces_read < fresh.engine.pieces_read
    before = cached.engine.pieces_read
    word = "सकाळी"
    for i in range(1, len(word) + 1):  # one more word typed letter by letter: its context is read once, then cached
        cached.predict([text + " " + word[:i]], 3)
    assert cached.engine.pieces_read - before <= len(bundle.tokenizer.encode("तो")) + 1


def test_the_cache_reads_the_typed_words_and_only_those(served, bundle):
    text = TEXTS[0]
    ids = served.engine.ids([text])[0]
    with served.engine.lock:
        (_, _, ends), = served.engine.read([ids])
    feat = served._features(ids, ends, clean_text(text).split())
    typed = {w for w in clean_text(text).split() if is_word(w)}
    skip = served.mixture.weights.skip  # the last words typed are left out of the cache
    assert feat["history"] == len(clean_text(text).split()) - 1 - skip and set(feat["cache"]) <= typed
    assert sum(feat["cache"].values()) == pytest.approx(1.0)
    # a text longer than max_context_pieces is read from its tail: the cache holds only the tail's words
    short = predictor_for(bundle, served.mixture, "lstm", None, max_context_pieces=30)
    long_text = "सुमित्रा " + " ".join(["आज सकाळी बाजारात गेली ."] * 6)
    ids = short.engine.ids([long_text])[0]
    (_, _, ends), = short.engine.read([ids])
    feat = short._features(ids, ends, clean_text(long_text).split())
    assert "सुमित्रा" not in feat["cache"] and feat["cache"] and len(ids) <= 30


def test_a_damaged_stored_mixture_is_a_clear_error(mixed_checkpoint, tmp_path):
    src = mixed_checkpoint.parent.parent / "mixture"
    assert load_mixture(tmp_path) is None  # no mixture.json: a model without a mixture, not an error

    bad = shutil.copytree(src, tmp_path / "json")
    (bad / WEIGHTS_FILE).write_text(json.dumps({"weights": {"parts": ["net", "moon"]}}))
    with pytest.raises(MixtureError, match=WEIGHTS_FILE):
        load_mixture(bad)

    gone = shutil.copytree(src, tmp_path / "gone")
    (gone / ARPA_FILE).unlink()
    with pytest.raises(MixtureError, match=ARPA_FILE):
        load_mixture(gone)

    cut = shutil.copytree(src, tmp_path / "cut")
    raw = (cut / ARPA_FILE).read_bytes()
    (cut / ARPA_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MixtureError, match="truncated"):
        load_mixture(cut)

    text = shutil.copytree(src, tmp_path / "text")
    with gzip.open(text / ARPA_FILE, "wt", encoding="utf-8") as f:
        f.write("not an arpa file\n")
    with pytest.raises(MixtureError, match="ARPA"):
        load_mixture(text)


def test_a_text_read_from_its_tail_gets_the_cache_the_evaluator_gives_a_truncated_context(bundle, served,
                                                                                         tiny_config):
    """Cut to its last pieces, a text starts mid-document: its first word has no state before it, so it is no cache
    key; the evaluator's truncated context (bos=False) is the independent reference."""
    short = predictor_for(bundle, served.mixture, "lstm", None, max_context_pieces=30)
    text = "सुमित्रा आज सकाळी बाजारात गेली . " + TEXTS[2]
    ids = short.engine.ids([text])[0]
    (_, _, ends), = short.engine.read([ids])
    tail = bundle.tokenizer.decode(ids).split()
    got = short._features(ids, ends, tail)
    scorer = MixtureScorer(NeuralScorer(bundle, tiny_config.eval, "lstm"), served.mixture.lm, served.mixture.weights,
                           served.mixture.candidates)
    docs, targets = [tail + ["क"]], [[len(tail)]]
    reading = scorer.net.read(docs, targets, bos=False, logp=False, vectors=True)
    for _ in reading:
        pass
    vectors = reading.vectors
    want = scorer.features(docs, targets, vectors, bos=False, asked={(0, len(tail)): list(set(tail))})
    assert got["history"] == want[(0, len(tail))]["history"]
    want = {w: p for w, p in want[(0, len(tail))]["cache"].items() if p > 0}
    assert tail[0] not in tail[1:] and tail[0] not in got["cache"]  # a word seen only first is no key
    assert got["cache"] == pytest.approx(want, rel=1e-4)



def test_predict_command_completes_and_predicts_like_the_server(mixed_checkpoint, capsys):
    from pipeline.cli import main

    assert main(["predict", "--model", str(mixed_checkpoint), "-k", "3", "मी उद्या ", "मी उद्या स"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "(next word, " in out[0] and "(completing «स», " in out[1] and "+ 4-gram + cache" in out[1]
    words = out[1].split("): ", 1)[1].split()[::2]
    assert len(words) == 3 and all(w.startswith("स") for w in words)
    assert main(["predict", "--model", str(mixed_checkpoint), "-k", "30", "मी"]) == 2
    assert "k must be an integer from 1 to 20 (serve.max_k)" in capsys.readouterr().err
    assert main(["predict", "--model", str(mixed_checkpoint), "--mode", "complete", "मी ."]) == 2
    assert "ends in a word" in capsys.readouterr().err
