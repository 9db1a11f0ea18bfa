import json
from collections import Counter, defaultdict

import pytest

from pipeline.corpus.cleaning import clean_text, words
from pipeline.evaluation.probe_constructions import (
    ADVERBIALS,
    AGREEMENT,
    RECALL_FILLERS,
    SURNAMES,
    count_constructions,
    format_counts,
)
from pipeline.evaluation.probes import (
    AGREEMENT_DISTANCES,
    RECALL_DISTANCES,
    ProbeError,
    ceilings,
    format_summary,
    generate,
    load_probes,
    summarize,
    wilson,
    write_probes,
)
from tests.conftest import hand_scored_probes

GOOD = {"context": "तो जात", "candidates": ["होता", "होती"], "answer": 0, "distance": 2, "kind": "gender_agreement"}


def _write(tmp_path, lines):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("bad,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "answer"}), "missing field 'answer'"),
    (json.dumps({**GOOD, "answer": 2}), "answer 2 is out of range"),
    (json.dumps({**GOOD, "candidates": ["होता"]}), "at least 2 candidates"),
    (json.dumps({**GOOD, "distance": "दोन"}), "field 'distance' must be int"),
    (json.dumps([GOOD]), "expected a JSON object, got list"),
    (json.dumps({**GOOD, "candidates": ["होता", "दोन शब्द"]}), "every candidate must be one non-empty word"),
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
    assert s["kinds"]["gender_agreement"]["2"]["accuracy"] == 1.0
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
    assert {p.kind for p in probes} == {"person_agreement", "gender_agreement", "recall"}
    for p in probes:
        ws = words(p.context)
        if p.kind == "recall":
            assert ws[0] == p.candidates[p.answer] and not set(ws[1:]) & set(p.candidates)
        else:
            assert sorted(p.candidates) == sorted(AGREEMENT[p.kind].values())
            assert p.candidates[p.answer] == AGREEMENT[p.kind][ws[0]]
            assert not set(ws[1:]) & (set(AGREEMENT[p.kind]) | set(p.candidates))  # one cue, no form in the fillers
        assert len(ws) == p.distance  # the cue (subject or introduced surname) is word 0, the target word len(ws)
    for kind, ds in (("person_agreement", AGREEMENT_DISTANCES), ("gender_agreement", AGREEMENT_DISTANCES),
                     ("recall", RECALL_DISTANCES)):
        assert sorted({p.distance for p in probes if p.kind == kind}) == list(ds)
    assert AGREEMENT_DISTANCES[0] == 2 and RECALL_DISTANCES[0] == 3  # a short distance gives each kind its ceiling


def test_generator_is_balanced_and_fillers_are_independent_of_the_answer():
    """Minimal pairs: within a group the contexts differ only in the cue word, so every answer class sees exactly
    the same fillers, completions and candidate orders (the same rng draws), and ignoring the cue scores chance."""
    probes = generate(seed=3)
    by_class: dict[tuple, Counter] = defaultdict(Counter)
    groups: dict[tuple, list] = defaultdict(list)
    for p in probes:
        rest = " ".join(p["context"].split()[1:])  # everything after the cue word
        answer = p["candidates"][p["answer"]]
        by_class[(p["kind"], p["distance"], answer)][(rest, tuple(p["candidates"]))] += 1
        groups[(p["kind"], p["distance"], rest, tuple(p["candidates"]))].append(p)
    for kind in ("person_agreement", "gender_agreement", "recall"):
        for d in {p["distance"] for p in probes if p["kind"] == kind}:
            rows = {a: c for (k, dd, a), c in by_class.items() if (k, dd) == (kind, d)}
            n = sum(1 for p in probes if (p["kind"], p["distance"]) == (kind, d))
            assert n == 60
            if kind != "recall":  # every answer class equally often, with identical (filler, order) draws
                assert len(rows) == len(AGREEMENT[kind]) and len({frozenset(c.items()) for c in rows.values()}) == 1
    for (kind, d, rest, cands), ps in groups.items():  # one probe per answer in each group (equal groups merge)
        answers = Counter(p["answer"] for p in ps)
        assert set(answers) == set(range(len(cands))) and len(set(answers.values())) == 1
    assert not set(" ".join(ADVERBIALS).split()) & {w for k in AGREEMENT.values() for w in (*k, *k.values())}
    assert not set(" ".join(RECALL_FILLERS).split()) & set(SURNAMES)


def test_count_constructions_matches_a_hand_count():
    docs = [clean_text(t) for t in (
        "मी आज घरी जात आहे. तू कुठे जात आहेस?",  # जात आहे, जात आहेस; मी … आहे, तू … आहेस
        "ते काल बोलत होते, तो शांत होता",          # बोलत होते; ते … होते; the comma ends the clause: तो … होता
        "मी, आहे",                                 # the comma parts subject and verb: no pattern
        "पाटील यांनी सांगितले. नंतर पाटील आले. पवार", # पाटील twice, one repeat; पाटील यांनी; the frame once
    )]
    r = count_constructions(docs)
    c = r["counts"]
    assert r["documents"] == 4 and r["words"] == 9 + 7 + 2 + 7
    nonzero = {(k, label): n for k, t in c.items() for label, n in t.items() if n}
    assert nonzero == {("person_agreement", "जात आहे"): 1, ("person_agreement", "जात आहेस"): 1,
                       ("person_agreement", "मी … आहे"): 1, ("person_agreement", "तू … आहेस"): 1,
                       ("gender_agreement", "बोलत होते"): 1, ("gender_agreement", "ते … होते"): 1,
                       ("gender_agreement", "तो … होता"): 1,
                       ("recall", "पाटील"): 2, ("recall", "पवार"): 1, ("recall", "पाटील यांनी"): 1,
                       ("recall", "पाटील … पाटील"): 1, ("recall", "यांनी सांगितले ."): 1}
    table = format_counts(r)
    assert "25 words" in table and "जात आहे" in table and "कदम … कदम" in table


def test_ceiling_is_the_shortest_distance_and_informative_means_above_chance():
    # "speaks": 18/20 at d=4 (chance 1/2) -> lower bound 0.699 > 0.5; 10/20 at d=16 does not matter.
    # "mute": 6/20 at d=3 (chance 1/4) -> lower bound 0.145 < 0.25; 20/20 at d=100 does not count.
    probes, scores = hand_scored_probes([("speaks", 16, 10, 20, 2), ("speaks", 4, 18, 20, 2),
                              ("mute", 100, 20, 20, 4), ("mute", 3, 6, 20, 4)])
    s = summarize(probes, scores)
    c = s["ceilings"]
    assert c["speaks"]["distance"] == 4 and c["speaks"]["accuracy"] == pytest.approx(0.9)  # 4, not "16" < "4"
    assert (c["speaks"]["low"], c["speaks"]["high"]) == pytest.approx(wilson(18, 20))
    assert c["speaks"]["informative"] is True
    assert c["mute"]["distance"] == 3 and c["mute"]["accuracy"] == pytest.approx(0.3)
    assert c["mute"]["chance"] == pytest.approx(0.25) and c["mute"]["informative"] is False
    assert ceilings({"kinds": s["kinds"]}) == c  # also from a summary written before ceilings existed
    text = format_summary("m", s)
    assert "ceiling (d=4): 0.900" in text and ": informative" in text
    assert "ceiling (d=3): 0.300" in text and "not informative (at chance even at its shortest distance" in text


def test_probe_count_cli_on_a_tiny_corpus_file(tmp_path, capsys):
    from pipeline.cli import main

    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in (
        "मी आज घरी जात आहे", "आम्ही उद्या गावी जात आहोत", "पाटील यांनी सांगितले. पाटील आले")) + "\n",
        encoding="utf-8")
    assert main(["probe", "--count", "--data", str(corpus), "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert f"probe constructions in {corpus}" in out and "3 documents, 15 words" in out
    line = next(x for x in out.splitlines() if "आम्ही … आहोत" in x)
    assert line.split()[-3:] == ["1", "66666.7", "1.00"]  # count, per million words (1 of 15), share


def test_committed_probe_set_is_the_generators_output(tmp_path):
    from pipeline.config import PROJECT_ROOT

    committed = PROJECT_ROOT / "data" / "probes" / "probes.jsonl"
    assert committed.read_bytes() == write_probes(tmp_path / "p.jsonl").read_bytes()
    assert len(generate()) == len(load_probes(committed))
