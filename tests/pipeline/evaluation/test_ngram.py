import math

import numpy as np
import pytest

from pipeline.evaluation.ngram import EOS, UNK, KneserNey

DOCS = ["मी घरी गेलो .", "मी घरी गेलो .", "मी शाळेत गेलो", "तू शाळेत गेलास .", "तू घरी ये", "मी घरी आलो , आणि झोपलो ."]


@pytest.fixture(scope="module")
def lm():
    return KneserNey(4).fit(DOCS)


@pytest.mark.parametrize("context", [[], ["मी"], ["मी", "घरी"], ["तू", "शाळेत"], ["अनोळखी", "शब्द"], ["मी", "घरी", "आलो", ","]])
def test_distribution_sums_to_one_with_unk_mass(lm, context):
    p = lm.distribution(context)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert p[UNK] > 0 and p[EOS] > 0 and (p[3:] > 0).all()


def test_kneser_ney_prefers_the_seen_continuation(lm):
    lp = lm.log_prob([["मी", "घरी"], ["मी", "घरी"], ["तू", "शाळेत"]], ["गेलो", "ये", "गेलास"])
    assert lp[0] > lp[1] and lp[2] > lm.log_prob([["तू", "शाळेत"]], ["गेलो"])[0]
    assert np.isfinite(lm.log_prob([["मी"]], ["कधीच_न_पाहिलेला"])).all()


def test_top_words_are_the_exact_top_of_the_distribution(lm):
    for context in ([], ["मी"], ["मी", "घरी"], ["तू"], ["काहीतरी"]):
        p = lm.distribution(context)
        ranked = [i for i in np.argsort(-p, kind="stable") if lm.word_ok[i]][:3]
        got = lm.top_words([context], 3)[0]
        assert [w for w, _ in got] == [lm.vocab[i] for i in ranked]
        assert [s for _, s in got] == pytest.approx([math.log(p[i]) for i in ranked])
    assert all(w not in (".", ",", "</s>", "<unk>") for w, _ in lm.top_words([["मी", "घरी", "गेलो"]], 8)[0])


@pytest.mark.parametrize("prefix", ["ग", "गे", "घ", "श", "झ", "क्ष"])
def test_top_words_under_a_prefix_are_the_exact_top_of_the_matching_words(lm, prefix):
    for context in ([], ["मी"], ["मी", "घरी"], ["तू", "शाळेत"]):
        p = lm.distribution(context)
        ranked = [i for i in np.argsort(-p, kind="stable") if lm.word_ok[i] and lm.vocab[i].startswith(prefix)][:3]
        got = lm.top_words([context], 3, prefixes=[prefix])[0]
        assert all(w.startswith(prefix) for w, _ in got)
        assert [s for _, s in got] == pytest.approx([math.log(p[i]) for i in ranked])


def test_top_words_stay_exact_when_a_ranking_runs_past_what_is_kept():
    """A larger vocabulary, and `_below` keeping only 5 words of the unigram ranking: every ranking, with or without
    a prefix, is still the exact top of the distribution."""
    import random

    rng = random.Random(3)
    letters = "कखगघचजटडतदनपबमयरलवसह"
    words = list(dict.fromkeys("".join(rng.choice(letters) for _ in range(rng.randint(1, 3))) for _ in range(400)))
    docs = [" ".join(rng.choice(words[:rng.choice((30, 400))]) for _ in range(rng.randint(3, 12))) for _ in range(300)]
    lm = KneserNey(3).fit(docs)
    lm._REST = 5
    checked = 0
    for doc in docs[:40]:
        toks = doc.split()
        for j in range(len(toks)):
            context = toks[:j]
            p = lm.distribution(context)
            for prefix, k in (("", 3), ("", 25), (toks[j][:1], 12)):
                ranked = [i for i in np.argsort(-p, kind="stable")
                          if lm.word_ok[i] and lm.vocab[i].startswith(prefix)][:k]
                got = lm.top_words([context], k, prefixes=[prefix])[0]
                assert [s for _, s in got] == pytest.approx([math.log(p[i]) for i in ranked])
                checked += 1
    assert checked > 500


def _count(lm, n, context, word):
    t = lm.tables[n]
    ck = lm._context_keys([context])[0, n - 1]
    ci = np.searchsorted(t["ctx"], ck)
    rows = np.arange(t["start"][ci], t["start"][ci + 1])
    return t["a"][rows[t["w"][rows] == lm.index[word]]][0]


def test_adjusted_counts(lm):
    assert _count(lm, 1, [], "गेलो") == 2           # continuation: after घरी and शाळेत, though seen 3 times
    assert _count(lm, 2, ["घरी"], "गेलो") == 1      # continuation: only ever after मी
    assert _count(lm, 2, [], "मी") == 4             # <s> मी: starts 4 documents, raw count kept
    assert _count(lm, 4, ["मी", "घरी"], "गेलो") == 2  # highest order: raw count of <s> मी घरी गेलो


def test_vocabulary_too_large_for_the_order_is_named():
    docs = [" ".join(f"w{i}" for i in range(300))]  # 300 words: 9 bits each, 9 x 9 context bits > 62 for order 10
    with pytest.raises(ValueError, match=r"vocabulary of 30\d words is too large for a 10-gram .* lower eval.ngram_order"):
        KneserNey(10).fit(docs)


def test_arpa_round_trip_gives_the_same_model(tmp_path):
    from pipeline.evaluation.ngram import read_arpa, write_arpa

    docs = ["मी घरी गेलो", "मी घरी आलो", "तू शाळेत गेलास", "मी आज शाळेत गेलो , आणि घरी आलो", "ती घरी गेली"] * 3
    lm = KneserNey(4).fit(docs)
    write_arpa(lm, tmp_path / "lm.arpa")
    text = (tmp_path / "lm.arpa").read_text(encoding="utf-8")
    header = dict(line.split(" ")[1].split("=") for line in text.splitlines() if line.startswith("ngram "))
    for n, count in header.items():  # the header counts what each section holds
        section = text.split(f"\\{n}-grams:\n")[1].split("\n\n")[0]
        assert len(section.splitlines()) == int(count)
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.vocab == lm.vocab and back.order == 4
    for ctx in ([], ["मी"], ["मी", "घरी"], ["आज", "शाळेत", "गेलो"], ["कधीच", "न", "दिसलेले"]):
        np.testing.assert_allclose(back.distribution(ctx), lm.distribution(ctx), rtol=1e-7, atol=1e-12)
        assert [w for w, _ in back.top_words([ctx], 5)[0]] == [w for w, _ in lm.top_words([ctx], 5)[0]]
    ctxs = [["मी", "घरी"], ["घरी"], ["कधीच"]]
    assert back.matched_order(ctxs, bos=False).tolist() == lm.matched_order(ctxs, bos=False).tolist()
    assert back.matched_order([[], *ctxs]).tolist() == lm.matched_order([[], *ctxs]).tolist()
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\tx\n\n\\end\\\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not an ARPA file written by write_arpa"):
        read_arpa(tmp_path / "bad.arpa")


def _arpa_log10(path):
    """An ARPA back-off model read from the format's definition alone (not read_arpa): log10 p(w | h) = p(h w) when
    `h w` is listed, else bo(h) + log10 p(w | h[1:]), bo(h) = 0 when h carries none; a word the file does not list is
    <unk>. Returns log10 p(word | history) for a history that starts with the document's one <s>, as KenLM and SRILM
    read a sentence."""
    prob: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    order = 0
    for line in open(path, encoding="utf-8"):
        fields = line.split()
        if len(fields) == 1 and fields[0].endswith("-grams:"):
            order = int(fields[0][1:fields[0].index("-")])
        elif order and fields and not fields[0].startswith("\\"):
            words = tuple(fields[1:order + 1])
            prob[words] = float(fields[0])
            if len(fields) == order + 2:
                backoff[words] = float(fields[-1])

    def known(w: str) -> str:
        return w if (w,) in prob else "<unk>"

    def log10p(history: list[str], word: str) -> float:
        h, w, total = tuple(map(known, history[max(0, len(history) - order + 1):] if order > 1 else [])), known(word), 0.0
        for start in range(len(h) + 1):
            if h[start:] + (w,) in prob:
                return total + prob[h[start:] + (w,)]
            total += backoff.get(h[start:], 0.0)
        raise AssertionError(f"{w} has no unigram")

    return log10p, [w for (w, *rest) in prob if not rest]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_the_arpa_file_scores_every_word_as_the_model_does_document_starts_included(tmp_path, order):
    """KenLM and SRILM start a sentence with one <s>: through the ARPA file's back-off semantics, each word of a
    document (its first words, where the context is only `<s> w1 ...`, and the later ones) and its </s> get the
    in-memory model's probability to 1e-6 nats, and the file's distribution after <s> sums to 1."""
    from pipeline.evaluation.ngram import write_arpa

    lm = KneserNey(order).fit(DOCS)
    write_arpa(lm, tmp_path / "lm.arpa")
    log10p, vocab = _arpa_log10(tmp_path / "lm.arpa")
    held_out = ["मी घरी गेलो .", "घरी मी आलो", "तू", "शाळेत गेलो , आणि तू घरी ये .", "नवीन शब्द घरी गेलो", ", मी"]
    for doc in DOCS + held_out:
        tokens = doc.split() + ["</s>"]
        arpa = [math.log(10) * log10p(["<s>", *tokens[:j]], tokens[j]) for j in range(len(tokens))]
        model = lm.log_prob([tokens[:j] for j in range(len(tokens))], tokens)
        np.testing.assert_allclose(model, arpa, rtol=0, atol=1e-6, err_msg=doc)
    assert sum(10 ** log10p(["<s>"], w) for w in vocab) == pytest.approx(1.0, abs=1e-9)
    assert sum(10 ** log10p(["<s>", "मी"], w) for w in vocab) == pytest.approx(1.0, abs=1e-9)


def test_a_document_start_reads_one_bos():
    """The first word is predicted from <s> alone and the second from `<s> w1`: no context reaches past a document's
    one <s> (none holds two), and matched_order counts <s> as the one word of context it is."""
    from pipeline.evaluation.ngram import BOS, _digits

    lm = KneserNey(4).fit(DOCS)
    for n in (2, 3, 4):
        contexts = [_digits(c, n, lm.bits) for c in lm.tables[n]["ctx"].tolist()]
        assert all(BOS not in ids[1:] for ids in contexts) and any(ids[0] == BOS for ids in contexts)
    assert lm.matched_order([[], ["मी"], ["मी", "घरी"], ["मी", "घरी", "गेलो"]]).tolist() == [1, 2, 3, 3]
    assert lm.matched_order([["मी"]], bos=False).tolist() == [1]
