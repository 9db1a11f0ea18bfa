"""SentencePiece: trained on the cleaned *train* split only, cached by (corpus hash, settings) (DESIGN §3).

Word boundaries must survive tokenization, because evaluation assembles whole words from pieces: a piece that starts
with `▁` begins a word; every other piece continues the current one.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import sentencepiece as spm

from pipeline.config import Config

WORD_START = "\u2581"  # ▁
PAD, UNK, BOS, EOS = 0, 1, 2, 3
_TRAIN_LINE_WORDS = 200  # SentencePiece skips training lines over ~4 kB, and classical documents are far longer


class TokenizerError(ValueError):
    """The tokenizer cannot be trained or loaded; the message says why and what to change."""


class Tokenizer:
    """A thin, picklable wrapper: encode/decode plus the piece facts evaluation needs."""

    def __init__(self, model_path: str | Path):
        self.model_path = str(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_path)
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD, UNK, BOS, EOS
        self.pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        # starts_word[i]: piece i opens a new word (or is a control piece that ends the current one)
        self.starts_word = [p.startswith(WORD_START) or self.sp.is_control(i) for i, p in enumerate(self.pieces)]

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def cached(model_path: str) -> "Tokenizer":
        return Tokenizer(model_path)

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_path"])

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (PAD, BOS, EOS)])

    def sha256(self) -> str:
        return hashlib.sha256(Path(self.model_path).read_bytes()).hexdigest()


def _training_lines(texts) -> "list[str]":
    lines = []
    for text in texts:
        ws = text.split(" ")
        lines += [" ".join(ws[i:i + _TRAIN_LINE_WORDS]) for i in range(0, len(ws), _TRAIN_LINE_WORDS)]
    return lines


def train_or_load_tokenizer(cfg: Config, train_docs, corpus_fingerprint: str, log=print) -> Path:
    """Path of the tokenizer model for this corpus and these settings; trains it when not cached."""
    tc = cfg.tokenizer
    key = hashlib.sha256(f"{corpus_fingerprint}:{cfg.hash('tokenizer')}:{spm.__version__}".encode()).hexdigest()[:16]
    directory = Path(cfg.data.cache_dir) / "tokenizer" / key
    model = directory / "spm.model"
    if model.exists() and (directory / "spm.model.sha256").exists():
        if hashlib.sha256(model.read_bytes()).hexdigest() == (directory / "spm.model.sha256").read_text().strip():
            return model
        log(f"tokenizer cache {model} does not match its hash: retraining")
    tmp = directory.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lines = [line for batch in train_docs.iter(batch_size=1000) for line in _training_lines(batch["text"])]
    model_bytes = io.BytesIO()
    log(f"training a {tc.vocab_size}-piece {tc.model_type} SentencePiece model on the train split ...")
    spm.set_random_generator_seed(tc.seed)
    try:
        spm.SentencePieceTrainer.train(
            # sentences from memory, model to memory: no file paths end up in the model's trainer spec, so the same
            # corpus and settings give byte-identical models (the SHA-256 is part of the cache key downstream)
            sentence_iterator=iter(lines), model_writer=model_bytes, model_type=tc.model_type,
            vocab_size=tc.vocab_size, character_coverage=1.0, byte_fallback=True,
            # identity: no NFKC folding, so nukta forms and ZWJ/ZWNJ reach the model as the cleaner left them
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            input_sentence_size=tc.input_sentence_size, shuffle_input_sentence=True,
            num_threads=max(1, os.cpu_count() or 1), minloglevel=2,
        )
    except RuntimeError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
        if m:
            raise TokenizerError(f"tokenizer.vocab_size={tc.vocab_size} is larger than this corpus allows "
                                 f"(at most {m.group(2)}); set --set tokenizer.vocab_size={m.group(2)} or lower"
                                 ) from None
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if m:
            raise TokenizerError(f"tokenizer.vocab_size={tc.vocab_size} is too small for this corpus: its characters "
                                 f"and the 256 byte-fallback pieces need at least {m.group(2)}; set "
                                 f"--set tokenizer.vocab_size={int(m.group(2)) + 100} or higher") from None
        raise TokenizerError(f"SentencePiece training failed: {str(e).strip().splitlines()[-1]}") from None
    (tmp / "spm.model").write_bytes(model_bytes.getvalue())
    (tmp / "spm.model.sha256").write_text(hashlib.sha256(model_bytes.getvalue()).hexdigest())
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return model
