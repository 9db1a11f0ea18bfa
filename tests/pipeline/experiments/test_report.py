"""reports/experiment.md, part by part, from hand-made evaluations."""
import numpy as np

from pipeline.config import EvalConfig
from pipeline.evaluation import add_kind_tables, sampled_targets
from pipeline.evaluation.text_kinds import hit_string
from pipeline.experiments.report import mixture_section, paired_facts

EC = EvalConfig(k=1, bootstrap_replicates=300, paired_reference="lstm")


def _results(docs, sources, hits: dict[str, np.ndarray]) -> dict:
    models = {m: {"hits": {"top1": hit_string(h)}, "words": len(h), "words_available": len(h), "documents": len(docs),
                  "documents_available": len(docs), "top1": float(h.mean()), "word_ppl": 100.0}
              for m, h in hits.items()}
    res = {"k": 1, "split": "test", "models": models}
    add_kind_tables(res, docs, sources, EC)
    return res


def _docs():
    prose = [" ".join(f"w{i % 10}a" for i in range(100)) for _ in range(20)]  # 5-16 back, and first words
    return prose, ["mahasquad-wiki-paragraphs"] * 20


def test_mixture_section_shows_each_mix_paired_with_the_network():
    docs, sources = _docs()
    n = sum(map(len, sampled_targets(docs, EC)[2]))
    net = np.zeros(n, bool)
    net[::4] = True
    cache = net.copy()
    cache[1::4] = True  # the cache gets a quarter more of the words right, in every document
    res = _results(docs, sources, {"lstm": net, "net + cache": cache, "4-gram": net})
    res["mixture_fit"] = {"net + cache": {"validation_word_ppl": 80.0, "theta": 0.1, "window": 500,
                                          "weights": {"all": [0.5, 0.5]}}}
    text = "\n".join(mixture_section(res, "experiment/mixture"))
    assert "### prose" in text and "20 documents, 2,000 scored words" in text
    row = next(line for line in text.splitlines() if line.startswith("| net + cache − lstm |"))
    assert row.split(" | ")[1] == "+25.0 [+25.0, +25.0]"  # overall: the same gain in every resampled set of documents
    assert "| net + cache | 80 | 0.1 | 500 | all: 0.50, 0.50 |" in text
    assert "(experiment/mixture/accuracy_by_distance.png)" in text
    assert "predates the tables by kind" in "\n".join(mixture_section({"k": 1, "models": {"a": {}}}, "x"))


def test_paired_facts_say_where_the_difference_excludes_zero():
    docs, sources = _docs()
    n = sum(map(len, sampled_targets(docs, EC)[2]))
    rng = np.random.default_rng(0)
    ref = rng.random(n) < 0.2
    better = ref | (rng.random(n) < 0.3)  # right wherever the reference is, and on ~30 % more
    same = ref.copy()
    res = _results(docs, sources, {"lstm": ref, "gru": better, "irnn": same})
    facts = paired_facts(res["kinds"], res.get("curves", {}), "gru", "lstm")
    assert facts[0].startswith("prose, gru − lstm (points, paired): overall above zero in top-1 +")
    assert "includes zero" not in facts[0].split("By distance")[0]
    tie = paired_facts(res["kinds"], {}, "irnn", "lstm")[0]
    assert "overall includes zero in top-1 +0.0 [+0.0, +0.0]" in tie
