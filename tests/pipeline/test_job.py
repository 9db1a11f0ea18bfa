"""make run's closing tables: the main table and top-1 by distance per kind from the rows' hits."""
import numpy as np

from pipeline.config import load_config
from pipeline.evaluation import sampled_targets
from pipeline.evaluation.text_kinds import hit_string
from pipeline.job import distance_lines, format_table, tables_of_rows


def test_make_run_prints_prose_and_all_by_distance_with_the_paired_difference():
    prose = [" ".join(f"w{i % 7}a" for i in range(60))] * 4  # words recur 7 back: the 5-16 bucket
    short = ["मी घरी गेलो", "तो घरी आला"] * 10
    docs, sources = prose + short, ["mahasquad-wiki-paragraphs"] * 4 + ["mahasent-tweets"] * 20
    cfg = load_config(None, ["eval.k=1", "eval.bootstrap_replicates=200"])
    tokens, targets, chosen, _ = sampled_targets(docs, cfg.eval)
    n = sum(map(len, chosen))
    rnn = np.zeros(n, bool)
    lstm = np.zeros(n, bool)
    lstm[:240] = True  # the LSTM gets every prose word, the RNN none
    rows = [{"cell": name, "metrics": {"test/word_ppl": 10.0}, "hits": {"top1": hit_string(h)}}
            for name, h in (("rnn_tanh", rnn), ("lstm", lstm))]
    rows += [{"cell": "lstm + 4-gram + cache", "metrics": {}, "hits": {"top1": hit_string(lstm)}}]
    results = tables_of_rows(rows, docs, sources, cfg)
    text = distance_lines(results)
    assert text.index("prose: 4 documents") < text.index("all: 24 documents")
    assert "lstm + 4-gram" not in text  # the mixtures are in the main table
    diff = next(line for line in text.splitlines() if line.strip().startswith("lstm − rnn_tanh"))
    assert "+100.0 [+100.0, +100.0]" in diff  # the 5-16 bucket: all prose, the LSTM right on every word
    table = format_table(rows, results)
    assert "n = 300 test words with a letter in 24 documents" in table
    assert "lstm + 4-gram + cache" in table and "80.0 [" in table


def test_make_run_prints_keystroke_savings_for_every_row():
    from pipeline.evaluation import keystroke_lines

    docs, sources = ["मी घरी गेलो", "तो घरी आला"] * 10, ["mahasent-tweets"] * 20
    cfg = load_config(None, ["eval.k=1", "eval.bootstrap_replicates=200"])
    tokens, targets, chosen, _ = sampled_targets(docs, cfg.eval)
    words = [tokens[d][targets[d][i]] for d in range(len(docs)) for i in chosen[d]]
    length = [len(w) for w in words]

    def typist(typed):
        return {"slots": 3, "typed": typed, "length": length, "echo": [0] * len(words), "repeat": [False] * len(words)}
    hits = {"top1": hit_string(np.zeros(len(words), bool))}
    rows = [{"cell": "rnn_tanh", "metrics": {}, "hits": hits, "keystrokes": typist([-1] * len(words))},
            {"cell": "lstm", "metrics": {}, "hits": hits, "keystrokes": typist([0] * len(words))}]
    results = tables_of_rows(rows, docs, sources, cfg)
    table = format_table(rows, results)
    assert "KSR % (W=3)" in table.splitlines()[0]
    saved = 1 - len(words) / sum(n + 1 for n in length)  # every word tapped before its first character
    lstm = next(line for line in table.splitlines() if line.startswith("lstm "))
    assert f"{100 * saved:.1f} [" in lstm  # the interval: word lengths differ between documents
    lines = "\n".join(keystroke_lines(results["keystrokes"]))
    assert "keystroke savings, short: 60 words in 20 documents" in lines and "lstm − rnn_tanh" in lines
