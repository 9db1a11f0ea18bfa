"""Loading (json, text, csv, parquet), split by hash, prepare cache, BPTT windows, rank slices (DESIGN §1, §3, §4)."""
import json

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig, load_config
from pipeline.data import (BPTTWindows, _split_of, batchify, clean_split, load_raw, prepare, rank_slice)
from tests.conftest import tiny_overrides

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
    assert all(t.endswith((" .", " ।")) or " " in t for t in kept["text"])


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
    from pipeline.data import CorpusError

    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match=r"data.train: .*folder is a directory; give a file or a glob"):
        _load(tmp_path, "folder")
    (tmp_path / "corpus.docx").write_text("मी आज शाळेत गेलो", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"cannot tell the format of .*corpus.docx from the extension; set "
                                          r"data.format"):
        _load(tmp_path, "corpus.docx")


def test_hub_dataset_that_cannot_be_loaded_is_named(tmp_path, monkeypatch):
    import datasets

    from pipeline.data import CorpusError

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
    assert _split_of("x", 1, (0.5, 0.0)) == _split_of("x", 1, (0.5, 0.0))


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


# ------------------------------------------------------------------------------------------------------ windows

def test_stream_too_short_for_the_batch_size():
    from pipeline.data import CorpusError

    with pytest.raises(CorpusError, match=r"token stream \(10 pieces\) is too short for batch_size=8; use a smaller"):
        batchify(np.arange(10), 8)


def test_batchify_columns_are_contiguous():
    rows = batchify(np.arange(26, dtype=np.int32), 3)
    assert rows.shape == (3, 8)
    assert rows.tolist() == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]


def test_windows_in_order_targets_shifted():
    rows = batchify(np.arange(60, dtype=np.int32), 2)  # (2, 30)
    w = BPTTWindows(rows, bptt=7)
    seen = list(w)
    assert len(seen) == len(w) == 5
    xs = torch.cat([x for x, _ in seen], 1)
    ys = torch.cat([y for _, y in seen], 1)
    assert torch.equal(xs, rows[:, :29]) and torch.equal(ys, rows[:, 1:30])
    for x, y in seen:
        assert torch.equal(y[:, :-1], x[:, 1:])


def test_variable_bptt_deterministic_by_seed_and_covers_stream():
    rows = batchify(np.arange(4000, dtype=np.int32), 2)
    lengths = lambda seed: [x.size(1) for x, _ in BPTTWindows(rows, 32, variable=True, seed=seed)]
    a, b, c = lengths(1), lengths(1), lengths(2)
    assert a == b and a != c
    assert sum(a) == rows.size(1) - 1 and len(set(a)) > 3
    w = BPTTWindows(rows, 32, variable=True, seed=1)
    first, second = [x.size(1) for x, _ in w], [x.size(1) for x, _ in w]
    assert first != second  # each epoch draws new lengths, still seeded


def test_state_dict_resumes_at_the_right_window():
    rows = batchify(np.arange(200, dtype=np.int32), 2)
    w = BPTTWindows(rows, bptt=10)
    it = iter(w)
    got = [next(it) for _ in range(4)]  # windows 0..3 handed out and trained on (no prefetch for a sized loader)
    state = w.state_dict()
    w2 = BPTTWindows(rows, bptt=10)
    w2.load_state_dict(state)
    assert w2.resumes_mid_epoch
    nxt = next(iter(w2))
    assert torch.equal(nxt[0], rows[:, 40:50]) and not torch.equal(nxt[0], got[3][0])
    assert sum(1 for _ in w2) == len(w)  # the epoch after a resumed one is whole again


def test_windows_resume_with_real_trainer(tmp_path):
    """Lightning prefetches one batch: the checkpoint must point at the first window the model never trained on."""
    import pytorch_lightning as pl

    rows = batchify(np.arange(400, dtype=np.int32) % 97, 2)

    class Rec(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, i):
            self.seen.append(batch[0][0, 0].item())
            return (self.w * batch[0].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              max_epochs=1, default_root_dir=str(tmp_path))
    full = Rec()
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="at-{step}", every_n_train_steps=7,
                                           save_top_k=-1)
    pl.Trainer(**kw, callbacks=[ckpt_cb]).fit(full, train_dataloaders=BPTTWindows(rows, 10))
    assert len(full.seen) == 20
    rest = Rec()
    pl.Trainer(**kw).fit(rest, train_dataloaders=BPTTWindows(rows, 10), ckpt_path=str(tmp_path / "at-step=7.ckpt"))
    assert rest.seen == full.seen[7:]


def test_rank_slices_contiguous_and_disjoint():
    stream = np.arange(103)
    a, b = rank_slice(stream, 0, 2), rank_slice(stream, 1, 2)
    assert a.tolist() == list(range(0, 51)) and b.tolist() == list(range(51, 102))
    three = [rank_slice(stream, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(three), stream[:102])
