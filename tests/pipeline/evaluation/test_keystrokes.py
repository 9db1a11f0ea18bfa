"""Keystroke savings: the typist's rules on hand-checked cases, the tables' ratio and intervals, and every scorer's
bar equal to its own completions."""
import numpy as np
import pytest

from pipeline.config import EvalConfig
from pipeline.evaluation import keystroke_metrics, keystroke_tables, simulate, type_documents
from pipeline.evaluation.text_kinds import ScoredWords


def bar_from(table):
    """suggest() from {(word, prefix): bar}; any other prefix gets an empty bar. Records every call."""
    calls = []

    def suggest(rows, prefixes, settle):
        assert settle == any(prefixes)  # the whole bar before the first character, where it is reported
        calls.append(list(zip(rows, prefixes)))
        return [table.get((words[i], p), ["x", "y", "z"]) for i, p in zip(rows, prefixes)]
    words: list[str] = []
    return suggest, calls, words


def test_the_worked_example_of_the_readme():
    suggest, calls, words = bar_from({("आणि", ""): ["व", "आणि", "या"], ("सुमित्रा", "सु"): ["सुमित्रा", "सुरेश", "सुधा"]})
    words += ["आणि", "सुमित्रा"]
    typed, first = simulate(words, suggest, 3)
    assert typed == [0, 2] and first[0] == ["व", "आणि", "या"]
    # rounds by characters typed: both words, then सुमित्रा with "स", then with "सु"
    assert calls == [[(0, ""), (1, "")], [(1, "स")], [(1, "सु")]]
    length = np.array([len(w) for w in words])
    assert list(length) == [3, 8]
    assert 1 - (typed[0] + 1 + typed[1] + 1) / (length + 1).sum() == pytest.approx(1 - 4 / 13)


def test_a_word_never_offered_is_typed_out_and_the_last_character_is_never_asked_for():
    suggest, calls, words = bar_from({})
    words += ["क्ष"]  # three code points: क ् ष
    typed, _ = simulate(words, suggest, 3)
    assert typed == [-1]
    assert [c[0][1] for c in calls] == ["", "क", "क्"]  # never the whole word: typing its last char costs the same


def test_only_the_first_slots_count():
    suggest, _, words = bar_from({("आणि", ""): ["व", "या", "आणि"]})
    words += ["आणि"]
    assert simulate(words, suggest, 2)[0] == [-1] and simulate(words, suggest, 3)[0] == [0]


def _words(kinds, docs):
    n = len(kinds)
    return ScoredWords(np.array(docs), np.arange(n), np.array(docs), np.array(kinds, dtype=object),
                       np.array(["first"] * n, dtype=object), np.array(["0"] * n, dtype=object), np.zeros(n, bool))


def test_tables_are_the_ratio_with_clustered_intervals_and_paired_differences():
    ec = EvalConfig(bootstrap_replicates=300)
    kinds = ["prose"] * 40 + ["short"] * 40
    docs = [i // 4 for i in range(80)]
    length = [4] * 80
    repeat = [True] * 40 + [False] * 40  # a property of the text: the same for every model
    a = {"slots": 3, "typed": [0] * 40 + [-1] * 40, "length": length, "echo": [1] * 80, "repeat": repeat}
    b = {"slots": 3, "typed": [-1] * 80, "length": length, "echo": [0] * 80, "repeat": repeat}
    t = keystroke_tables(_words(kinds, docs), {"a": a, "b": b}, ec, reference="b")
    assert set(t) == {"prose", "short", "all"}
    # prose: every word tapped at once, 1 keystroke instead of 5
    assert t["prose"]["models"]["a"]["ksr"] == pytest.approx(0.8)
    assert t["prose"]["models"]["a"]["low"] == pytest.approx(0.8) and t["prose"]["models"]["b"]["ksr"] == 0
    assert t["all"]["models"]["a"]["ksr"] == pytest.approx(0.4) and t["all"]["n"] == 80
    assert t["all"]["paired"]["a"]["diff"] == pytest.approx(0.4)
    assert t["all"]["models"]["a"]["low"] < 0.4 < t["all"]["models"]["a"]["high"]  # kinds differ: clusters vary
    assert t["prose"]["models"]["a"]["tapped_after"]["0"] == 1.0 and t["short"]["models"]["a"]["never_offered"] == 1
    assert t["prose"]["models"]["a"]["echo_rate"] == pytest.approx(1 / 3)
    assert t["prose"]["text_repeat_rate"] == 1.0 and t["short"]["text_repeat_rate"] == 0.0
    m = keystroke_metrics(t, "a", "test")
    assert m["test/ksr"] == pytest.approx(0.4) and m["test/prose/ksr"] == pytest.approx(0.8)
    assert m["test/ksr_minus_b"] == pytest.approx(0.4)


@pytest.fixture(scope="module")
def net(trained_checkpoint, tiny_config):
    from pipeline.checkpoints import load_local
    from pipeline.evaluation import NeuralScorer

    return NeuralScorer(load_local(trained_checkpoint), tiny_config.eval, "lstm")


def test_the_networks_bar_is_its_own_completions(net, tiny_corpus):
    """Each bar the typist sees is WordPredictor's exact top W under the typed prefix, after the whole document."""
    from pipeline.corpus.cleaning import clean_text
    from pipeline.evaluation.sampling import targets_of
    from tests.support import sample_texts

    doc = clean_text(sample_texts("test", 3)[2]).split()[:14]
    ts = targets_of(doc)[-4:]
    got = type_documents(net, [doc], [ts], 3)
    for j in ts:
        typed, first = got[(0, j)]
        word = doc[j]
        assert first == [d["word"] for d in net.pred.predict([" ".join(doc[:j]) + " "], 3)[0]]
        bars = [[d["word"] for d in net.pred.predict([" ".join(doc[:j] + [word[:c]])], 3, mode="complete")[0]]
                for c in range(1, len(word))]
        offered = [c for c, bar in enumerate([first] + bars) if word in bar]
        assert typed == (offered[0] if offered else -1)


def test_the_settling_typist_types_as_the_full_search_does(net, tiny_corpus, monkeypatch):
    """The typist asks each search only whether its word is in the bar (after the first character): the same
    characters typed and the same first bars as when every bar is searched in full, on every test word."""
    from pipeline.corpus.cleaning import clean_text
    from pipeline.evaluation.sampling import targets_of
    from tests.support import sample_texts

    docs = [clean_text(t).split() for t in sample_texts("test", 6)]
    targets = [targets_of(d) for d in docs]
    fast = type_documents(net, docs, targets, 3)
    settled = dict(net.search_stats)
    search = net.pred.top_words
    monkeypatch.setattr(net.pred, "top_words", lambda *a, settle=None, **kw: search(*a, **kw))  # every bar in full
    full = type_documents(net, docs, targets, 3)
    assert fast == full and len(fast) == sum(map(len, targets)) > 50
    assert settled["settled"] > 0 and net.search_stats["settled"] == settled["settled"]  # the second never settled
    assert settled["known_out"] > 0  # some later characters answered by words already found to beat the word
    assert any(t > 0 for t, _ in fast.values()) and any(t == -1 for t, _ in fast.values())


def _small(cfg, words=60):
    import dataclasses

    return cfg.replace(eval=dataclasses.replace(cfg.eval, max_words=words, context_curves={}, probes=None,
                                                bootstrap_replicates=100))


def test_keystrokes_command_replays_the_network_its_mixture_and_the_ngram(mixed_checkpoint, tiny_config, tmp_path,
                                                                          capsys):
    import json
    from types import SimpleNamespace

    from pipeline.evaluation.commands import keystrokes_cli as cli

    args = SimpleNamespace(model=[str(mixed_checkpoint)], data=None, slots=3, mix="mixture", baseline=True,
                           out=str(tmp_path / "ks"))
    assert cli(args, _small(tiny_config)) == 0
    printed = capsys.readouterr().out
    got = json.loads((tmp_path / "ks" / "keystrokes.json").read_text())
    (kind, table), = got["tables"].items()  # the tiny corpus is one kind
    names = list(table["models"])
    assert names == ["lstm-1x32", "lstm-1x32 + 4-gram + cache", "kn4gram"] and table["n"] == 60
    for name, v in table["models"].items():
        assert 0 < v["ksr"] < 1 and v["low"] <= v["ksr"] <= v["high"], name
        assert name in printed
    assert set(table["paired"]) == {"lstm-1x32 + 4-gram + cache", "kn4gram"}
    assert (tmp_path / "ks" / "keystrokes.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("slots", [0, 11])
def test_slots_outside_one_to_ten_are_refused(tiny_config, slots, capsys):
    from types import SimpleNamespace

    from pipeline.evaluation.commands import keystrokes_cli as cli

    args = SimpleNamespace(model=[], data=None, slots=slots, mix="net", baseline=True, out=None)
    assert cli(args, tiny_config) == 2
    assert "--slots" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_scores_the_registered_mixture_beside_the_network(mixed_checkpoint, tiny_config, tmp_path):
    import json
    from types import SimpleNamespace

    from pipeline.evaluation.commands import evaluate_cli as cli

    args = SimpleNamespace(model=[str(mixed_checkpoint)], data=None, baseline=False, mix="mixture",
                           out=str(tmp_path / "ev"))
    assert cli(args, _small(tiny_config, 40)) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert list(res["models"]) == ["lstm-1x32", "lstm-1x32 + 4-gram + cache"]
    (kind, table), = res["keystrokes"].items()
    assert set(table["models"]) == set(res["models"])
    args.mix, args.out = "net", str(tmp_path / "net")
    assert cli(args, _small(tiny_config, 40)) == 0
    assert list(json.loads((tmp_path / "net" / "results.json").read_text())["models"]) == ["lstm-1x32"]
