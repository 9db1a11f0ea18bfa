"""One request check (request_check.check_request) behind every entry point: the MLflow pyfunc, the HTTP API and the
`predict` command refuse the same bad k, mode and text, each naming the field and what it allows."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipeline.config import ServeConfig
from pipeline.serving.request_check import RequestError, check_request

BAD_K = [0, -2, 100000, "x"]
CFG = ServeConfig(max_text_chars=200, max_batch=4, cache_entries=8, cache_megabytes=1.0)


@pytest.fixture(scope="module")
def pyfunc(trained_checkpoint, tmp_path_factory):
    """The model as MLflow loads it (models from code, the logged signature's params), from a local directory."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from pipeline.checkpoints import export, load_local
    from pipeline.tracking import PYFUNC_ENTRY

    tmp = tmp_path_factory.mktemp("pyfunc")
    model_dir = export(load_local(trained_checkpoint), tmp / "export")
    out = pd.DataFrame({"text": ["मी"], "words": [["मी"]], "probs": [[0.1]], "completing": [""], "model": ["lstm"]})
    signature = infer_signature(["मी"], out, params={"k": 5, "mix": "auto", "mode": "auto"})  # as log_pyfunc does
    mlflow.pyfunc.save_model(str(tmp / "pyfunc"), python_model=str(PYFUNC_ENTRY),
                             artifacts={"model_dir": str(model_dir)}, signature=signature)
    return mlflow.pyfunc.load_model(str(tmp / "pyfunc"))


@pytest.fixture(scope="module")
def client(trained_checkpoint) -> TestClient:
    from pipeline.serving.app import _load, create_app

    bundle, info = _load(str(trained_checkpoint))
    return TestClient(create_app(bundle, CFG, info))


def test_the_check_names_the_field_and_the_range():
    limits = ServeConfig(max_k=7, max_text_chars=20, max_word_chars=5)
    assert check_request(["मी "], 7, "auto", limits) == 7
    for k in (0, -2, 8, 100000, "x", "5", 2.5, True, None):
        with pytest.raises(RequestError, match=r"k must be an integer from 1 to 7 \(serve.max_k\)") as e:
            check_request(["मी "], k, "auto", limits)
        assert e.value.field == "k"
    for mode, field in (("later", "mode"), (None, "mode")):
        with pytest.raises(RequestError, match='mode must be "auto" .* "next" or "complete"') as e:
            check_request(["मी "], 3, mode, limits)
        assert e.value.field == field
    for text, message in (("म" * 21, "texts\\[1\\] is 21 characters; the limit is 20"),
                          (" ", "texts\\[1\\] holds no text"), (5, "texts\\[1\\] must be a string"),
                          ("मी घरीघरीघरी", "texts\\[1\\] ends in a word of 9 characters")):
        with pytest.raises(RequestError, match=message) as e:
            check_request(["मी", text], 3, "auto", limits)
        assert e.value.field == "texts[1]"


# --------------------------------------------------------------------------------------------------- the pyfunc
@pytest.mark.parametrize("k", BAD_K)
def test_pyfunc_refuses_a_bad_k_naming_it(pyfunc, k):
    """k = 0 with mix "net" was an IndexError, k = -2 a long list, k = 100000 an unbounded search. A k of the wrong
    type ("x") stops at MLflow's own check of the logged signature, which names k too."""
    with pytest.raises(Exception) as e:
        pyfunc.predict(["मी उद्या "], params={"k": k, "mix": "net"})
    assert "'k'" in str(e.value) if k == "x" else "k must be an integer from 1 to 20" in str(e.value), str(e.value)
    assert isinstance(e.value, RequestError) or k == "x"


def test_pyfunc_checks_k_itself_when_called_without_mlflow(pyfunc):
    model = pyfunc.unwrap_python_model()
    with pytest.raises(RequestError, match="k must be an integer from 1 to 20"):
        model.predict(None, ["मी उद्या "], params={"k": "x"})


def test_pyfunc_refuses_mode_and_text_length_and_answers_a_good_request(pyfunc):
    with pytest.raises(RequestError, match='mode must be "auto"'):
        pyfunc.predict(["मी"], params={"mode": "later"})
    with pytest.raises(RequestError, match="input row 1 is 10001 characters; the limit is 10000"):
        pyfunc.predict(["मी", "म" * 10_001], params={"k": 3})
    out = pyfunc.predict(["मी उद्या "], params={"k": 3, "mix": "net"})
    assert len(out["words"][0]) == 3


# ------------------------------------------------------------------------------------------------------- HTTP
@pytest.mark.parametrize("k", BAD_K)
@pytest.mark.parametrize("path, body", [("/predict", {"text": "मी उद्या "}), ("/predict/batch", {"texts": ["मी"]}),
                                        ("/explain", {"text": "मी"})])
def test_http_refuses_a_bad_k_naming_it(client, path, body, k):
    r = client.post(path, json={**body, "k": k})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "k" and "k must be an integer from 1 to 20 (serve.max_k)" in r.json()["error"]


def test_http_k_limit_follows_serve_max_k(trained_checkpoint):
    from pipeline.serving.app import _load, create_app

    bundle, info = _load(str(trained_checkpoint))
    small = TestClient(create_app(bundle, ServeConfig(max_k=3, cache_entries=8), info))
    assert small.post("/predict", json={"text": "मी उद्या ", "k": 3, "mix": "net"}).status_code == 200
    r = small.post("/predict", json={"text": "मी उद्या ", "k": 4})
    assert r.status_code == 422 and "from 1 to 3" in r.json()["error"]
    schema = small.app.openapi()["components"]["schemas"]["PredictRequest"]["properties"]["k"]
    assert (schema["minimum"], schema["maximum"]) == (1, 3)  # the schema tells a client the same range


# -------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("k", BAD_K)
def test_predict_command_refuses_a_bad_k_on_stderr(trained_checkpoint, capsys, k):
    from pipeline.cli import main

    argv = ["predict", "--model", str(trained_checkpoint), "-k", str(k), "मी उद्या "]
    if k == "x":  # argparse's own int check, before the command: exit 2, on stderr, naming -k
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "argument -k: invalid int value: 'x'" in capsys.readouterr().err
        return
    assert main(argv) == 2
    out = capsys.readouterr()
    assert "k must be an integer from 1 to 20 (serve.max_k)" in out.err and not out.out


def test_predict_command_follows_serve_max_k_and_checks_text_length(trained_checkpoint, capsys):
    from pipeline.cli import main

    model = ["--model", str(trained_checkpoint)]
    assert main(["predict", *model, "--set", "serve.max_k=3", "-k", "4", "मी "]) == 2
    assert "from 1 to 3" in capsys.readouterr().err
    assert main(["predict", *model, "--set", "serve.max_text_chars=5", "मी उद्या घरी"]) == 2
    assert "text 0 is 12 characters; the limit is 5 (serve.max_text_chars)" in capsys.readouterr().err
    assert main(["predict", *model, "--mix", "net", "-k", "3", "मी उद्या "]) == 0
    assert "मी उद्या" in capsys.readouterr().out


def test_the_three_entry_points_share_one_message(pyfunc, client, capsys, trained_checkpoint):
    from pipeline.cli import main

    with pytest.raises(RequestError) as e:
        pyfunc.predict(["मी "], params={"k": 0})
    http = client.post("/predict", json={"text": "मी ", "k": 0}).json()["error"]
    assert main(["predict", "--model", str(trained_checkpoint), "-k", "0", "मी "]) == 2
    assert str(e.value) == http == capsys.readouterr().err.strip().removeprefix("error: ")
