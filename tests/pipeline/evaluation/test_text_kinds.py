import numpy as np
import pytest

from pipeline.config import EvalConfig
from pipeline.evaluation import Reading, TargetBatch, add_kind_tables, evaluate_scorer, format_tables, sampled_targets
from pipeline.evaluation.text_kinds import hit_string, kind_of, kind_tables, scored_words

KINDS = {"prose": ("mahasquad-wiki-paragraphs",), "verse": ("wikisource-*",), "short": ("*",)}


def test_kind_of_first_matching_pattern():
    assert kind_of("wikisource-dasbodh", KINDS) == "verse"
    assert kind_of("mahasquad-wiki-paragraphs", KINDS) == "prose"
    assert kind_of("mahasent-tweets", KINDS) == "short"
    assert kind_of("", KINDS) == "all"  # a file without a source column
    assert kind_of("x", {"verse": ("wikisource-*",)}) == "other"


class Echo:
    """Predicts the previous word: right exactly where a word repeats its predecessor."""
    name = "echo"
    search_stats = None

    def guess(self, doc, j):
        return [doc[j - 1]] if j else []

    def read(self, docs, targets, bos=True, logp=True, warm=None, rank=True):
        keys = [(d, j) for d, ts in enumerate(targets) for j in ts]

        def rank(k, prefixes, rows):
            return [[(w, 0.0) for w in self.guess(docs[d], j)] for d, j in (keys[i] for i in rows or range(len(keys)))]
        return Reading(iter([TargetBatch(keys, rank)]), {key: -1.0 for key in keys})

    def top_words(self, contexts, k, bos=True, warm=None):
        return [self.guess(c + ["?"], len(c)) for c in contexts]


class Never(Echo):
    name = "never"

    def guess(self, doc, j):
        return ["—"]


def _docs():
    verse = " ".join(["ओवी"] * 80 + ["१", "२"] * 10)      # a refrain (echo right) and verse numbers
    prose = ["एक दोन तीन चार पाच सहा सात आठ नऊ दहा " * 4] * 3  # no word repeats its predecessor
    short = ["मी घरी गेलो", "तो घरी घरी आला"]
    return [verse, *prose, *short], ["wikisource-tukaram", *["mahasquad-wiki-paragraphs"] * 3,
                                     "mahasent-tweets", "mahanews-headlines"]


def test_tables_split_by_kind_with_numerals_apart():
    docs, sources = _docs()
    ec = EvalConfig(k=1, kinds=KINDS, context_curves={}, bootstrap_replicates=200, paired_reference="never")
    res = {"k": 1, "split": "test", "models": {s.name: evaluate_scorer(s, docs, ec, sources=sources)
                                                for s in (Echo(), Never())}}
    add_kind_tables(res, docs, sources, ec)
    kinds = res["kinds"]
    assert list(kinds) == ["verse", "prose", "short", "all"]
    v = kinds["verse"]
    assert v["documents"] == 1 and v["words"] == 100
    assert v["numerals"]["n"] == 20 and v["top1"]["n"] == 80  # the headline is words with a letter
    assert v["top1"]["models"]["echo"]["acc"] == pytest.approx(79 / 80)
    assert kinds["prose"]["documents"] == 3 and kinds["prose"]["top1"]["models"]["echo"]["acc"] == 0.0
    assert kinds["short"]["top1"]["n"] == 7  # under MIN_N: counted, no accuracy shown
    assert kinds["short"]["top1"]["models"] == {}
    assert kinds["all"]["words"] == 100 + 120 + 7 and kinds["all"]["documents"] == 6
    # the paired difference: echo - never on the verse's words is echo's own accuracy, in every replicate
    d = v["top1"]["paired"]["echo"]
    assert d["diff"] == pytest.approx(79 / 80)
    assert res["models"]["echo"]["metrics"]["test/verse/top1_minus_never"] == pytest.approx(79 / 80)
    text = format_tables(res)
    assert "verse: 1 documents, 100 scored words (80 with a letter, 20 numerals)" in text
    assert "echo − never" in text


def test_same_documents_table_keeps_documents_present_in_every_bucket():
    # doc 0 has words at 1-4 and first occurrences only; doc 1 at 1-4, 5-16 and first: the 5-16 bucket is doc 1's
    d0 = " ".join(["क", "ख"] * 40)
    d1 = " ".join(f"w{i % 12}x" for i in range(120))
    ec = EvalConfig(k=1, kinds={"short": ("*",)}, bootstrap_replicates=200)
    tokens, targets, chosen, _ = sampled_targets([d0, d1], ec)
    words = scored_words(tokens, targets, chosen, ["a", "b"], ec)
    hits = {"m": {"top1": hit_string(np.ones(len(words), bool)), "top5": hit_string(np.ones(len(words), bool))}}
    t = kind_tables(words, hits, ec)["short"]
    assert t["by_distance"]["1-4"]["documents"] == 1 and t["by_distance"]["5-16"]["documents"] == 1
    assert (words.distance[words.doc == 0] == "1-4").sum() == 78
    same = t["same_documents"]
    # "first" has 12 + 2 words < MIN_N: shown buckets 1-4 (doc 0 only) and 5-16 (doc 1 only) share no document
    assert same["buckets"] == [] and same["documents"] == 0


def test_same_documents_when_buckets_share_documents():
    docs = [" ".join(f"w{i % 12}x" for i in range(200)) for _ in range(3)] + [" ".join(["क", "ख"] * 40)]
    ec = EvalConfig(k=1, kinds={"short": ("*",)}, bootstrap_replicates=200)
    tokens, targets, chosen, _ = sampled_targets(docs, ec)
    words = scored_words(tokens, targets, chosen, ["a"] * 4, ec)
    ones = hit_string(np.ones(len(words), bool))
    t = kind_tables(words, {"m": {"top1": ones, "top5": ones}}, ec)["short"]
    same = t["same_documents"]
    assert same["buckets"] == ["5-16", "first"] or same["buckets"] == ["1-4", "5-16", "first"]
    # the 1-4 words of the क ख document are dropped: it has no 5-16 word
    assert same["documents"] == 3 and same["by_distance"]["5-16"]["n"] == 3 * 188


def test_clusters_are_blocks_of_a_long_document():
    ec = EvalConfig(k=1, cluster_block_words=100)
    tokens, targets, chosen, _ = sampled_targets([" ".join(["क"] * 250), "मी घरी"], ec)
    words = scored_words(tokens, targets, chosen, ["", ""], ec)
    assert len(set(words.cluster.tolist())) == 4  # 0-99, 100-199, 200-249 and the short document
    assert set(words.kind.tolist()) == {"all"}


def test_curves_score_every_eligible_position_per_kind():
    docs, sources = _docs()
    ec = EvalConfig(k=1, kinds=KINDS, context_lengths=(1, 4, 16), context_curves={"verse": 16, "prose": 4},
                    bootstrap_replicates=200)
    res = {"k": 1, "split": "test", "models": {"echo": evaluate_scorer(Echo(), docs, ec, sources=sources)}}
    add_kind_tables(res, docs, sources, ec)
    verse, prose = res["curves"]["verse"], res["curves"]["prose"]
    assert verse["positions"] == 80 - 16 and list(verse["curve"]) == ["1", "4", "16", "all"]
    assert prose["positions"] == 3 * (40 - 4) and list(prose["curve"]) == ["1", "4", "all"]
    assert verse["curve"]["1"]["models"]["echo"]["acc"] == 1.0  # the refrain: one word back suffices
    assert "short" not in res["curves"]


def test_curves_on_a_seeded_sample_when_capped_the_same_for_every_model():
    docs, sources = _docs()
    ec = EvalConfig(k=1, kinds=KINDS, context_lengths=(1, 4), context_curves={"prose": 4}, curve_positions=20,
                    bootstrap_replicates=200)
    res = {"k": 1, "split": "test", "models": {m.name: evaluate_scorer(m, docs, ec, sources=sources)
                                               for m in (Echo(), Never())}}
    add_kind_tables(res, docs, sources, ec)
    prose = res["curves"]["prose"]
    assert prose["positions"] == 20 and prose["eligible"] == 3 * (40 - 4)
    assert all(len(res["models"][m]["context"]["prose"]["hits"]["1"]) == 20 for m in ("echo", "never"))
    again = evaluate_scorer(Echo(), docs, ec, sources=sources)["context"]["prose"]
    assert again == res["models"]["echo"]["context"]["prose"]  # seeded: the same sample every time
    assert "a seeded sample of 20 (eval.curve_positions) of the 108 scored words" in format_tables(res)


def test_models_scored_on_different_words_are_refused():
    ec = EvalConfig(k=1, kinds={"short": ("*",)}, bootstrap_replicates=100)
    tokens, targets, chosen, _ = sampled_targets(["मी घरी गेलो"] * 20, ec)
    words = scored_words(tokens, targets, chosen, ["a"] * 20, ec)
    with pytest.raises(ValueError, match="were not scored on the same words"):
        kind_tables(words, {"m": {"top1": "1" * 59, "top1_": ""}}, ec)


def test_plots_draw_cells_at_0_and_100_percent(tmp_path):
    """A cell at 0 % whose interval lies a rounding error above it must not take the command down."""
    from pipeline.evaluation.plots import write_all

    cell = {"n": 40, "documents": 3, "paired": {}, "models": {
        "zero": {"acc": 0.0, "low": 1e-12, "high": 0.05}, "full": {"acc": 1.0, "low": 0.95, "high": 1.0 - 1e-12}}}
    kinds = {"prose": {"documents": 3, "by_distance": {b: cell for b in ("1-4", "5-16", "17-64", "65-256", "257+",
                                                                         "first")}}}
    results = {"models": {"zero": {}, "full": {}}, "kinds": kinds,
               "curves": {"prose": {"positions": 40, "min_context_words": 4, "curve": {"1": cell, "all": cell}}}}
    files = write_all(results, tmp_path)
    assert {f.name for f in files} == {"accuracy_by_distance.png", "context_length.png"}
    assert all(f.stat().st_size > 1000 for f in files)
