"""Corpus loading and cleaning (HF `datasets`) and the prepared token streams (DESIGN §1, §3).

    files / hub ─ load_raw ─> raw split ─ clean (map + filter, cached) ─> documents ─ tokenizer ─> ids (map, cached)
                                                      ─ concatenate `bos ids eos` per document ─> one stream per split

`prepare(cfg)` runs the chain once and writes `data/cache/prepared/<key>/` (streams as .npy plus a manifest with the
hashes); every later stage reads those files. A cache entry is trusted only when its manifest is present and its
hashes match: entries are written to a temporary directory and renamed into place, so a killed run leaves nothing a
later run would believe.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, DataConfig
from pipeline.corpus.cleaning import CLEANING_VERSION, clean_text, drop_reason, words

SPLITS = ("train", "validation", "test")
_FORMATS = {".jsonl": "json", ".json": "json", ".txt": "text", ".text": "text", ".csv": "csv", ".parquet": "parquet"}


class CorpusError(ValueError):
    """A corpus file or dataset cannot be used; the message names it and the fix."""


# ------------------------------------------------------------------------------------------------------------ loading

def split_files(dc: DataConfig) -> dict[str, list[Path]]:
    """Expand the configured files or globs per split; a missing or empty file is an error naming it."""
    out: dict[str, list[Path]] = {}
    for split in SPLITS:
        pattern = getattr(dc, split)
        if pattern is None:
            continue
        path = Path(pattern)
        matches = sorted(Path(p) for p in glob.glob(str(path))) if glob.has_magic(str(path)) else [path]
        if not matches or not all(p.exists() for p in matches):
            raise CorpusError(f"data.{split}: {path} does not exist; point data.{split} at a JSON Lines, text, CSV "
                              "or Parquet file (or glob), e.g. --set data.train=path/to/train.jsonl")
        for p in matches:
            if p.is_dir():
                raise CorpusError(f"data.{split}: {p} is a directory; give a file or a glob such as {p}/*.jsonl")
            if p.stat().st_size == 0:
                raise CorpusError(f"data.{split}: {p} is empty; give a file with at least one document")
        out[split] = matches
    return out


def _format_of(dc: DataConfig, files: list[Path]) -> str:
    if dc.format != "auto":
        return dc.format
    kinds = {_FORMATS.get(p.suffix.lower()) for p in files}
    if None in kinds or len(kinds) != 1:
        raise CorpusError(f"cannot tell the format of {', '.join(map(str, files))} from the extension; "
                          "set data.format to json, text, csv or parquet")
    return kinds.pop()


def _locate_bad_line(path: Path, fmt: str) -> str:
    """Find the first line a reader chokes on, so the error can name it (datasets' own message does not)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path}, line {number}: invalid UTF-8 at byte {e.start}; re-save the file as UTF-8"
            if fmt == "json" and line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    return f"{path}, line {number}: malformed JSON ({e.msg}); fix or remove that line"
    return f"{path}: cannot be read as {fmt}; check the file format (data.format)"


def _check_utf8(path: Path) -> None:
    # pyarrow's text readers replace or crash on bad bytes; check up front so the user learns the line
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}, line {number}: invalid UTF-8 at byte {e.start}; "
                                  "re-save the file as UTF-8") from None


def load_raw(dc: DataConfig, cache_dir: Path, extra: tuple[str | None, ...] = ()):
    """A `datasets.DatasetDict` (or IterableDatasetDict when streaming) with a `raw` text column per split, and the
    `extra` columns (e.g. the documents' source) that the corpus has."""
    import datasets

    if dc.hub is not None:
        try:
            dd = datasets.load_dataset(dc.hub, dc.hub_config, cache_dir=str(cache_dir / "hf"),
                                       streaming=dc.streaming)
        except Exception as e:  # noqa: BLE001 - the hub raises many types; the user needs one sentence
            raise CorpusError(f"data.hub={dc.hub!r}: could not load the dataset ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); check the name and your network, or "
                              "use local files with data.train") from None
    else:
        files = split_files(dc)
        fmt = _format_of(dc, [p for ps in files.values() for p in ps])
        if fmt in ("json", "text", "csv"):
            for p in (p for ps in files.values() for p in ps):
                _check_utf8(p)
        kwargs: dict[str, Any] = {}
        if fmt == "text":
            kwargs["sample_by"] = dc.text_unit
        try:
            dd = datasets.load_dataset(fmt, data_files={s: [str(p) for p in ps] for s, ps in files.items()},
                                       cache_dir=str(cache_dir / "hf"), streaming=dc.streaming, **kwargs)
        except Exception as e:  # noqa: BLE001
            bad = next((_locate_bad_line(p, fmt) for ps in files.values() for p in ps
                        if "line" in _locate_bad_line(p, fmt)), None)
            raise CorpusError(bad or f"could not read the corpus as {fmt} ({type(e).__name__}); "
                                     "check data.format and the files") from None
    if dc.text_field not in (dd["train"].column_names or [dc.text_field]):
        raise CorpusError(f"data.text_field={dc.text_field!r} is not a column of the corpus; columns are "
                          f"{dd['train'].column_names}: set data.text_field to the one holding the text")
    if "validation" not in dd or "test" not in dd:
        dd = _split_by_hash(dd, dc)
    columns = dd["train"].column_names or []
    keep = [dc.text_field, *(c for c in extra if c and c in columns and c not in (dc.text_field, "raw", "text"))]
    return type(dd)({s: dd[s].select_columns(keep).rename_column(dc.text_field, "raw")
                     if dc.text_field != "raw" else dd[s].select_columns(keep) for s in SPLITS})


def _split_of(text: str, seed: int, fractions: tuple[float, float]) -> str:
    # A document's split depends on its text alone, so it never moves when the file is reordered or grows.
    u = int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big") / 2**64
    return "validation" if u < fractions[0] else "test" if u < sum(fractions) else "train"


def _split_by_hash(dd, dc: DataConfig):
    """Cut the splits that have no file of their own out of train; a split given as a file is kept as it is."""
    field = dc.text_field
    source = dd["train"]
    missing = [s for s in ("validation", "test") if s not in dd]
    out = {s: dd[s] for s in dd if s != "train"}
    for split in missing:
        out[split] = source.filter(lambda t, s=split: _split_of(t or "", dc.split_seed, dc.split_fractions) == s,
                                   input_columns=field)
    out["train"] = source.filter(lambda t: _split_of(t or "", dc.split_seed, dc.split_fractions) not in missing,
                                 input_columns=field)
    return type(dd)({s: out[s] for s in SPLITS})


# ----------------------------------------------------------------------------------------------------------- cleaning

def _clean_batch(raw: list[str | None], min_devanagari: float, min_words: int) -> dict[str, list]:
    cleaned = [clean_text(t or "") for t in raw]
    return {"text": cleaned, "drop": [drop_reason(c, min_devanagari, min_words) for c in cleaned]}


def clean_split(ds, dc: DataConfig):
    """(kept documents with a `text` column, counts of dropped documents by reason). Cached by `datasets`."""
    ds = ds.map(_clean_batch, batched=True, input_columns="raw", remove_columns=["raw"], num_proc=None
                if dc.streaming or dc.num_proc == 1 else dc.num_proc,
                fn_kwargs={"min_devanagari": dc.min_devanagari, "min_words": dc.min_words},
                **({} if dc.streaming else {"desc": "clean"}))
    if dc.streaming:
        return ds, None
    drops = Counter(r for r in ds["drop"] if r)
    ds = ds.filter(lambda r: r == "", input_columns="drop", desc="drop").remove_columns("drop")
    if dc.max_documents is not None and len(ds) > dc.max_documents:
        ds = ds.select(range(dc.max_documents))
    return ds, dict(drops)


def corpus_fingerprint(cfg: Config) -> str:
    """SHA-256 over the raw corpus bytes and every setting that changes the cleaned text."""
    dc = cfg.data
    h = hashlib.sha256()
    settings = {k: v for k, v in cfg.to_dict()["data"].items()
                if k in ("hub", "hub_config", "format", "text_field", "text_unit", "split_fractions", "split_seed",
                         "min_devanagari", "min_words", "max_documents")}
    h.update(json.dumps({"cleaning": CLEANING_VERSION, **settings}, sort_keys=True).encode())
    if dc.hub is None:
        for split, paths in split_files(dc).items():
            for p in paths:
                h.update(f"{split}:{p.name}:".encode())
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------- prepared corpus

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Prepared:
    """What `prepare` leaves behind: one token stream per split, the tokenizer, hashes and statistics."""
    directory: Path
    manifest: dict[str, Any]

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.manifest["tokenizer"]["path"])

    def stream(self, split: str) -> np.ndarray:
        return np.load(self.directory / f"{split}.npy", mmap_mode="r")

    @property
    def data_sha256(self) -> str:
        return self.manifest["data_sha256"]

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]


def _cache_root(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir)


def _valid_entry(directory: Path) -> dict[str, Any] | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        for name, digest in manifest["files"].items():
            if sha256_file(directory / name) != digest:
                return None
        if sha256_file(Path(manifest["tokenizer"]["path"])) != manifest["tokenizer"]["sha256"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return manifest


def clean_corpus(cfg: Config, fingerprint: str | None = None) -> tuple[Any, dict[str, dict[str, int]], str]:
    """Cleaned documents per split, drop counts per split, and the corpus fingerprint."""
    cache = _cache_root(cfg)
    fingerprint = fingerprint or corpus_fingerprint(cfg)  # prepare() has it already: hash the raw bytes once
    raw = load_raw(cfg.data, cache, (cfg.eval.source_field,))
    cleaned, drops = {}, {}
    for split in SPLITS:
        cleaned[split], drops[split] = clean_split(raw[split], cfg.data)
        if not cfg.data.streaming and len(cleaned[split]) == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in drops[split].items()) or "no documents"
            raise CorpusError(f"data.{split}: every document was dropped by cleaning ({reasons}); the corpus needs "
                              f"documents with at least {cfg.data.min_words} words and "
                              f"{cfg.data.min_devanagari:.0%} Devanagari letters (data.min_devanagari)")
    return cleaned, drops, fingerprint


def train_share(ds, share: float, seed: int):
    """A seeded `share` of the documents (at least one), in their order."""
    n = len(ds)
    keep = np.random.default_rng(seed).choice(n, max(1, round(share * n)), replace=False)
    return ds.select(np.sort(keep).tolist())


def prepare(cfg: Config, log=print) -> Prepared:
    """Load, clean, train or load the tokenizer, encode, write streams. Idempotent: a valid entry is reused."""
    from pipeline.corpus.tokenizer import Tokenizer, train_or_load_tokenizer

    t0 = time.perf_counter()
    fingerprint = corpus_fingerprint(cfg)
    share = cfg.data.train_fraction
    if share < 1 and cfg.data.streaming:
        raise CorpusError(f"data.train_fraction={share} needs the document count, which a streamed corpus does not "
                          "have: set data.streaming: false, or data.train_fraction: 1")
    # the tokenizer's fingerprint leaves train_fraction out (it reads every training document); the streams' key not
    key = hashlib.sha256(f"{fingerprint}:{cfg.hash('tokenizer')}{f':train{share!r}' if share < 1 else ''}".encode()
                         ).hexdigest()[:16]
    directory = _cache_root(cfg) / "prepared" / key
    manifest = _valid_entry(directory)
    if manifest is not None:
        manifest["seconds"] = round(time.perf_counter() - t0, 2)
        manifest["cached"] = True
        return Prepared(directory, manifest)
    if directory.exists():
        log(f"cache entry {directory} is incomplete or corrupted: rebuilding it")

    cleaned, drops, _ = clean_corpus(cfg, fingerprint)
    t_clean = time.perf_counter() - t0
    tok_path = train_or_load_tokenizer(cfg, cleaned["train"], fingerprint, log=log)
    tok = Tokenizer(tok_path)
    if share < 1:
        cleaned["train"] = train_share(cleaned["train"], share, cfg.data.split_seed)
    t1 = time.perf_counter()
    tmp = directory.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files, stats = {}, {}
    for split in SPLITS:
        stream, n_docs, n_words = encode_split(cleaned[split], tok, str(tok_path))
        np.save(tmp / f"{split}.npy", stream)
        files[f"{split}.npy"] = sha256_file(tmp / f"{split}.npy")
        stats[split] = {"documents": n_docs, "dropped": drops[split] or {}, "words": n_words,
                        "pieces": int(len(stream) - 2 * n_docs),
                        "pieces_per_word": round((len(stream) - 2 * n_docs) / max(n_words, 1), 3)}
    manifest = {
        "key": key, "data_sha256": fingerprint,
        "tokens_sha256": hashlib.sha256("".join(files[f"{s}.npy"] for s in SPLITS).encode()).hexdigest(),
        "tokenizer": {"path": str(tok_path), "sha256": sha256_file(tok_path), "vocab_size": tok.vocab_size,
                      "model_type": cfg.tokenizer.model_type},
        "files": files, "splits": stats,
        "timing": {"clean_s": round(t_clean, 2), "encode_s": round(time.perf_counter() - t1, 2)},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["cached"] = False
    return Prepared(directory, manifest)


def _encode_batch(text: list[str], model_path: str) -> dict[str, list]:
    from pipeline.corpus.tokenizer import Tokenizer

    tok = Tokenizer.cached(model_path)
    return {"ids": tok.encode_batch(text), "n_words": [len(words(t)) for t in text]}


def encode_split(ds, tok, model_path: str) -> tuple[np.ndarray, int, int]:
    """One stream `bos ids eos bos ids eos ...` for a split; `datasets` caches the encoded ids."""
    ds = ds.map(_encode_batch, batched=True, batch_size=1000, input_columns="text",
                fn_kwargs={"model_path": model_path}, **({} if not hasattr(ds, "__len__") else {"desc": "encode"}))
    parts: list[np.ndarray] = []
    n_docs = n_words = 0
    bos, eos = np.array([tok.bos_id], np.int32), np.array([tok.eos_id], np.int32)
    for batch in ds.iter(batch_size=1000):
        for ids, nw in zip(batch["ids"], batch["n_words"]):
            parts += [bos, np.asarray(ids, np.int32), eos]
            n_docs += 1
            n_words += nw
    return (np.concatenate(parts) if parts else np.zeros(0, np.int32)), n_docs, n_words


def documents(cfg: Config, split: str) -> list[str]:
    """Cleaned documents of one split (for evaluation); served from the `datasets` cache after `prepare`."""
    cleaned, _, _ = clean_corpus(cfg)
    return list(cleaned[split]["text"])


def sources_of(ds, source_field: str | None) -> list[str]:
    """Each cleaned document's source (eval.source_field), "" for a corpus without that column."""
    if source_field and source_field in (ds.column_names or []):
        return ["" if s is None else str(s) for s in ds[source_field]]
    return [""] * len(ds)


def file_documents(path: str, cfg: Config) -> tuple[list[str], list[str]]:
    """Cleaned documents of any corpus file the loader reads (the training rules), and their sources."""
    dc = dataclasses.replace(cfg.data, train=path, validation=path, test=path, hub=None)
    raw = load_raw(dc, Path(cfg.data.cache_dir), (cfg.eval.source_field,))
    ds, _ = clean_split(raw["test"], dc)
    return list(ds["text"]), sources_of(ds, cfg.eval.source_field)


def document_sources(cfg: Config, split: str) -> list[str]:
    """The source of every document `documents(cfg, split)` returns, in the same order."""
    cleaned, _, _ = clean_corpus(cfg)
    return sources_of(cleaned[split], cfg.eval.source_field)
