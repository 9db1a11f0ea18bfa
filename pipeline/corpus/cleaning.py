"""Text cleaning and the definition of a word (DESIGN §3). Pure functions of a string; no I/O.

Kept apart from `prepare.py` so evaluation, the n-gram baseline and the server clean user text with exactly the rules the
training corpus went through.
"""
from __future__ import annotations

import re
import unicodedata

CLEANING_VERSION = "2"  # bump when the rules change: it is part of every cache key

ZWNJ, ZWJ = "\u200c", "\u200d"
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|in|co|io|ly|gov|edu)(?:/\S*)?"
                  r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/\S*", re.IGNORECASE)  # last: any domain with a path
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MENTION = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#(?=\w)")
# A dot or comma between digits belongs to the number (३.५, 1,000): protect it from punctuation splitting.
_NUMBER_SEP = re.compile(r"(?<=\d)([.,])(?=\d)")
_PROTECT = {".": "\ue000", ",": "\ue001"}
_UNPROTECT = str.maketrans({v: k for k, v in _PROTECT.items()})
_SPACES = re.compile(r"\s+")


def is_devanagari(ch: str) -> bool:
    return "\u0900" <= ch <= "\u097f" or "\ua8e0" <= ch <= "\ua8ff"


def _map_char(ch: str) -> str:
    if ch in (ZWJ, ZWNJ) or ch in "\ue000\ue001":
        return ch
    cat = unicodedata.category(ch)
    if cat[0] in "LMN":
        return ch
    if cat[0] == "P" and cat != "Pc":
        return f" {ch} "  # punctuation becomes its own token
    if cat == "Zs" or ch in "\n\r\t":
        return " "
    # control and format characters, symbols, emoji, private use, connector punctuation (_): gone
    return " "


def clean_text(text: str) -> str:
    """NFC; drop URLs, e-mails, @mentions, '#' of hashtags, control characters, symbols; split punctuation off."""
    text = unicodedata.normalize("NFC", text)
    text = _EMAIL.sub(" ", text)  # before URLs: the URL pattern would eat an address's domain and leave "name@"
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _HASHTAG.sub("", text)
    text = _NUMBER_SEP.sub(lambda m: _PROTECT[m.group(1)], text)
    text = "".join(_map_char(ch) for ch in text).translate(_UNPROTECT)
    return _SPACES.sub(" ", text).strip()


def is_word(token: str) -> bool:
    """A word is a whitespace token with at least one letter or digit; punctuation is context, never a target."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in token)


def words(text: str) -> list[str]:
    return [t for t in text.split() if is_word(t)]


def devanagari_share(text: str) -> float:
    letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]
    if not letters:
        return 0.0
    return sum(is_devanagari(ch) for ch in letters) / len(letters)


def drop_reason(cleaned: str, min_devanagari: float, min_words: int) -> str:
    """'' when the document is kept, else why it is dropped."""
    if not cleaned:
        return "empty"
    if devanagari_share(cleaned) < min_devanagari:
        return "not_devanagari"
    if len(words(cleaned)) < min_words:
        return "too_few_words"
    return ""
