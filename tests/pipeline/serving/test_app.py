"""The HTTP API: happy paths, every bad request (status + the field named), and a fuzz test that never sees a 5xx."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.checkpoints import CheckpointError, export, load_local
from pipeline.config import ServeConfig
from pipeline.serving.app import (
    _load,
    create_app,
    is_loopback,
    newest_checkpoint,
    resolve_model,
)
from pipeline.serving.explain import Explainer
from pipeline.serving.mixed import load_for

CFG = ServeConfig(max_text_chars=200, max_batch=4, cache_entries=32, cache_megabytes=1.0)


@pytest.fixture(scope="module")
def client(mixed_checkpoint) -> TestClient:
    """The app as `serve` builds it for a model that carries a fitted mixture."""
    bundle, info = _load(str(mixed_checkpoint))
    explainer = Explainer(bundle, "lstm", CFG.max_context_pieces, CFG.explain_threshold)
    return TestClient(create_app(bundle, CFG, info, load_for(bundle), [explainer]))


def error_of(r, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and field in body["error"], body
    return body["error"]


# --------------------------------------------------------------------------------------------------- happy paths
def test_predict(client):
    r = client.post("/predict", json={"text": "मी उद्या", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert len(body["words"]) == 3 and body["model"]
    probs = [w["prob"] for w in body["words"]]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    assert all(isinstance(w["word"], str) and " " not in w["word"] for w in body["words"])
    assert len(client.post("/predict", json={"text": "मी"}).json()["words"]) == 5  # k defaults to 5


def test_predict_matches_batch_and_is_stable(client):
    one = client.post("/predict", json={"text": "तो म्हणाला", "k": 4}).json()["words"]
    again = client.post("/predict", json={"text": "तो म्हणाला", "k": 4}).json()["words"]  # served from the cache
    batch = client.post("/predict/batch", json={"texts": ["तो म्हणाला", "ती"], "k": 4})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert one == again and len(results) == 2
    assert [w["word"] for w in results[0]] == [w["word"] for w in one]


def test_the_mixture_is_the_default_and_the_network_alone_is_one_field_away(client, trained_checkpoint):
    mixed = client.post("/predict", json={"text": "मी उद्या", "k": 5}).json()
    alone = client.post("/predict", json={"text": "मी उद्या", "k": 5, "mix": "net"}).json()
    assert mixed["model"].endswith(" + 4-gram + cache") and alone["model"] == mixed["model"].split(" + ")[0]
    assert client.post("/predict", json={"text": "मी उद्या", "k": 5, "mix": "mixture"}).json() == mixed
    bundle, info = _load(str(trained_checkpoint))
    net_only = TestClient(create_app(bundle, CFG, info))  # a model without a mixture
    assert net_only.post("/predict", json={"text": "मी उद्या", "k": 5}).json()["words"] == alone["words"]
    error_of(net_only.post("/predict", json={"text": "मी", "mix": "mixture"}), 422, "mix")
    batch = client.post("/predict/batch", json={"texts": ["मी उद्या", "तो"], "mix": "net"}).json()
    assert batch["results"][0] == alone["words"] and batch["model"] == alone["model"]


def test_text_ending_in_a_word_gets_its_completions_and_says_so(client, mixed_checkpoint):
    nxt = client.post("/predict", json={"text": "मी उद्या ", "k": 5}).json()
    assert nxt["completing"] is None
    first = nxt["words"][0]["word"]
    prefix = first[:1] if len(first) > 1 else "स"
    done = client.post("/predict", json={"text": f"मी उद्या {prefix}", "k": 5}).json()
    assert done["completing"] == prefix and done["words"]
    assert all(w["word"].startswith(prefix) for w in done["words"])
    assert sum(w["prob"] for w in done["words"]) <= 1 + 1e-9
    # the evaluator's completions on the same text: the server ranks with the same function (mixture_search.mixed_top)
    from pipeline.evaluation import NeuralScorer
    from pipeline.evaluation import MixtureScorer

    bundle, _ = _load(str(mixed_checkpoint))
    m = load_for(bundle)
    scorer = MixtureScorer(NeuralScorer(bundle, bundle_eval(bundle), "lstm"), m.lm, m.weights, m.candidates)
    assert [w["word"] for w in done["words"]] == scorer.top_words([["मी", "उद्या"]], 5, prefixes=[prefix])[0]
    # "mode" forces a reading either way
    forced = client.post("/predict", json={"text": "मी उद्या", "k": 5, "mode": "next"}).json()
    assert forced["completing"] is None and forced["words"] == nxt["words"]
    again = client.post("/predict", json={"text": f"मी उद्या {prefix} ", "k": 5, "mode": "complete"}).json()
    assert again["completing"] == prefix and again["words"] == done["words"]
    batch = client.post("/predict/batch", json={"texts": ["मी उद्या ", f"मी उद्या {prefix}"], "k": 5}).json()
    assert batch["completing"] == [None, prefix]
    for got, want in zip(batch["results"], (nxt["words"], done["words"])):  # a batch is read together: float rounding
        assert [w["word"] for w in got] == [w["word"] for w in want]
        assert [w["prob"] for w in got] == pytest.approx([w["prob"] for w in want], rel=1e-4)


def bundle_eval(bundle):
    """The evaluation settings the server reads from the model's own config (predictor_for)."""
    from pipeline.config import EvalConfig

    ev = bundle.config.get("eval", {})
    return EvalConfig(beam_width=int(ev.get("beam_width", 8)), max_word_pieces=int(ev.get("max_word_pieces", 12)),
                      max_beam_width=int(ev.get("max_beam_width", 128)))


def test_completion_requests_that_cannot_be_answered_name_the_field(client):
    long_word = "क" * (CFG.max_word_chars + 1)
    msg = error_of(client.post("/predict", json={"text": f"मी {long_word}"}), 422, "text")
    assert str(CFG.max_word_chars) in msg and "space" in msg
    error_of(client.post("/predict/batch", json={"texts": ["मी ", f"मी {long_word}"]}), 422, "texts[1]")
    assert client.post("/predict", json={"text": f"मी {long_word} "}).status_code == 200  # the next word is fine
    msg = error_of(client.post("/predict", json={"text": "मी उद्या .", "mode": "complete"}), 422, "mode")
    assert "ends in a word" in msg
    error_of(client.post("/predict", json={"text": "मी", "mode": "later"}), 422, "mode")
    msg = error_of(client.post("/predict", json={"text": "  \n\t "}), 422, "text")
    assert "whitespace" in msg


def test_health_names_the_model(client, mixed_checkpoint):
    body = client.get("/health").json()
    assert body["status"] == "ok" and mixed_checkpoint.parent.parent.name in body["model"]
    assert body["mixture"]["parts"] == ["net", "kn", "cache"] and body["network"] in body["model"]
    assert {"name", "version", "run_id", "cache"} <= body.keys()
    assert body["cache"]["entries"] <= CFG.cache_entries


def test_page_is_served_and_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Lohit Devanagari" in r.text and 'fetch("predict"' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # works offline: nothing fetched from elsewhere


def test_export_directory_serves_too(trained_checkpoint, tmp_path):
    export(load_local(trained_checkpoint), tmp_path / "exported")
    bundle, info = _load(str(tmp_path / "exported"))
    r = TestClient(create_app(bundle, CFG, info)).post("/predict", json={"text": "मी"})
    assert r.status_code == 200 and r.json()["words"]


@pytest.mark.parametrize("text", ["😀😀😀", "hello world", "   ?!  ", "१२३", "\u200d\u200c", "a\x00b"])
def test_non_devanagari_text_is_answered(client, text):
    r = client.post("/predict", json={"text": text, "k": 2})
    assert r.status_code == 200 and isinstance(r.json()["words"], list)


# --------------------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize("body, field", [
    ({}, "text"),
    ({"k": 3}, "text"),
    ({"text": ""}, "text"),
    ({"text": "   "}, "text"),
    ({"text": 5}, "text"),
    ({"text": None}, "text"),
    ({"text": "म" * (CFG.max_text_chars + 1)}, "text"),
    ({"text": "मी", "k": 0}, "k"),
    ({"text": "मी", "k": 21}, "k"),
    ({"text": "मी", "k": -1}, "k"),
    ({"text": "मी", "k": "5"}, "k"),
    ({"text": "मी", "k": 2.5}, "k"),
    ({"text": "मी", "k": True}, "k"),
    ({"text": "मी", "colour": 1}, "colour"),
    ({"text": "मी", "mix": "ngram"}, "mix"),
    ({"text": "मी", "mix": 1}, "mix"),
    ([1, 2], "body"),
    ("मी", "body"),
])
def test_predict_rejects(client, body, field):
    error_of(client.post("/predict", json=body), 422, field)


@pytest.mark.parametrize("body, field", [
    ({"texts": []}, "texts"),
    ({"texts": ["मी"] * (CFG.max_batch + 1)}, "texts"),
    ({"texts": "मी"}, "texts"),
    ({"texts": ["मी", ""]}, "texts[1]"),
    ({"texts": ["मी", "म" * (CFG.max_text_chars + 1)]}, "texts[1]"),
    ({"texts": ["मी", 3]}, "texts[1]"),
    ({"texts": ["मी"], "k": 99}, "k"),
    ({"text": "मी"}, "texts"),
])
def test_batch_rejects(client, body, field):
    error_of(client.post("/predict/batch", json=body), 422, field)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_non_json_body(client, path):
    msg = error_of(client.post(path, content=b'{"text": "\xe0\xa4', headers={"content-type": "application/json"}),
                   400, "body")
    assert "JSON" in msg


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_wrong_content_type(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/predict", content=json.dumps({"text": "मी"}).encode(), headers=headers)
    error_of(r, 415, "content-type")


def test_body_size_limit(client):
    huge = json.dumps({"texts": ["म" * CFG.max_text_chars] * 100}).encode()  # far over max_batch * max_text_chars
    error_of(client.post("/predict/batch", content=huge, headers={"content-type": "application/json"}), 413, "body")

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(200):
            yield b" " * 8192
    error_of(client.post("/predict", content=chunks(), headers={"content-type": "application/json"}), 413, "body")


def test_unknown_paths_and_methods_are_4xx(client):
    assert client.get("/predict").status_code == 405
    assert client.get("/../../etc/passwd").status_code == 404
    assert client.get("/static/../serve.py").status_code == 404


# ---------------------------------------------------------------------------------------------------- fuzzing
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({"text": st.text(max_size=250)}, optional={"k": st.integers(-3, 25) | _json}),
    st.fixed_dictionaries({"texts": st.lists(st.text(max_size=60), max_size=6)}, optional={"k": st.integers(-3, 25)}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/predict", "/predict/batch"]), body=_bodies, raw=st.none() | st.binary(max_size=64),
       ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]))
def test_fuzz_never_5xx(client, path, body, raw, ctype):
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    r = client.post(path, content=content, headers={"content-type": ctype})
    assert 200 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]


# ------------------------------------------------------------------------------------------------ resolving a model
def test_default_model_falls_back_to_newest_local_run(trained_checkpoint, tiny_config, capsys):
    cfg = tiny_config.replace(serve=ServeConfig(model="models:/no-such-model@champion"))
    bundle, info = resolve_model(None, cfg)
    assert newest_checkpoint(trained_checkpoint.parent.parent.parent) is not None
    assert bundle.model is not None and "newest local run" in capsys.readouterr().err


@pytest.mark.slow
def test_no_model_anywhere_says_run_make_run(tiny_config, tmp_path):
    from pipeline.config import TrainConfig

    cfg = tiny_config.replace(serve=ServeConfig(model="models:/no-such-model@champion"),
                              tracking=dataclasses.replace(tiny_config.tracking,
                                                           tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"),
                              train=TrainConfig(runs_dir=str(tmp_path / "empty")))
    with pytest.raises(CheckpointError, match="make run"):
        resolve_model(None, cfg)


def test_a_configured_model_that_fails_to_load_is_an_error_not_a_fallback(trained_checkpoint, tiny_config,
                                                                          tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    cfg = tiny_config.replace(serve=ServeConfig(model=str(broken)))  # local runs exist: no switch to them
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        resolve_model(None, cfg)


def test_explicit_model_errors_are_not_hidden(tiny_config, tmp_path):
    with pytest.raises(CheckpointError):
        resolve_model(str(tmp_path / "missing.ckpt"), tiny_config)


def test_loopback_detection():
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.5", "::", "example.org"]))


def test_cli_warns_on_public_host(monkeypatch, trained_checkpoint, tiny_config, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    from pipeline.serving.app import cli

    assert cli(SimpleNamespace(model=str(trained_checkpoint), host="0.0.0.0", port=8123), tiny_config) == 0
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8123 and "warning" in capsys.readouterr().err
    cli(SimpleNamespace(model=str(trained_checkpoint), host=None, port=None), tiny_config)
    assert seen["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_server_runs_without_lightning(trained_checkpoint):
    """The serve command's whole path (CLI, config, model load, app, one request) in a fresh interpreter loads no
    Lightning: issue 16's contract, checked on sys.modules where import-linter checks the import graph."""
    import subprocess
    import sys

    code = f"""
import sys
from fastapi.testclient import TestClient
from pipeline.cli import build_parser
from pipeline.config import load_config
from pipeline.serving.app import create_app, resolve_model
cfg = load_config(None)
bundle, info = resolve_model({str(trained_checkpoint)!r}, cfg)
assert TestClient(create_app(bundle, cfg.serve, info)).post("/predict", json={{"text": "मी"}}).status_code == 200
print(sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric")
             or m.startswith("pipeline.training")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_total_characters_per_request_are_capped(trained_checkpoint):
    bundle, info = _load(str(trained_checkpoint))
    capped = TestClient(create_app(bundle, ServeConfig(max_text_chars=200, max_batch=4, max_request_chars=300), info))
    ok = capped.post("/predict/batch", json={"texts": ["मी " * 50, "ती " * 50]})  # 150 + 150 characters
    assert ok.status_code == 200
    message = error_of(capped.post("/predict/batch", json={"texts": ["मी " * 60, "ती " * 60]}), 422, "texts")
    assert "360 characters together; the limit per request is 300" in message


def _from_schema(schema: dict) -> st.SearchStrategy:
    """Values a JSON schema admits, for the shapes this API's schema uses; anything else fails the test loudly, so
    a schema change cannot silently escape the fuzz."""
    kind = schema.get("type")
    if kind == "object":
        props = {k: _from_schema(v) for k, v in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    if kind == "string" and "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        return st.text(max_size=300) | st.text(alphabet="मीआजघरीगेलो ", min_size=1, max_size=40)
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -10 ** 6)), int(schema.get("maximum", 10 ** 6)))
    if kind == "array":
        return st.lists(_from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 8))
    if "anyOf" in schema:
        return st.one_of([_from_schema(s) for s in schema["anyOf"]])
    if kind == "null":
        return st.none()
    raise AssertionError(f"the fuzz does not know schema {schema}: extend _from_schema")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_from_the_openapi_schema(client, data):
    """Bodies generated from the app's own OpenAPI schema: never a 5xx; a body the schema admits that also keeps
    the documented limits (non-blank texts, serve.max_text_chars, serve.max_request_chars, a word to complete for
    "mode": "complete", one of at most serve.max_word_chars) gets a 200."""
    from pipeline.evaluation.typed import typed_word

    def completes(t: str, mode: str) -> bool:
        try:
            return len(typed_word(t, mode)[1]) <= CFG.max_word_chars
        except ValueError:
            return False

    spec = client.app.openapi()
    path = data.draw(st.sampled_from(sorted(p for p, ops in spec["paths"].items() if "post" in ops)))
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = data.draw(_from_schema(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]))
    r = client.post(path, json=body)
    assert r.status_code < 500, (r.status_code, r.text)
    texts = body.get("texts", [body.get("text")])
    within = all(t.strip() and len(t) <= CFG.max_text_chars for t in texts) and \
        sum(map(len, texts)) <= CFG.max_request_chars and \
        (path == "/explain" or all(completes(t, body.get("mode", "auto")) for t in texts))
    assert r.status_code == (200 if within else 422), (body, r.text)
