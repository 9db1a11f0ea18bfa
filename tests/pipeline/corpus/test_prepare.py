"""Loading (json, text, csv, parquet), split by hash, prepare cache, BPTT windows, rank slices (DESIGN §1, §3, §4)."""
import json

import numpy as np
import pytest

from pipeline.config import DataConfig, load_config
from pipeline.corpus.prepare import _split_of, clean_split, load_raw, prepare
from tests.support import tiny_overrides

DOCS = ["मी आज शाळेत गेलो.", "ती घरी परत आली।", "आम्ही बाजारात भाजी आणली", "This is English only text here",
        "पाऊस खूप पडला, नदीला पूर आला.", "राजा आणि राणी राजवाड्यात राहत होते."]


def _load(tmp_path, name, **kw):
    dc = DataConfig(train=str(tmp_path / name), validation=None, test=None, **kw)
    return load_raw(dc, tmp_path / "cache"), dc


def _all_raw(dd):
    return sorted(t for s in ("train", "validation", "test") for t in dd[s]["raw"])


def test_load_jsonl_and_clean_counts_drops(tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n"
                                              for i, t in enumerate(DOCS)), encoding="utf-8")
    dd, dc = _load(tmp_path, "c.jsonl")
    assert _all_raw(dd) == sorted(DOCS)
    kept, drops = clean_split(dd["train"], dc)
    n_english = sum(t.startswith("This") for t in dd["train"]["raw"])
    assert drops.get("not_devanagari", 0) == n_english
    # punctuation split off as its own token, everything else as written; the English document dropped
    cleaned = dict(zip(DOCS, ["मी आज शाळेत गेलो .", "ती घरी परत आली ।", "आम्ही बाजारात भाजी आणली", None,
                              "पाऊस खूप पडला , नदीला पूर आला .", "राजा आणि राणी राजवाड्यात राहत होते ."]))
    assert list(kept["text"]) == [cleaned[r] for r in dd["train"]["raw"] if cleaned[r] is not None]


@pytest.mark.parametrize("unit", ["line", "paragraph"])
def test_load_plain_text_line_and_paragraph(tmp_path, unit):
    (tmp_path / "c.txt").write_text("पहिली ओळ इथे\nदुसरी ओळ इथे\n\nतिसरी ओळ इथे\n", encoding="utf-8")
    dd, _ = _load(tmp_path, "c.txt", text_unit=unit, split_fractions=(0.0, 0.0))
    docs = [t.strip() for t in dd["train"]["raw"] if t.strip()]
    if unit == "line":
        assert docs == ["पहिली ओळ इथे", "दुसरी ओळ इथे", "तिसरी ओळ इथे"]
    else:
        assert docs == ["पहिली ओळ इथे\nदुसरी ओळ इथे", "तिसरी ओळ इथे"]


def test_load_csv_and_parquet_with_text_field(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"id": range(len(DOCS)), "body": DOCS})
    df.to_csv(tmp_path / "c.csv", index=False)
    df.to_parquet(tmp_path / "c.parquet")
    for name in ("c.csv", "c.parquet"):
        dd, _ = _load(tmp_path, name, text_field="body")
        assert _all_raw(dd) == sorted(DOCS)
        assert dd["train"].column_names == ["raw"]


def test_directory_and_unknown_extension_are_named(tmp_path):
    from pipeline.corpus.prepare import CorpusError

    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match=r"data.train: .*folder is a directory; give a file or a glob"):
        _load(tmp_path, "folder")
    (tmp_path / "corpus.docx").write_text("मी आज शाळेत गेलो", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"cannot tell the format of .*corpus.docx from the extension; set "
                                          r"data.format"):
        _load(tmp_path, "corpus.docx")


def test_hub_dataset_that_cannot_be_loaded_is_named(tmp_path, monkeypatch):
    import datasets

    from pipeline.corpus.prepare import CorpusError

    def unreachable(*args, **kwargs):  # what load_dataset raises offline or for a name that does not exist
        raise ConnectionError("Couldn't reach 'nobody/none' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    dc = DataConfig(hub="nobody/none", train=None, validation=None, test=None)
    with pytest.raises(CorpusError, match=r"data.hub='nobody/none': could not load the dataset \(ConnectionError: "
                                        r".*check the name and your network, or use local files"):
        load_raw(dc, tmp_path)


def test_split_by_hash_deterministic_and_disjoint(tmp_path):
    docs = [f"दस्तऐवज क्रमांक {i} येथे आहे" for i in range(200)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs),
                                      encoding="utf-8")
    dd1, _ = _load(tmp_path, "c.jsonl", split_fractions=(0.1, 0.1))
    # reordering the file must not move any document
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                              for t in reversed(docs)), encoding="utf-8")
    dd2, _ = _load(tmp_path, "r.jsonl", split_fractions=(0.1, 0.1))
    parts = {s: set(dd1[s]["raw"]) for s in ("train", "validation", "test")}
    assert sum(map(len, parts.values())) == 200 and set.union(*parts.values()) == set(docs)
    assert not (parts["train"] & parts["validation"]) and not (parts["train"] & parts["test"])
    assert not (parts["validation"] & parts["test"])
    assert all(len(parts[s]) > 5 for s in ("validation", "test"))
    for s in parts:
        assert set(dd2[s]["raw"]) == parts[s]

def test_split_of_honours_fractions_and_seed():
    texts = [f"doc {i}" for i in range(4000)]
    half = [_split_of(t, 1, (0.5, 0.0)) for t in texts]
    assert set(half) == {"validation", "train"} and abs(half.count("validation") / 4000 - 0.5) < 0.03
    tenth = [_split_of(t, 1, (0.1, 0.2)) for t in texts]
    assert abs(tenth.count("validation") / 4000 - 0.1) < 0.02 and abs(tenth.count("test") / 4000 - 0.2) < 0.02
    other_seed = [_split_of(t, 2, (0.5, 0.0)) for t in texts]
    assert 0.4 < sum(a != b for a, b in zip(half, other_seed)) / 4000 < 0.6  # a new seed is a new, independent draw


def test_a_given_validation_file_is_kept_and_only_test_is_split_off(tmp_path):
    docs = [f"दस्तऐवज क्रमांक {i} येथे आहे" for i in range(100)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs),
                                      encoding="utf-8")
    (tmp_path / "v.jsonl").write_text(json.dumps({"text": "वेगळी पडताळणी ओळ"}, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    dc = DataConfig(train=str(tmp_path / "t.jsonl"), validation=str(tmp_path / "v.jsonl"), test=None,
                    split_fractions=(0.2, 0.2))
    dd = load_raw(dc, tmp_path / "cache")
    assert dd["validation"]["raw"] == ["वेगळी पडताळणी ओळ"]
    assert len(dd["train"]) + len(dd["test"]) == 100 and 5 < len(dd["test"]) < 40


# ----------------------------------------------------------------------------------------------------- prepare

def test_prepare_is_idempotent(prepared, tiny_config):
    again = prepare(tiny_config, log=lambda *a: None)
    assert again.manifest["cached"] is True
    assert again.directory == prepared.directory
    for k in ("data_sha256", "tokens_sha256"):
        assert again.manifest[k] == prepared.manifest[k]
    assert again.tokenizer_sha256 == prepared.tokenizer_sha256
    s = prepared.manifest["splits"]["train"]
    assert s["documents"] > 300 and s["pieces_per_word"] > 1.0
    stream = prepared.stream("train")
    assert stream[0] == 2 and (stream == 3).sum() == s["documents"]  # bos ... eos per document


def test_a_share_of_the_training_documents_keeps_the_tokenizer_and_the_held_out_splits(prepared, tiny_config):
    import dataclasses

    half = prepare(tiny_config.replace(data=dataclasses.replace(tiny_config.data, train_fraction=0.5)),
                   log=lambda *a: None)
    full = prepared.manifest["splits"]
    assert half.directory != prepared.directory and half.tokenizer_sha256 == prepared.tokenizer_sha256
    assert half.manifest["splits"]["train"]["documents"] == round(full["train"]["documents"] / 2)
    for split in ("validation", "test"):
        assert np.array_equal(half.stream(split), prepared.stream(split))
    # the kept documents are whole documents of the full stream, in their order
    docs = lambda s: [tuple(d) for d in np.split(s, np.flatnonzero(s == 3) + 1) if len(d)]  # noqa: E731
    kept, every = docs(half.stream("train")), docs(prepared.stream("train"))
    it = iter(every)
    assert all(any(d == e for e in it) for d in kept)
    # a share sets the run apart (test_config: the default leaves every existing hash as it was)
    half_cfg = tiny_config.replace(data=dataclasses.replace(tiny_config.data, train_fraction=0.5))
    assert half_cfg.hash("data") != tiny_config.hash("data")


@pytest.mark.parametrize("damage", ["manifest", "npy"])
def test_half_written_cache_entry_not_trusted(tiny_corpus, tmp_path, damage):
    cfg = load_config(None, ["name=tiny", *tiny_overrides(tiny_corpus, tmp_path), "data.max_documents=80",
                             "tokenizer.vocab_size=500"])
    first = prepare(cfg, log=lambda *a: None)
    ref = np.array(first.stream("validation"))
    if damage == "manifest":
        (first.directory / "manifest.json").unlink()
    else:
        arr = np.array(first.stream("validation"))
        arr[5] = arr[5] + 1
        np.save(first.directory / "validation.npy", arr)
    messages = []
    again = prepare(cfg, log=messages.append)
    assert again.manifest["cached"] is False and any("rebuilding" in m for m in messages)
    assert np.array_equal(np.array(again.stream("validation")), ref)
    assert again.manifest["tokens_sha256"] == first.manifest["tokens_sha256"]
    assert not list(first.directory.parent.glob(".*tmp*"))
