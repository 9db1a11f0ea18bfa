import json

import pytest

from pipeline.cleaning import words
from pipeline.probes import ProbeError, generate, load_probes, summarize, wilson, write_probes

GOOD = {"context": "काल एक मुलगा घरी", "candidates": ["गेला", "गेली"], "answer": 0, "distance": 2, "kind": "agreement"}


def _write(tmp_path, lines):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("bad,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "answer"}), "missing field 'answer'"),
    (json.dumps({**GOOD, "answer": 2}), "answer 2 is out of range"),
    (json.dumps({**GOOD, "candidates": ["गेला"]}), "at least 2 candidates"),
    (json.dumps({**GOOD, "distance": "दोन"}), "field 'distance' must be int"),
    (json.dumps([GOOD]), "expected a JSON object, got list"),
    (json.dumps({**GOOD, "candidates": ["गेला", "दोन शब्द"]}), "every candidate must be one non-empty word"),
    (json.dumps({**GOOD, "distance": -1}), "distance must be >= 0"),
])
def test_loader_errors_name_the_file_and_line(tmp_path, bad, needle):
    p = _write(tmp_path, [json.dumps(GOOD, ensure_ascii=False), "", bad])
    with pytest.raises(ProbeError) as e:
        load_probes(p)
    assert f"{p}, line 3" in str(e.value) and needle in str(e.value)


def test_missing_or_empty_probe_file(tmp_path):
    with pytest.raises(ProbeError, match=r"probe file .*absent.jsonl does not exist; generate the project's set"):
        load_probes(tmp_path / "absent.jsonl")
    with pytest.raises(ProbeError, match=r"holds no probes"):
        load_probes(_write(tmp_path, ["", "   "]))


def test_unknown_kind_is_reported_not_dropped(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD, ensure_ascii=False), json.dumps({**GOOD, "kind": "माझा_प्रकार"})])
    probes = load_probes(p)
    s = summarize(probes, [[0.0, -1.0], [-1.0, 0.0]])
    assert s["kinds"]["agreement"]["2"]["accuracy"] == 1.0
    assert s["kinds"]["माझा_प्रकार"]["all"] == {**s["kinds"]["माझा_प्रकार"]["all"], "n": 1, "accuracy": 0.0,
                                                 "chance": 0.5}
    assert s["unknown_kinds"] == {"माझा_प्रकार": 1}


def test_wilson_interval():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and wilson(10, 10)[1] == pytest.approx(1.0)


def test_generator_is_deterministic_and_consistent(tmp_path):
    a, b = write_probes(tmp_path / "a.jsonl", seed=7), write_probes(tmp_path / "b.jsonl", seed=7)
    assert a.read_bytes() == b.read_bytes()
    assert write_probes(tmp_path / "c.jsonl", seed=8).read_bytes() != a.read_bytes()
    probes = load_probes(a)  # the generated file passes the loader's checks (answer within candidates)
    assert {p.kind for p in probes} == {"agreement", "agreement_attractor", "recall"}
    for p in probes:
        ws = words(p.context)
        if p.kind == "recall":
            cue = next(i for i, w in enumerate(ws) if w in p.candidates)
            assert ws[cue] == p.candidates[p.answer] and not set(ws[cue + 1:]) & set(p.candidates)
        else:
            cue = 2  # काल एक <subject>
            masc, fem = sorted(p.candidates, key=lambda c: not c.endswith("ला"))
            assert p.candidates[p.answer] == (masc if ws[cue] in ("मुलगा", "शेतकरी", "राजा", "शिक्षक", "भाऊ",
                                                                  "म्हातारा") else fem)
        assert len(ws) - cue == p.distance
    assert min(p.distance for p in probes if p.kind.startswith("agreement")) == 2
    assert max(p.distance for p in probes if p.kind.startswith("agreement")) == 64


def test_committed_probe_set_is_the_generators_output(tmp_path):
    from pipeline.config import PROJECT_ROOT

    committed = PROJECT_ROOT / "data" / "probes" / "probes.jsonl"
    assert committed.read_bytes() == write_probes(tmp_path / "p.jsonl").read_bytes()
    assert len(generate()) == len(load_probes(committed))
