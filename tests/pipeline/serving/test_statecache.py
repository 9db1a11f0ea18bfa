"""The incremental state cache: same answers with and without it, fewer pieces read with it, and its bounds hold."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.checkpoints import load_local
from pipeline.evaluation.predict import WordPredictor
from pipeline.serving.statecache import IncrementalPredictor, StateCache, _prefix_keys

TEXT = "मी उद्या सकाळी लवकर उठून बाजारात जाणार आहे आणि तिथून भाजी घेऊन घरी परत येणार आहे"


@pytest.fixture(scope="module")
def predictor(trained_checkpoint) -> WordPredictor:
    b = load_local(trained_checkpoint)
    return WordPredictor(b.model, b.tokenizer, beam_width=4, max_word_pieces=6)


def growing_prefixes(text: str) -> list[str]:
    """What a user sends while typing: every character prefix, then the whole text again."""
    return [text[:i] for i in range(1, len(text) + 1) if text[:i].strip()] + [text]


def test_cache_on_and_off_give_identical_words_and_probs(predictor):
    on = IncrementalPredictor(predictor, StateCache(256, 64 * 2**20))
    off = IncrementalPredictor(predictor, None)
    for prefix in growing_prefixes(TEXT):
        assert on.predict([prefix], k=5) == off.predict([prefix], k=5), prefix  # exact, not approximately
    assert on.cache.hits > 0
    assert on.pieces_read < off.pieces_read / 5  # each keystroke re-reads only the word being typed
    # and a batch mixing cached and new contexts agrees too
    batch = [TEXT, TEXT[:20], "तो म्हणाला", "hello 😀"]
    assert on.predict(batch, k=3) == off.predict(batch, k=3)


def test_incremental_reading_matches_the_one_shot_predictor(predictor):
    """Reading word by word is the same computation as one fused call, up to float rounding."""
    inc = IncrementalPredictor(predictor, StateCache(16, 2**20))
    for text in (TEXT, TEXT[:31], "😀", "abc"):
        got, want = inc.predict([text], 5)[0], predictor.predict([text], 5)[0]
        assert [w["word"] for w in got] == [w["word"] for w in want]
        for g, w in zip(got, want):
            assert g["prob"] == pytest.approx(w["prob"], rel=1e-4, abs=1e-9)


def test_one_word_extension_reads_only_the_new_word(predictor):
    inc = IncrementalPredictor(predictor, StateCache(16, 2**20))
    inc.predict([TEXT], 5, "next")
    before = inc.pieces_read
    inc.predict([TEXT + " घरी"], 5, "next")
    new_pieces = len(predictor.context_ids(TEXT + " घरी")) - len(predictor.context_ids(TEXT))
    assert inc.pieces_read - before == new_pieces


def test_entry_bound_is_enforced_lru_first(predictor):
    inc = IncrementalPredictor(predictor, StateCache(3, 2**30))
    for word in ["मी", "तो", "ती", "आम्ही", "तुम्ही"]:
        inc.predict([f"{word} आज"], 2)
        assert len(inc.cache) <= 3
    ids = predictor.context_ids("मी आज")
    assert inc.cache.longest(ids, _prefix_keys(ids), [len(ids)]) is None  # the oldest context was evicted


def test_byte_bound_is_enforced(predictor):
    probe = IncrementalPredictor(predictor, StateCache(100, 2**30))
    probe.predict(["मी आज"], 2)
    per_entry = max(e.nbytes for e in probe.cache._entries.values())
    limit = int(per_entry * 2.5)  # room for two full entries, not three
    inc = IncrementalPredictor(predictor, StateCache(100, limit))
    for word in ["मी", "तो", "ती", "आम्ही", "तुम्ही", "ते"]:
        inc.predict([f"{word} आज घरी"], 2)
        assert inc.cache.nbytes <= limit
        assert inc.cache.nbytes == sum(e.nbytes for e in inc.cache._entries.values())
    assert 1 <= len(inc.cache) < 6


def test_zero_entries_disables_and_oversized_entries_are_skipped(predictor):
    off = IncrementalPredictor(predictor, StateCache(0, 2**20))
    off.predict([TEXT], 3)
    assert len(off.cache) == 0 and off.cache.nbytes == 0
    tiny = IncrementalPredictor(predictor, StateCache(10, 64))  # smaller than any state
    tiny.predict([TEXT], 3)
    assert len(tiny.cache) == 0


def test_cached_tensors_do_not_pin_batch_tensors(predictor):
    inc = IncrementalPredictor(predictor, StateCache(100, 2**30))
    inc.predict([TEXT, "तो म्हणाला", "ती"], 3)
    for e in inc.cache._entries.values():
        parts = e.state if isinstance(e.state, tuple) else (e.state,)
        for t in [*parts, *([e.next_lp] if e.next_lp is not None else [])]:
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_memory_count_covers_what_python_allocates_for_the_ids():
    import tracemalloc

    cache = StateCache(10, 10 ** 9)
    ids = list(range(1000, 11000))  # 10,000 ids above the small-int cache: a tuple would cost ~36 B each
    state = torch.zeros(1, 1, 4)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache.put(1, ids, state, None)
    allocated = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tensors = state.numel() * state.element_size()
    assert cache.nbytes - tensors >= allocated * 0.9  # counted at least what Python allocated (the clone is torch's)
    assert cache.nbytes - tensors < 10_000 * 8  # and it is the compact array, not a tuple of int objects


def test_a_long_text_is_read_from_its_last_words_only(predictor):
    pred, tok = predictor, predictor.tok
    words = ("मी आज सकाळी लवकर उठलो आणि शाळेत गेलो " * 40).split()
    capped = IncrementalPredictor(pred, None, max_context_pieces=30)
    ids = pred.context_ids(" ".join(words))
    tail = capped.tail(ids)
    assert len(tail) <= 30 and tail == ids[-len(tail):] and tail[0] != tok.bos_id
    assert tok.sp.id_to_piece(tail[0]).startswith("\u2581")  # cut at a word start
    capped.predict([" ".join(words)], 3, "next")
    assert capped.pieces_read <= 30  # a bounded read, however long the text
    # the capped reader reads the same as an uncapped one given only those last words, without bos
    state, lp = pred.read([tail])
    assert capped.predict([" ".join(words)], 3, "next")[0] == [
        {"word": w, "prob": math.exp(s)} for w, s in pred.top_words(state, lp, 3)[0]]
