"""POST /explain: each network's own suggestions and the influence of every typed word on its top one."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipeline.config import ServeConfig
from pipeline.evaluation.attribution import piece_influence, word_influence
from pipeline.evaluation.predict import PieceMasks
from pipeline.serving.app import _load, create_app, load_explainers
from pipeline.serving.explain import Explainer

CFG = ServeConfig(max_text_chars=2000, max_context_pieces=512, cache_entries=8)
LONG = ("सुमित्रा काल सकाळी लवकर उठली आणि तिने घरातील सगळी कामे पटापट आवरली , मग ती बाजारात गेली , तिथे तिला "
        "तिची जुनी मैत्रीण भेटली आणि दोघी खूप वेळ गप्पा मारत बसल्या , संध्याकाळी घरी परत आल्यावर")


@pytest.fixture(scope="module")
def explainers(tiny_rnn_checkpoint, trained_checkpoint):
    out = []
    for ckpt in (tiny_rnn_checkpoint, trained_checkpoint):
        bundle, _ = _load(str(ckpt))
        label = f"{bundle.model_args['cell']}-tiny"
        out.append(Explainer(bundle, label, CFG.max_context_pieces, CFG.explain_threshold))
    return out


@pytest.fixture(scope="module")
def client(trained_checkpoint, explainers):
    bundle, info = _load(str(trained_checkpoint))
    return TestClient(create_app(bundle, CFG, info, None, explainers))


def test_explain_gives_each_network_its_words_and_the_reach_of_its_top_one(client, explainers):
    r = client.post("/explain", json={"text": LONG + " ", "k": 3})  # after a space: the next word
    assert r.status_code == 200, r.text
    models = r.json()["models"]
    assert [m["cell"] for m in models] == ["rnn_tanh", "lstm"]
    words = LONG.split()
    for m, e in zip(models, explainers):
        assert len(m["words"]) == 3 and m["top"] == m["words"][0]["word"] and m["read_from_start"]
        assert m["completing"] is None
        assert [c["word"] for c in m["context"]] == words
        assert [c["distance"] for c in m["context"]] == list(range(len(words), 0, -1))
        infl = [c["influence"] for c in m["context"]]
        assert max(infl) == pytest.approx(1.0) and min(infl) >= 0
        far = max(c["distance"] for c in m["context"] if c["influence"] >= CFG.explain_threshold)
        assert m["looks_back"] == far
        # the same influence from an independent reading: the tokenizer word by word, piece_influence directly
        tok = e.pred.tok
        ids, spans = [tok.bos_id], []
        for w in words:
            p = tok.encode(w)
            spans.append((len(ids), len(ids) + len(p)))
            ids += p
        norms, _ = piece_influence(e.pred.model, ids, tok.encode(m["top"]), PieceMasks.of(tok).boundary)
        assert infl == pytest.approx(word_influence(norms, spans), rel=1e-4, abs=1e-6)
    # the network alone, as /predict gives it with "mix": "net"
    alone = client.post("/predict", json={"text": LONG, "k": 3, "mix": "net", "mode": "next"}).json()["words"]
    # (to float rounding: /explain runs each network on its own thread)
    assert [w["word"] for w in models[1]["words"]] == [w["word"] for w in alone]
    assert [w["prob"] for w in models[1]["words"]] == pytest.approx([w["prob"] for w in alone], rel=1e-5)


def test_inside_a_word_each_network_completes_it_as_the_bar_does(client, explainers):
    # the text ends in a half-typed word: each column completes it (what /predict gives with mix "net", mode auto),
    # and the attribution is over the words before it, the context the completions are read after
    text = LONG + " सं"
    models = client.post("/explain", json={"text": text, "k": 3}).json()["models"]
    bar = client.post("/predict", json={"text": text, "k": 3, "mix": "net"}).json()
    assert bar["completing"] == "सं"
    for m in models:
        assert m["completing"] == "सं" and m["words"] and all(w["word"].startswith("सं") for w in m["words"])
        assert [c["word"] for c in m["context"]] == LONG.split()
    assert [w["word"] for w in models[1]["words"]] == [w["word"] for w in bar["words"]]


def test_a_long_text_is_explained_over_what_is_read(trained_checkpoint):
    bundle, _ = _load(str(trained_checkpoint))
    e = Explainer(bundle, "lstm", 40, 0.1)
    out = e.explain(LONG + " ", 2)
    assert not out["read_from_start"] and 0 < len(out["context"]) < len(LONG.split())
    assert [c["word"] for c in out["context"]] == LONG.split()[-len(out["context"]):]


@pytest.mark.parametrize("body, field", [({}, "text"), ({"text": " "}, "text"), ({"text": "मी", "k": 0}, "k"),
                                         ({"text": "मी", "mix": "net"}, "mix"), ({"text": "म" * 2001}, "text")])
def test_explain_rejects_bad_requests_naming_the_field(client, body, field):
    r = client.post("/explain", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_without_networks_to_explain_the_answer_says_what_to_do(trained_checkpoint, tiny_config, capsys):
    cfg = tiny_config.replace(serve=ServeConfig(explain=("models:/no-such-model@champion", str(trained_checkpoint))))
    loaded = load_explainers(cfg)
    assert [e.cell for e in loaded] == ["lstm"] and "leaves out models:/no-such-model@champion" in \
        capsys.readouterr().err
    bundle, info = _load(str(trained_checkpoint))
    r = TestClient(create_app(bundle, CFG, info)).post("/explain", json={"text": "मी"})
    assert r.status_code == 503 and r.json()["field"] == "serve.explain" and "make run" in r.json()["error"]


def test_the_served_network_is_explained_without_a_second_copy(trained_checkpoint, tiny_config):
    ref = str(trained_checkpoint)
    bundle, info = _load(ref)
    cfg = tiny_config.replace(serve=ServeConfig(explain=(ref,)))
    (e,) = load_explainers(cfg, (ref, bundle, info))
    assert e.pred.model is bundle.model  # reused, not loaded again
    app = create_app(bundle, CFG, info, None, [e])
    assert e.lock is app.state.engine.lock  # one module, one lock: /predict and /explain never run it at once
    r = TestClient(app).post("/explain", json={"text": "मी उद्या", "k": 2})
    assert r.status_code == 200 and r.json()["models"][0]["top"]
