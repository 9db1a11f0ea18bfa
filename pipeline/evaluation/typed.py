"""What a user has typed, read as the search reads it: the context and the prefix of the word being typed
(`typed_word`), the bytes each piece spells (`piece_bytes`) and which pieces can spell a prefix (`PrefixPieces`).
Shared by the whole-word search (predict.py), the server and the typist."""
from __future__ import annotations

import bisect
import unicodedata

from pipeline.corpus.cleaning import clean_text, is_word
from pipeline.corpus.tokenizer import Tokenizer


def word_char(ch: str) -> bool:
    """A character a cleaned word can hold: letters, marks, digits, ZWJ/ZWNJ, and . or , inside numbers."""
    return unicodedata.category(ch)[0] in "LMN" or ch in "\u200c\u200d.,"


def typed_word(text: str, mode: str = "auto") -> tuple[list[str], str]:
    """(context tokens, typed prefix) of what a user has typed, both cleaned (NFC) as the corpus was. "auto": text
    that ends in a word character (letter, mark, digit, ZWJ/ZWNJ) ends in a word being typed, which is the prefix;
    text that ends in whitespace or punctuation asks for the next word (prefix ""). "next" and "complete" force a
    reading: "complete" takes the last word even when whitespace follows it."""
    if mode not in ("auto", "next", "complete"):
        raise ValueError(f"mode must be \"auto\", \"next\" or \"complete\", got {mode!r}")
    tokens = clean_text(text).split()
    # the raw text's last whitespace-separated chunk, cleaned, must end in the same word: cleaning drops URLs, e-mails
    # and @mentions, and "नमस्कार @rah" must not complete नमस्कार
    raw_tail = text.split()[-1] if text.split() else ""
    tail = clean_text(raw_tail).split()
    ends_in_word = bool(text) and (word_char(text[-1]) and text[-1] not in ".,") and bool(tail) and bool(tokens) \
        and tail[-1] == tokens[-1]
    completing = mode == "complete" or (mode == "auto" and ends_in_word)
    if completing and tokens and is_word(tokens[-1]):
        return tokens[:-1], tokens[-1]
    if mode == "complete":
        raise ValueError("mode \"complete\" needs text that ends in a word (the prefix to complete); this text "
                         "ends in punctuation or holds no word")
    return tokens, ""


def piece_bytes(tok: Tokenizer) -> list[bytes]:
    """The UTF-8 bytes each piece spells, `▁` as a space; a byte-fallback piece is its one byte; control pieces
    spell nothing. Prefix matching is done on these bytes, so a prefix that ends inside a conjunct (क् of क्ष) or a
    byte-fallback character still matches exactly: UTF-8 is prefix-free per code point."""
    out = []
    for i, p in enumerate(tok.pieces):
        if tok.sp.is_control(i) or tok.sp.is_unknown(i):
            out.append(b"")
        elif tok.sp.is_byte(i):
            out.append(bytes([int(p[3:5], 16)]))
        else:
            out.append(p.replace("\u2581", " ").encode("utf-8"))
    return out


class PrefixPieces:
    """Which pieces can come next when `rest` (bytes) of a typed prefix is still to be spelled: those that start
    with rest (they finish it) and those that rest starts with (they spell part of it). A sorted list finds the
    first kind by bisection, a dict the second; answers are memoised (bounded)."""

    def __init__(self, spelled: list[bytes]):
        order = sorted((b, i) for i, b in enumerate(spelled) if b)
        self.keys, self.ids = [b for b, _ in order], [i for _, i in order]
        self.exact: dict[bytes, list[int]] = {}
        for b, i in order:
            self.exact.setdefault(b, []).append(i)
        self._memo: dict[bytes, list[int]] = {}

    def __call__(self, rest: bytes) -> list[int]:
        got = self._memo.get(rest)
        if got is None:
            lo = bisect.bisect_left(self.keys, rest)
            hi = bisect.bisect_right(self.keys, rest + b"\xff" * 64, lo)
            got = self.ids[lo:hi] + [i for m in range(1, len(rest)) for i in self.exact.get(rest[:m], ())]
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[rest] = got
        return got
