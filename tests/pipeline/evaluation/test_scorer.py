"""A new predictor is one adapter of the `Scorer` protocol: a toy scorer written here, and nothing else, runs through
the evaluation loop, the typist, the probes and the tables, and every figure they print is the one counted by hand."""
from collections import Counter

import pytest

from pipeline.config import Config, EvalConfig
from pipeline.evaluation import (
    Probe,
    Reading,
    Scorer,
    TargetBatch,
    evaluate,
    format_tables,
    read_all,
    type_documents,
)


class MostFrequentSoFar:
    """Suggests the document's words so far, most frequent first (ties: the most recent first): a cache, no model."""
    name = "frequent"
    search_stats = None

    @staticmethod
    def ranking(context: list[str], prefix: str = "") -> list[tuple[str, float]]:
        counts = Counter(context)
        last = {w: i for i, w in enumerate(context)}
        words = sorted((w for w in counts if w.startswith(prefix)), key=lambda w: (-counts[w], -last[w]))
        total = sum(counts.values()) or 1
        return [(w, counts[w] / total) for w in words]

    def read(self, docs, targets, bos=True, logp=True, warm=None, rank=True):
        def batches():  # one batch per document: the protocol lets a scorer cut its batches where it likes
            for d, ts in enumerate(targets):
                def rank(k, prefixes, rows, d=d, ts=ts):
                    rows = range(len(ts)) if rows is None else rows
                    prefixes = prefixes or [""] * len(rows)
                    return [self.ranking(docs[d][:ts[i]], p)[:k] for i, p in zip(rows, prefixes)]
                yield TargetBatch([(d, j) for j in ts], rank)
        return Reading(batches(), {(d, j): -1.0 for d, ts in enumerate(targets) for j in ts} if logp else {})

    def top_words(self, contexts, k, bos=True, warm=None):
        return [[w for w, _ in self.ranking(c)[:k]] for c in contexts]

    def score(self, contexts, candidates):
        return [[0.0 if c in ctx.split() else -5.0 for c in cs] for ctx, cs in zip(contexts, candidates)]


DOC = "मी घरी गेलो मी घरी मी"
# the toy's ranking before each word j: j=0 nothing; 1 [मी]; 2 [घरी, मी] (a tie: the most recent first);
# 3 [गेलो, घरी, मी]; 4 [मी, गेलो, घरी] (मी twice); 5 [घरी, मी, गेलो]
RANKED = {0: [], 1: ["मी"], 2: ["घरी", "मी"], 3: ["गेलो", "घरी", "मी"], 4: ["मी", "गेलो", "घरी"],
          5: ["घरी", "मी", "गेलो"]}


def test_the_toy_is_a_scorer():
    assert isinstance(MostFrequentSoFar(), Scorer)


def test_the_loop_reads_what_the_toy_ranks():
    top, logp = read_all(MostFrequentSoFar(), [DOC.split()], [list(range(6))], 2)
    assert top == {(0, j): r[:2] for j, r in RANKED.items()}
    assert logp == {(0, j): -1.0 for j in range(6)}


def test_the_typist_taps_what_the_toy_offers():
    # a bar of one word; under a typed prefix the toy offers only words that start with it, so the repeated मी and
    # घरी are tapped after one character, and the first three words (nothing before them matches) are typed out
    got = type_documents(MostFrequentSoFar(), [DOC.split()], [list(range(6))], 1)
    assert got == {(0, 0): (-1, []), (0, 1): (-1, ["मी"]), (0, 2): (-1, ["घरी"]), (0, 3): (1, ["गेलो"]),
                   (0, 4): (1, ["मी"]), (0, 5): (1, ["घरी"])}


def test_evaluate_the_typist_and_the_tables_take_the_toy_as_it_is():
    cfg = Config(eval=EvalConfig(k=2, context_lengths=(1,), context_curves={"all": 1}, keystrokes=True,
                                 keystroke_slots=1, bootstrap_replicates=100))
    probes = [Probe("मी घरी", ("घरी", "शाळा"), 0, 1, "recall")]
    results = evaluate([MostFrequentSoFar()], [DOC] * 6, cfg, "test", probes)  # 36 words: cells need 30
    r = results["models"]["frequent"]
    # top-1: no word is the toy's first guess; top-2: only the last मी (j=5, [घरी, मी])
    assert r["words"] == 36 and r["top1"] == 0.0 and r["top2"] == pytest.approx(1 / 6)
    assert r["probes"]["kinds"]["recall"]["all"]["accuracy"] == 1.0
    # keystrokes per document: मी 2+1, घरी 3+1, गेलो 4+1 typed out; three taps after one character (1+1 each):
    # 18 of 22
    ks = results["keystrokes"]["all"]["models"]["frequent"]
    assert ks["ksr"] == pytest.approx(1 - 18 / 22)
    text = format_tables(results)
    lines = text.splitlines()
    assert "scored every word: 36 words in 6 documents" in lines
    assert any(line.startswith("frequent") and "0.0 [0.0, 0.0]" in line and "16.7 [16.7, 16.7]" in line
               for line in lines)
    assert any(line.split()[:4] == ["frequent", "18.2", "[18.2,", "18.2]"] for line in lines)


def test_a_killed_evaluation_reuses_the_scorers_it_finished(tmp_path, monkeypatch):
    import dataclasses

    from pipeline.evaluation import assembly

    cfg = Config(eval=EvalConfig(k=2, context_lengths=(1,), context_curves={"all": 1}, keystrokes=True,
                                 keystroke_slots=1, bootstrap_replicates=100))
    docs, parts = [DOC] * 6, tmp_path / "parts"
    first = evaluate([MostFrequentSoFar()], docs, cfg, "test", parts=parts, identity="model-a")
    assert (parts / "frequent.json").is_file()

    def no_measuring(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(assembly, "evaluate_scorer", no_measuring)
    again = evaluate([MostFrequentSoFar()], docs, cfg, "test", parts=parts, identity="model-a")
    assert again["models"] == first["models"] and again["keystrokes"] == first["keystrokes"]
    # another model, other settings or other documents: measured again, never reused
    for changed in ({"identity": "model-b"}, {"cfg": cfg.replace(eval=dataclasses.replace(cfg.eval, k=3))},
                    {"docs": docs[:5]}):
        args = {"identity": "model-a", "cfg": cfg, "docs": docs} | changed
        with pytest.raises(AssertionError, match="measured again"):
            evaluate([MostFrequentSoFar()], args["docs"], args["cfg"], "test", parts=parts, identity=args["identity"])
    (parts / "frequent.json").write_text('{"key": "')  # cut short by a kill
    with pytest.raises(AssertionError, match="measured again"):
        evaluate([MostFrequentSoFar()], docs, cfg, "test", parts=parts, identity="model-a")
