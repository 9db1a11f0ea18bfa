"""SentencePiece tokenizer: exact round trips, word boundaries from ▁, cached by (corpus hash, settings)."""
import hashlib

from pipeline.corpus.cleaning import words
from pipeline.corpus.prepare import clean_corpus
from pipeline.corpus.tokenizer import BOS, EOS, Tokenizer, train_or_load_tokenizer


def test_round_trip_every_cleaned_test_document(prepared, tiny_config):
    tok = Tokenizer(prepared.tokenizer_path)
    cleaned, _, _ = clean_corpus(tiny_config)
    docs = list(cleaned["test"]["text"])
    assert len(docs) > 30
    for doc in docs:
        ids = tok.encode(doc)
        assert tok.decode([BOS, *ids, EOS]) == doc
        # word boundaries: pieces that start with ▁ open a whitespace token; regroup and compare
        groups: list[list[int]] = []
        for i in ids:
            if tok.starts_word[i] or not groups:
                groups.append([])
            groups[-1].append(i)
        assert [tok.decode(g) for g in groups] == doc.split(" "), doc
        assert sum(tok.starts_word[i] for i in ids) == len(doc.split(" "))
    # the encoded stream of the test split is exactly these documents in order
    stream = prepared.stream("test").tolist()
    assert stream[:len(tok.encode(docs[0])) + 2] == [BOS, *tok.encode(docs[0]), EOS]
    assert sum(len(words(d)) for d in docs) == prepared.manifest["splits"]["test"]["words"]


def test_unseen_characters_round_trip_through_byte_fallback(prepared):
    tok = Tokenizer(prepared.tokenizer_path)
    text = "ॐ ऩही 𑀅 क़लम"
    assert tok.decode(tok.encode(text)) == text
    assert tok.unk_id not in tok.encode(text)


def test_tokenizer_cache_reused_and_rebuilt_when_corrupted(prepared, tiny_config):
    cleaned, _, fingerprint = clean_corpus(tiny_config)
    path = train_or_load_tokenizer(tiny_config, cleaned["train"], fingerprint, log=lambda *a: None)
    assert path == prepared.tokenizer_path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == prepared.tokenizer_sha256
    mtime = path.stat().st_mtime_ns
    again = train_or_load_tokenizer(tiny_config, cleaned["train"], fingerprint,
                                    log=lambda *a: (_ for _ in ()).throw(AssertionError("retrained")))
    assert again == path and path.stat().st_mtime_ns == mtime  # not retrained
    # a different corpus hash or setting is a different entry
    other = train_or_load_tokenizer(tiny_config, cleaned["train"].select(range(150)), "other-corpus",
                                    log=lambda *a: None)
    assert other != path
    # corrupt it: the hash no longer matches, so it is retrained (same seed and data -> same model)
    path.write_bytes(path.read_bytes()[:-50] + b"\0" * 50)
    messages = []
    rebuilt = train_or_load_tokenizer(tiny_config, cleaned["train"], fingerprint, log=messages.append)
    assert any("retraining" in m for m in messages)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == digest
    Tokenizer(rebuilt).encode("मी आहे")
