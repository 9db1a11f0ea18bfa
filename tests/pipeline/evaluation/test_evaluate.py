import dataclasses
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.config import EvalConfig
from pipeline.evaluation import (
    NeuralScorer,
    NgramScorer,
    Reading,
    TargetBatch,
    add_kind_tables,
    evaluate_scorer,
    flat_metrics,
    format_tables,
    read_all,
    sample_line,
    sampled_targets,
)
from pipeline.evaluation.commands import evaluate_cli as cli
from pipeline.evaluation.ngram import KneserNey

CONTEXT = "मी काल संध्याकाळी घरी"


@pytest.fixture(scope="module")
def scorer(trained_checkpoint, tiny_config):
    return NeuralScorer(load_local(trained_checkpoint), tiny_config.eval, "lstm")


def _by_hand(model, ids: list[int], masks) -> tuple[float, torch.Tensor]:
    """One plain forward over bos + context + word: Σ log p(piece) over the word's pieces, and the distribution
    after its last piece."""
    with torch.no_grad():
        feats, _ = model(torch.tensor([ids]), None)
        return model.log_probs(feats)[0]


def test_word_log_prob_is_pieces_plus_boundary(scorer):
    pred, tok = scorer.pred, scorer.tok
    ctx = pred.context_ids(CONTEXT)
    for word in ("गेलो", "आणि", "अनोळखीशब्दकधीच"):
        pieces = tok.encode(word)
        lp = _by_hand(scorer.model, ctx + pieces, pred.masks)  # (T, V): row t predicts piece t+1
        n = len(ctx)
        expect = sum(float(lp[n - 1 + j, p]) for j, p in enumerate(pieces))
        boundary = [i for i, b in enumerate(pred.masks.boundary.tolist()) if b]
        expect += float(torch.logsumexp(lp[-1, boundary], 0))
        state, next_lp = pred.read([ctx])
        got = float(pred.word_log_prob(state, next_lp, [word])[0])
        assert got == pytest.approx(expect, abs=1e-4)
        # the batched teacher-forced pass of the evaluator gives the same number
        tokens = (CONTEXT + " " + word).split()
        _, logp = read_all(scorer, [tokens], [[len(tokens) - 1]], 3)
        assert logp[(0, len(tokens) - 1)] == pytest.approx(expect, abs=1e-4)


def test_single_word_probabilities_sum_to_at_most_one(scorer):
    pred, tok = scorer.pred, scorer.tok
    starts = [i for i, p in enumerate(tok.pieces) if p.startswith("\u2581") and len(p) > 1]
    conts = [i for i, p in enumerate(tok.pieces) if not p.startswith("\u2581") and i > 3 and not p.startswith("<")]
    vocab = {tok.decode([i]).strip() for i in starts}
    vocab |= {tok.decode([s, c]).strip() for s in starts[:15] for c in conts}
    vocab = sorted(w for w in vocab if w and " " not in w)
    state, lp = pred.read([pred.context_ids(CONTEXT)])
    rows = torch.zeros(len(vocab), dtype=torch.long)
    from pipeline.evaluation.predict import select_state
    total = 0.0
    for i in range(0, len(vocab), 512):
        part = vocab[i:i + 512]
        r = rows[:len(part)]
        total += float(pred.word_log_prob(select_state(state, r), lp.index_select(0, r), part).exp().sum())
    assert len(vocab) > 500 and 0.0 < total <= 1.0 + 1e-5


@pytest.mark.slow
def test_evaluator_top_words_equal_brute_force(trained_checkpoint, tiny_config):
    """The evaluator's batched, padded, teacher-forced pass + search against an independent computation: a plain
    forward over each context and every word of up to two pieces scored one by one (test_predict.brute_force)."""
    from tests.support import brute_force

    bundle = load_local(trained_checkpoint)
    scorer = NeuralScorer(bundle, dataclasses.replace(tiny_config.eval, max_word_pieces=2), "lstm")
    docs = ["मी घरी गेलो . मग मी झोपलो", "आज पाऊस पडला , आणि आम्ही घरी बसलो"]
    tokens = [d.split() for d in docs]
    targets = [[j for j, t in enumerate(ts) if t not in (".", ",")] for ts in tokens]
    top, _ = read_all(scorer, tokens, targets, 3)
    for d, ts in enumerate(targets):
        for j in ts:
            ids = scorer.pred.context_ids(" ".join(tokens[d][:j]))
            assert top[(d, j)] == [w for w, _ in brute_force(bundle.model, bundle.tokenizer, ids, 3)]


def test_topk_accuracy_on_a_known_case():
    lm = KneserNey(4).fit(["मी घरी गेलो", "मी घरी गेलो", "तू शाळेत गेलास"])
    ec = EvalConfig(k=5, context_lengths=(1,), context_curves={"all": 1})
    r = evaluate_scorer(NgramScorer(lm), ["मी घरी गेलो", "तू घरी गेलो"], ec)
    # मी✓ घरी✓ गेलो✓ | तू✗(मी) घरी✗(शाळेत) गेलो✓ ; every target is among the 5 most probable of 6 words
    assert r["words"] == 6 and r["top1"] == pytest.approx(4 / 6) and r["top5"] == 1.0
    # by words of context: the first words (0 before them) मी✓ तू✗; the rest (1-2 before them) 3 of 4
    assert r["by_distance"]["first"]["n"] == 6
    assert r["by_position"]["0"] == {"n": 2, "top1": 0.5, "top5": 1.0}
    assert r["by_position"]["1-4"]["n"] == 4 and r["by_position"]["1-4"]["top1"] == pytest.approx(3 / 4)
    # one word of context, read mid-document: "घरी" after "तू" backs off to the bigram (शाळेत), not a document start
    curve = r["context"]["all"]
    assert curve["positions"] == 4 and curve["hits"]["1"].count("1") == 3 and curve["hits"]["all"] == "1101"
    assert r["hits"] == {"top1": "111001", "top5": "111111"}
    assert r["word_ppl"] > 1 and math.isfinite(r["word_ppl"])
    m = flat_metrics(r, "test", 5)
    assert m["test/top1"] == r["top1"] and m["test/top1_first"] == r["top1"] and "test/top5_pos1_4" in m


def test_evaluate_cli_writes_tables_and_plots(trained_checkpoint, tiny_config, tmp_path):
    cfg = tiny_config.replace(eval=dataclasses.replace(tiny_config.eval, max_words=120,
                                                       context_lengths=(1, 4)))
    args = SimpleNamespace(model=[str(trained_checkpoint)], data=None, baseline=True, out=str(tmp_path / "ev"))
    assert cli(args, cfg) == 0
    out = tmp_path / "ev"
    for f in ("results.json", "summary.csv", "by_distance.csv", "by_position.csv", "kinds.csv", "probes.csv",
              "accuracy_by_distance.png", "probes_by_distance.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"lstm-1x32", "kn4gram"}
    for r in res["models"].values():
        assert r["words"] == 120 and sum(row["n"] for row in r["by_position"].values()) == 120
        assert "probe/person_agreement_d2" in r["metrics"] and "probe/recall" in r["metrics"]
    # the n-gram's top-1 recounted by hand on the same seeded sample: the evaluator's sampling, keys and metrics redone
    from pipeline.corpus.prepare import documents
    from pipeline.evaluation import build_baseline

    lm = build_baseline(cfg, log=lambda *a: None)
    tokens, targets, chosen, _ = sampled_targets(documents(cfg, "test"), cfg.eval)
    hits = [lm.top_words([tokens[d][:targets[d][i]]], 1)[0][0][0] == tokens[d][targets[d][i]]
            for d in range(len(tokens)) for i in chosen[d]]
    assert len(hits) == 120 and res["models"]["kn4gram"]["metrics"]["test/top1"] == pytest.approx(sum(hits) / 120)
    assert (out / "summary.csv").read_text().count("\n") == 3


class RecordingScorer:
    """Predicts the previous word; records what the context curve asks for."""
    name = "echo"
    search_stats = None

    def __init__(self):
        self.calls = []

    def read(self, docs, targets, bos=True, logp=True, warm=None, rank=True):
        keys = [(d, j) for d, ts in enumerate(targets) for j in ts]

        def rank(k, prefixes, rows):
            return [[(docs[d][j - 1], 0.0)] if j else [] for d, j in (keys[i] for i in rows or range(len(keys)))]
        return Reading(iter([TargetBatch(keys, rank)]), {key: -1.0 for key in keys})

    def top_words(self, contexts, k, bos=True, warm=None):
        self.calls.append((contexts, bos))
        return [[c[-1]] for c in contexts]


def test_sample_scores_max_words_and_says_so():
    rnd = random.Random(0)
    vocab = ["मी", "घरी", "गेलो", "आज", "पाऊस", "आणि", "ते"]
    docs = [" ".join(rnd.choice(vocab) for _ in range(rnd.randint(2, 12))) for _ in range(200)]
    docs += [" ".join(rnd.choice(vocab) for _ in range(900))]
    ec = EvalConfig(k=1, max_words=500, context_lengths=(4, 64), context_curves={"all": 64})
    r = evaluate_scorer(RecordingScorer(), docs, ec)
    total = sum(len(d.split()) for d in docs)
    assert r["words"] == 500 and r["words_available"] == total and r["documents_available"] == 201
    assert sum(row["n"] for row in r["by_position"].values()) == 500
    assert "scored 500 of" in sample_line(r) and "seeded sample" in sample_line(r)
    # the long document keeps its share of the 500 words
    *_, chosen, _ = sampled_targets(docs, ec)
    assert len(chosen[-1]) == pytest.approx(500 * 900 / total, abs=1)
    assert sum(r["by_position"][b]["n"] for b in ("17-64", "65-256", "257+")) >= len(chosen[-1]) - 16
    whole = evaluate_scorer(RecordingScorer(), docs, EvalConfig(k=1, context_lengths=(4,)))
    assert whole["words"] == total and "every word" in sample_line(whole)


def test_context_curve_truncates_every_position_without_bos():
    docs = [" ".join(f"w{i % 50}" for i in range(400)), "मी घरी गेलो"]
    scorer = RecordingScorer()
    r = evaluate_scorer(scorer, docs, EvalConfig(k=1, context_lengths=(1, 8, 256), context_curves={"all": 256}))
    ctx = r["context"]["all"]
    # every word with 256 words before it, none sampled away
    assert ctx["positions"] == 400 - 256 and ctx["min_context_words"] == 256
    assert [len(calls) for calls, _ in scorer.calls] == [400 - 256] * 3
    for (contexts, bos), c in zip(scorer.calls, (1, 8, 256)):
        assert not bos and all(len(x) == c for x in contexts)
        # the c words right before each target: position 256 + i reads words 256 + i - c ...
        assert contexts[0] == [f"w{i % 50}" for i in range(256 - c, 256)]
    # the echo model is never right here (no word repeats its predecessor): every point is 0
    assert set(ctx["hits"]) == {"1", "8", "256", "all"} and all(h == "0" * 144 for h in ctx["hits"].values())


def test_tables_print_n_and_hide_small_cells():
    lm = KneserNey(2).fit(["मी घरी गेलो"] * 3)
    ec = EvalConfig(k=5, context_lengths=(1,))
    docs = ["मी घरी गेलो"] * 40
    res = {"k": 5, "split": "test", "models": {"kn2gram": evaluate_scorer(NgramScorer(lm), docs, ec)}}
    add_kind_tables(res, docs, None, ec)
    text = format_tables(res)
    assert "scored every word: 120 words in 40 documents" in text
    lines = text.splitlines()
    at = next(i for i, l in enumerate(lines) if "by words of context" in l)
    # n (documents) per bucket: 0 | 1-4 | 5-16 | ...
    assert lines[at + 2].split()[2:] == ["40", "(40)", "80", "(40)", "0", "(0)", "0", "(0)", "0", "(0)", "0", "(0)"]
    row = lines[at + 3]
    # every word right in every document: the clustered interval cannot move off 100
    assert row.split()[0] == "kn2gram" and row.count("100.0 [100.0, 100.0]") == 2 and row.count("—") == 4


def test_a_corpus_file_is_evaluated_under_its_own_name(tiny_config, tmp_path):
    cfg = tiny_config.replace(eval=dataclasses.replace(tiny_config.eval, context_lengths=(1,), probes=None),
                              train=dataclasses.replace(tiny_config.train, runs_dir=str(tmp_path / "runs")))
    for name in ("news", "tweets"):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"मी घरी गेलो आणि {name} {i} वाजता जेवलो"}, ensure_ascii=False) + "\n"
            for i in range(20)), encoding="utf-8")
        args = SimpleNamespace(model=[], baseline=True, data=str(tmp_path / f"{name}.jsonl"), out=None)
        assert cli(args, cfg) == 0
    # each file gets its own name: its own output directory and metric names, so neither overwrites the other
    for name in ("news", "tweets"):
        res = json.loads((tmp_path / "runs" / "eval" / f"tiny-data-{name}" / "results.json").read_text())
        assert res["split"] == f"data-{name}"
        assert f"data-{name}/top1" in res["models"]["kn4gram"]["metrics"]


@pytest.mark.parametrize("command", [["evaluate", "--baseline"], ["run"]])
def test_a_missing_probe_file_is_the_same_error_everywhere_before_any_work(tiny_config, tmp_path, command, capsys):
    """eval.probes naming a file that is not there stops `evaluate` and `make run` alike, on stderr, before a model is
    read or trained (the experiment calls the same `probes_of`)."""
    from pipeline.cli import main

    missing = tmp_path / "nowhere.jsonl"
    args = [*command, "--set", f"eval.probes={missing}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", f"train.runs_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"eval.probes names {missing}, which does not exist" in err and "--set eval.probes=null" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing evaluated
