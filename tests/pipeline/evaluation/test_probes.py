import json
import zlib
from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest

from pipeline.corpus.cleaning import clean_text, is_word, words
from pipeline.evaluation.probe_constructions import (
    AGREEMENT,
    AUXILIARIES,
    CLAUSE_OPENERS,
    PAST,
    PRESENT,
    PRONOUNS,
    SURNAMES,
    FillerRules,
    count_constructions,
    format_counts,
    gender_marked_words,
)
from pipeline.evaluation.commands import probe_cli
from pipeline.evaluation.intervals import wilson
from pipeline.evaluation.probe_generation import AGREEMENT_DISTANCES, RECALL_DISTANCES, generate, write_probes
from pipeline.evaluation.probes import (
    Probe,
    ProbeError,
    ceilings,
    format_summary,
    load_probes,
    margin,
    report_lines,
    summarize,
)
from tests.support import hand_scored_probes

GOOD = {"context": "तो जात", "candidates": ["होता", "होती"], "answer": 0, "distance": 2, "kind": "gender_agreement"}

# Cleaned training text in miniature: six clauses that end in an auxiliary after >= 7 admitted words (the agreement
# fillers of d = 2, 4, 8), one whose auxiliary follows a perfect participle (no filler), and prose sentences of five
# words for recall (d = 8); one sentence names a surname and gives no passage.
TINY = [clean_text(t) for t in (
    "शेतकरी आज सकाळपासून शेतात खूप मेहनतीने काम करत आहेत.",
    "गावातील लोक दरवर्षी नदीकाठी मोठ्या उत्साहाने जत्रा भरवत होते.",
    "नवीन रस्त्याचे काम गेल्या वर्षीपासून अतिशय संथ गतीने सुरू आहे.",
    "सभेसाठी जिल्ह्यातील अनेक कार्यकर्ते सकाळी लवकरच सभागृहात उपस्थित होते.",
    "संपूर्ण कुटुंब उद्याच्या प्रवासासाठी रात्रीपासूनच सामान बांधून तयार आहे.",
    "वाहतूक काही काळ ठप्प झाली. पाऊस सुरूच होता.",
    "गावात स्वच्छता मोहीम राबवण्यात आली.",
    "शहरातील रस्ते पाण्याखाली गेले होते.",
    "पवार यांनी सांगितले. सर्व काही सुरळीत पार पडले.",
    "कंपनीचे कर्मचारी गेल्या महिन्यापासून पगारवाढीसाठी कार्यालयासमोर शांतपणे आंदोलन करत आहेत.",
    "दिवसभर बाजारपेठेत मोठी वर्दळ होती.",
)]


def _write(tmp_path, lines):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


class IgnoresTheCue:
    """Scores a candidate by the context without its first word (the cue): any fixed function of the rest."""
    name = "blind"

    def score(self, contexts, candidates):
        return [[zlib.crc32(f"{c.split(' ', 1)[-1]}|{x}".encode()) / 2**32 for x in cs]
                for c, cs in zip(contexts, candidates)]


class Always:
    """Always prefers one form, whatever the context."""
    name = "always"

    def __init__(self, form):
        self.form = form

    def score(self, contexts, candidates):
        return [[0.0 if x == self.form else -1.0 for x in cs] for cs in candidates]


def _probes(dicts):
    return [Probe(d["context"], tuple(d["candidates"]), d["answer"], d["distance"], d["kind"]) for d in dicts]


# ---------------------------------------------------------------------------------------------------------- loading

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


# -------------------------------------------------------------------------------------------------------- generator

def _check_fillers(probes, docs):
    """Every agreement filler is real text: the words right before an auxiliary in one document, with no punctuation,
    clause end or cue; every recall filler is whole prose sentences of one document with no surname; the distance is
    exact (cue = word 0, target = word `distance`)."""
    rules = FillerRules.of(docs)
    texts = [" " + d + " " for d in docs]
    for p in probes:
        ws = words(p.context)
        assert len(ws) == p.distance
        if p.kind == "recall":
            rest = p.context.split(" ", 4)[4] if p.distance > 3 else ""
            assert ws[0] == p.candidates[p.answer] and not set(ws[1:]) & set(SURNAMES)
            assert p.context.startswith(f"{ws[0]} यांनी सांगितले .")
            if rest:
                assert any(f" {rest} " in t for t in texts) and rest.split()[-1] in ". ? ! ।".split()
            continue
        filler = p.context.split()[1:]
        assert p.candidates[p.answer] == AGREEMENT[p.kind][p.context.split()[0]]
        assert sorted(p.candidates) == sorted(AGREEMENT[p.kind].values())
        assert all(is_word(w) for w in filler)  # no punctuation
        assert not set(filler) & (PRONOUNS | AUXILIARIES | CLAUSE_OPENERS)  # no cue, no clause end
        assert all(rules.admits(w, p.kind) for w in filler) and rules.may_end(filler[-1])
        assert any(f" {' '.join(filler)} {aux} " in t for t in texts for aux in (*PRESENT, *PAST))


def test_generator_fills_the_distance_with_real_clause_text():
    dropped = {}
    probes = _probes(generate(TINY, seed=7, per_distance=20, dropped=dropped))
    kept = {(p.kind, p.distance) for p in probes}
    assert kept == {*((k, d) for k in AGREEMENT for d in AGREEMENT_DISTANCES), ("recall", 3), ("recall", 8)}
    assert set(dropped) == {f"recall d={d}" for d in RECALL_DISTANCES if d > 8}  # no 13- or 29-word passages here
    _check_fillers(probes, TINY)
    # "… गेले होते": an auxiliary after a perfect participle gives no filler
    assert not any("गेले" in p.context for p in probes if p.kind != "recall")
    assert "पवार यांनी सांगितले . सर्व" not in {p.context[:len("पवार यांनी सांगितले . सर्व")] for p in probes
                                                if p.context.count("पवार") > 1}
    assert {"रस्त्याचे", "मुलगा", "मुलगी"} <= gender_marked_words(["रस्त्याचे", "मुलगा", "मुलगी", "करत"])
    assert "करत" not in gender_marked_words(["रस्त्याचे", "मुलगा", "मुलगी", "करत"])


def test_generator_is_deterministic(tmp_path):
    a, b = (write_probes(tmp_path / f"{n}.jsonl", TINY, seed=7, per_distance=20) for n in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert write_probes(tmp_path / "c.jsonl", TINY, seed=8, per_distance=20).read_bytes() != a.read_bytes()
    assert len(load_probes(a)) == len(generate(TINY, seed=7, per_distance=20)) == 3 * 20 + 3 * 18 + 2 * 20


def test_groups_are_minimal_pairs_and_ignoring_the_cue_is_exactly_chance():
    """Within a group the contexts differ only in the cue word, with the same candidate order, one probe per answer
    class; so a scorer that ignores the cue gets exactly one probe of each group right, raw and balanced."""
    dicts = generate(TINY, seed=3, per_distance=20)
    groups: dict[tuple, list] = defaultdict(list)
    for p in dicts:
        groups[(p["kind"], p["distance"], p["context"].split(" ", 1)[-1], tuple(p["candidates"]))].append(p)
    for (kind, _, _, cands), ps in groups.items():  # equal recall groups (same draw of 4 surnames) merge
        assert Counter(p["answer"] for p in ps) == Counter({a: len(ps) // len(cands) for a in range(len(cands))})
        if kind != "recall":
            assert len(ps) == len(AGREEMENT[kind])
    probes = _probes(dicts)
    s = summarize(probes, [[zlib.crc32(f"{p.context.split(' ', 1)[-1]}|{c}".encode()) for c in p.candidates]
                           for p in probes])
    for kind, table in s["kinds"].items():
        for d, row in table.items():
            assert row["accuracy"] == pytest.approx(row["chance"]) and row["balanced"] == pytest.approx(row["chance"])
    blind = summarize(probes, IgnoresTheCue().score([p.context for p in probes], [p.candidates for p in probes]))
    assert all(r["balanced"] == pytest.approx(r["chance"]) for t in blind["kinds"].values() for r in t.values())
    assert blind["informative_kinds"] == []


def test_a_constant_answer_is_100_on_one_class_and_0_on_the_others():
    probes = [p for p in _probes(generate(TINY, seed=3, per_distance=20)) if p.kind == "person_agreement"]
    s = summarize(probes, Always("आहे").score([p.context for p in probes], [p.candidates for p in probes]))
    row = s["kinds"]["person_agreement"]["2"]
    assert {c: v["accuracy"] for c, v in row["per_class"].items()} == {"आहे": 1.0, "आहेस": 0.0, "आहोत": 0.0,
                                                                        "आहात": 0.0}
    assert row["accuracy"] == row["balanced"] == row["chance"] == 0.25
    assert row["margin"] == pytest.approx((1 - 3) / 4)  # +1 on the आहे class, -1 on the other three
    assert not s["ceilings"]["person_agreement"]["informative"]
    text = "\n".join(report_lines([("always", s)]))
    assert "always gives `आहे` whatever the cue" in text and "Not informative: no model is above chance" in text


def test_margin_on_a_hand_made_case():
    assert margin([-1.0, -2.5, -3.0], 0) == pytest.approx(1.5)
    assert margin([-1.0, -2.5, -3.0], 2) == pytest.approx(-2.0)
    assert margin([float("-inf"), -1.0], 0) == -50.0 and margin([float("-inf")] * 2, 1) == 0.0
    probes = [Probe("क", ("अ", "ब", "क"), a, 2, "k") for a in (0, 2)]
    row = summarize(probes, [[-1.0, -2.5, -3.0]] * 2)["kinds"]["k"]["2"]
    assert row["margin"] == pytest.approx((1.5 - 2.0) / 2)
    assert row["per_class"]["अ"] == {"n": 1, "correct": 1, "accuracy": 1.0, "margin": 1.5}


def test_informative_means_balanced_accuracy_above_chance_at_the_shortest_distance():
    # "speaks": 18/20 at d=4 (chance 1/2) -> lower bound 0.699 > 0.5; 10/20 at d=16 does not matter.
    # "mute": 6/20 at d=3 (chance 1/4) -> lower bound 0.145 < 0.25; 20/20 at d=100 does not count.
    probes, scores = hand_scored_probes([("speaks", 16, 10, 20, 2), ("speaks", 4, 18, 20, 2),
                                         ("mute", 100, 20, 20, 4), ("mute", 3, 6, 20, 4)])
    # "lopsided": 45 of 50 probes have answer अ and are right, the 5 with answer ब are wrong: raw 0.9, balanced 0.5
    probes += [Probe("ग", ("अ", "ब"), 0 if i < 45 else 1, 2, "lopsided") for i in range(50)]
    scores += [[0.0, -1.0]] * 50
    s = summarize(probes, scores)
    c = s["ceilings"]
    assert c["speaks"]["distance"] == 4 and c["speaks"]["accuracy"] == pytest.approx(0.9)  # 4, not "16" < "4"
    assert (c["speaks"]["balanced_low"], c["speaks"]["balanced_high"]) == pytest.approx(wilson(18, 20))
    assert c["speaks"]["informative"] is True
    assert c["mute"]["distance"] == 3 and c["mute"]["informative"] is False
    assert c["lopsided"]["accuracy"] == 0.9 and c["lopsided"]["low"] > 0.5  # raw accuracy would call it informative
    assert c["lopsided"]["balanced"] == 0.5 and c["lopsided"]["informative"] is False
    assert s["informative_kinds"] == ["speaks"]
    old = {"kinds": {k: {d: {x: r[x] for x in ("n", "accuracy", "chance", "low", "high")} for d, r in t.items()}
                     for k, t in s["kinds"].items()}}
    assert ceilings(old)["speaks"]["informative"] and ceilings(old)["lopsided"]["informative"]  # old summaries: raw
    text = format_summary("m", s)
    assert "ceiling (d=4): balanced 0.900" in text and ": informative" in text and "margin" in text
    assert "ceiling (d=3): balanced 0.300" in text
    assert "not informative (at chance even at its shortest distance" in text
    assert "अ 1.00  ब 0.00" in text  # per-class accuracy of the lopsided kind


def test_report_lines_say_which_kinds_the_reading_may_use():
    s_lstm = summarize(*hand_scored_probes([("person_agreement", 2, 54, 60, 4), ("person_agreement", 8, 30, 60, 4),
                                            ("recall", 3, 16, 60, 4)]))
    s_rnn = summarize(*hand_scored_probes([("person_agreement", 2, 15, 60, 4), ("recall", 3, 14, 60, 4)]))
    text = "\n".join(report_lines([("lstm", s_lstm), ("rnn_tanh", s_rnn), ("kn4gram", {})]))
    assert "Informative kinds, whose curves the reading may use: person_agreement." in text
    assert "left out of the reading: recall." in text
    assert "### person_agreement (chance 25.0 %)" in text
    assert "| model | d=2 (n=60) | d=8 (n=60) | all |" in text
    assert f"| lstm | 90.0 [{100 * wilson(54, 60)[0]:.1f}, {100 * wilson(54, 60)[1]:.1f}] / +" in text
    assert "| rnn_tanh | 25.0" in text and "| — |" in text  # rnn_tanh has no d=8 row
    assert "Informative: above chance at d=2 for lstm; at chance there: rnn_tanh." in text
    assert "Not informative: no model is above chance even at d=3" in text
    assert "Accuracy per class (the right answer's form) at d=2" in text and "| lstm | 90.0 (60) |" in text
    assert report_lines([("lstm", {})])[-2] == "No probe file was scored."


@pytest.mark.slow
def test_committed_probe_set_is_the_generators_output_on_the_embedded_train(tmp_path):
    from pipeline.config import PROJECT_ROOT
    from pipeline.evaluation.probe_generation import filler_documents

    docs = filler_documents()
    committed = PROJECT_ROOT / "data" / "probes" / "probes.jsonl"
    assert committed.read_bytes() == write_probes(tmp_path / "p.jsonl", docs).read_bytes()
    probes = load_probes(committed)
    _check_fillers(probes, docs)
    per = Counter((p.kind, p.distance) for p in probes)
    assert set(per.values()) == {120} and {d for k, d in per if k != "recall"} == set(AGREEMENT_DISTANCES)
    assert {d for k, d in per if k == "recall"} == set(RECALL_DISTANCES)


# ---------------------------------------------------------------------------------------------------------- counting

def test_count_constructions_counts_the_frames_under_the_filler_rules():
    docs = [clean_text(t) for t in (
        "मी आज घरी जात आहे. तू कुठे जात आहेस?",  # मी … आहे at d=4, तू … आहेस at d=3
        "ते काल बोलत होते, तो शांत होता",          # ते … होते d=3; the comma ends the clause; तो … होता d=2
        "मी, आहे",                                 # the comma parts subject and auxiliary: no frame
        "आम्ही घरी आणि शाळेत जात आहोत",            # आणि opens a clause: no frame
        "तुम्ही काम केले आहात",                     # a perfect participle before the auxiliary: no frame
        "तुम्ही आहात",                              # d = 1
        "पाटील यांनी सांगितले. नंतर पाटील आले. पवार",  # introduction, then पाटील again 4 words on
    )]
    r = count_constructions(docs)
    c = r["counts"]
    assert r["documents"] == 7 and r["words"] == 9 + 7 + 2 + 6 + 4 + 2 + 7
    nonzero = {(k, label): n for k, t in c.items() for label, n in t.items() if n}
    assert nonzero == {("person_agreement", "मी … आहे"): 1, ("person_agreement", "तू … आहेस"): 1,
                       ("person_agreement", "तुम्ही … आहात"): 1,
                       ("gender_agreement", "ते … होते"): 1, ("gender_agreement", "तो … होता"): 1,
                       ("recall", "पाटील"): 2, ("recall", "पवार"): 1, ("recall", "पाटील यांनी"): 1,
                       ("recall", "पाटील … पाटील"): 1, ("recall", "{S} … {S}"): 1, ("recall", "{S} यांनी … {S}"): 1,
                       ("recall", "{S} यांनी सांगितले ."): 1, ("recall", "{S} यांनी सांगितले . … {S}"): 1}
    by = r["by_distance"]
    assert by["person_agreement"]["मी … आहे"] == {"3-4": 1} and by["person_agreement"]["तू … आहेस"] == {"3-4": 1}
    assert by["person_agreement"]["तुम्ही … आहात"] == {"1": 1} and by["gender_agreement"]["तो … होता"] == {"2": 1}
    assert by["recall"]["{S} यांनी सांगितले . … {S}"] == by["recall"]["{S} … {S}"] == {"3-4": 1}
    table = format_counts(r)
    assert "37 words" in table and "मी … आहे" in table and "कदम … कदम" in table and "3-4" in table


def test_probe_count_cli_on_a_tiny_corpus_file(tmp_path, capsys):
    from pipeline.cli import main

    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in (
        "मी आज घरी जात आहे", "आम्ही उद्या गावी जात आहोत", "पाटील यांनी सांगितले. पाटील आले")) + "\n",
        encoding="utf-8")
    assert main(["probe", "--count", "--data", str(corpus), "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    out = capsys.readouterr().out
    assert f"probe frames in {corpus}" in out and "3 documents, 15 words" in out
    line = next(x for x in out.splitlines() if "आम्ही … आहोत" in x).split()
    assert line[4:7] == ["1", "66666.7", "1.00"]  # count, per million words (1 of 15), share
    assert line[7:] == ["0", "0", "1", "0", "0", "0", "0", "0", "0"]  # d = 4: bucket 3-4


def test_probe_command_scores_through_the_scorer_protocol(tmp_path, capsys, tiny_config, monkeypatch):
    from pipeline.evaluation import commands

    p = _write(tmp_path, [json.dumps(GOOD, ensure_ascii=False)])
    args = SimpleNamespace(probes=str(p), model=[], generate=False, count=False, baseline=False)
    assert probe_cli(args, tiny_config) == 2  # nothing to do
    assert "give --model" in capsys.readouterr().err
    monkeypatch.setattr(commands, "build_scorers", lambda cfg, refs, baseline: ([Always("होता")], {}))
    assert probe_cli(SimpleNamespace(**{**vars(args), "model": ["m"]}), tiny_config) == 0
    assert "always: 1 probes" in capsys.readouterr().out
