"""Whole-word top-k against brute force: every word of up to two pieces enumerated and scored one by one."""
import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.evaluation.predict import WordPredictor, select_state
from tests.support import brute_force

CONTEXTS = ["मी काल संध्याकाळी घरी", "आज पाऊस पडला , आणि", "ते", "सरकारने नवीन"]


@pytest.fixture(scope="module")
def bundle(trained_checkpoint):
    return load_local(trained_checkpoint)


@pytest.mark.parametrize("context", CONTEXTS)
def test_top_k_equals_brute_force_enumeration(bundle, context):
    # beam width 2 < k: the search must widen itself until it can prove its top k
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=2, max_word_pieces=2, max_beam_width=4096)
    ids = pred.context_ids(context)
    state, lp = pred.read([ids])
    got = pred.top_words(state, lp, 10)[0]
    want = brute_force(bundle.model, bundle.tokenizer, ids, 10)
    assert [w for w, _ in got] == [w for w, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
    assert pred.search_stats["not_exact"] == 0


def test_words_and_scores_agree_with_word_log_prob(bundle):
    # ranking and perplexity use one P(word): the beam's score of each word equals its teacher-forced log-prob
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=8, max_word_pieces=6)
    state, lp = pred.read([pred.context_ids(CONTEXTS[0])])
    top = pred.top_words(state, lp, 8)[0]
    rows = torch.zeros(len(top), dtype=torch.long)
    scored = pred.word_log_prob(select_state(state, rows), lp.index_select(0, rows), [w for w, _ in top])
    assert scored.tolist() == pytest.approx([s for _, s in top], abs=1e-4)


def test_pieces_that_cannot_be_in_a_word_never_enter_a_beam(bundle):
    pred = WordPredictor(bundle.model, bundle.tokenizer)
    tok, m = bundle.tokenizer, pred.masks
    for i in (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id):
        assert not m.starts[i] and not m.inner[i]
    punct = [i for i, p in enumerate(tok.pieces) if p in ("\u2581.", "\u2581,", "\u2581।", "\u2581?")]
    assert punct and not any(m.starts[i] for i in punct)
    assert all(m.boundary[i] for i in punct)  # punctuation after a word still ends it
    words = {w for row in pred.top_words(*pred.read([pred.context_ids(c) for c in CONTEXTS]), 20) for w, _ in row}
    assert words and all(is_word(w) and clean_text(w) == w for w in words)


def test_a_narrow_search_that_cannot_widen_reports_it(bundle):
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=1, max_word_pieces=2, max_beam_width=1)
    state, lp = pred.read([pred.context_ids(c) for c in CONTEXTS])
    pred.top_words(state, lp, 10)
    assert pred.search_stats["rows"] == len(CONTEXTS) and pred.search_stats["not_exact"] > 0


def brute_force_completions(model, tok, context_ids: list[int], prefix: str, k: int) -> list[tuple[str, float]]:
    """Every word of up to two pieces that starts with `prefix` (as a string), by brute force."""
    return [(w, s) for w, s in brute_force(model, tok, context_ids, 10**9) if w.startswith(prefix)][:k]


@pytest.mark.parametrize("prefix", ["क", "प्र", "क्", "मह", "स"])
def test_completions_equal_brute_force_under_a_prefix(bundle, prefix):
    # exact under the prefix: pieces that cannot spell it never enter a beam, and ending words must cover it;
    # "क्" ends inside a conjunct (क्ष, क्र ...): byte-level matching must still find those words
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=2, max_word_pieces=2, max_beam_width=4096)
    ids = pred.context_ids(CONTEXTS[0])
    state, lp = pred.read([ids, ids])
    got = pred.top_words(state, lp, 5, [prefix, ""])
    want = brute_force_completions(bundle.model, bundle.tokenizer, ids, prefix, 5)
    assert want, "the fixture has words under every prefix tested"
    assert [w for w, _ in got[0]] == [w for w, _ in want]
    assert [s for _, s in got[0]] == pytest.approx([s for _, s in want], abs=1e-4)
    assert [w for w, _ in got[1]] == [w for w, _ in brute_force(bundle.model, bundle.tokenizer, ids, 5)]
    assert pred.search_stats["not_exact"] == 0


@pytest.mark.parametrize("prefix", ["", "क", "प्र", "स"])
def test_settling_a_word_answers_whether_it_is_in_the_exact_top_k(bundle, prefix):
    # the typist's question, for every word under the prefix (ranks 1 … 40 by brute force) and for words no search
    # can reach: in the settled row exactly when it is in the brute-force top 3, with a narrow beam that has to widen
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=2, max_word_pieces=2, max_beam_width=4096)
    ids = pred.context_ids(CONTEXTS[1])
    ranked = brute_force_completions(bundle.model, bundle.tokenizer, ids, prefix, 40)
    asked = [w for w, _ in ranked] + ["क.ख", "x" * 30]  # not a word; more pieces than max_word_pieces
    state, lp = pred.read([ids] * len(asked))
    rows = torch.zeros(len(asked), dtype=torch.long)
    got = pred.top_words(select_state(state, rows), lp.index_select(0, rows), 3, [prefix] * len(asked),
                         settle=asked)
    top3 = {w for w, _ in ranked[:3]}
    assert [w in [x for x, _ in row] for w, row in zip(asked, got)] == [w in top3 for w in asked]
    assert pred.search_stats["settled"] == len(asked) and pred.search_stats["not_exact"] == 0
    assert got[-2:] == [[], []]  # unreachable words are answered without a search
    assert pred.search_stats["rows"] == len(asked)


def test_a_conjunct_prefix_matches_words_that_continue_it(bundle):
    pred = WordPredictor(bundle.model, bundle.tokenizer, beam_width=8, max_word_pieces=6)
    out = pred.predict(["आज क्"], k=10)[0]
    assert out and all(d["word"].startswith("क्") for d in out)
    assert any(len(d["word"]) > 2 and d["word"][2] not in "\u200c\u200d" for d in out)  # क् + a consonant
    assert sum(d["prob"] for d in out) == pytest.approx(1.0)  # renormalised over the completions


def test_typed_word_readings():
    from pipeline.evaluation.typed import typed_word

    assert typed_word("आज सकाळी मी") == (["आज", "सकाळी"], "मी")
    assert typed_word("आज सकाळी मी ") == (["आज", "सकाळी", "मी"], "")
    assert typed_word("आज सकाळी मी.") == (["आज", "सकाळी", "मी", "."], "")
    assert typed_word("आज सकाळी मी ", "complete") == (["आज", "सकाळी"], "मी")
    assert typed_word("आज सकाळी मी", "next") == (["आज", "सकाळी", "मी"], "")
    assert typed_word("महारा\u0937\u094d") == ([], "महाराष्")  # NFC, ends in a virama: still a prefix
    with pytest.raises(ValueError, match="ends in a word"):
        typed_word("आज .", "complete")
    # cleaning drops a trailing URL, e-mail or @mention: the word before it is finished, not being typed
    assert typed_word("नमस्कार @rah") == (["नमस्कार"], "")
    assert typed_word("पहा www.example.com") == (["पहा"], "")
    assert typed_word("शहर,मह") == (["शहर", ","], "मह")
