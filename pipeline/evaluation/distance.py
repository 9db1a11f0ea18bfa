"""Accuracy by distance (DESIGN §7): how far back the evidence for a target word lies.

    words    मी  घरी  गेलो  .  मी  पुन्हा  घरी
    index    0   1    2        3   4       5        (punctuation is context, never counted)
    d        -   -    -        3   -       4        d = words since the same word last occurred; '-' = first

Buckets are fixed so that every model's table has the same rows.
"""
from __future__ import annotations

from collections.abc import Sequence

DISTANCE_BUCKETS = ("1-4", "5-16", "17-64", "65-256", "257+", "first")
POSITION_BUCKETS = ("0", "1-4", "5-16", "17-64", "65-256", "257+")  # words of context before the target
_EDGES = ((1, 4), (5, 16), (17, 64), (65, 256))
ECHO_WINDOW = 3  # "what was just typed": a suggestion that repeats one of the last three words is an echo


def bucket(d: int | None) -> str:
    """Distance bucket of `d` (>= 1), or 'first' when the word has not occurred before in the document."""
    if d is None:
        return "first"
    if d < 1:
        raise ValueError(f"distance must be >= 1 or None, got {d}")
    for lo, hi in _EDGES:
        if lo <= d <= hi:
            return f"{lo}-{hi}"
    return "257+"


def position_bucket(context_words: int) -> str:
    """Bucket of the words of context available before the target: '0' for a document's first word, then the
    distance buckets (a target with 4 words before it is in '1-4')."""
    if context_words < 0:
        raise ValueError(f"context_words must be >= 0, got {context_words}")
    return "0" if context_words == 0 else bucket(context_words)


def distances(doc_words: Sequence[str]) -> list[int | None]:
    """For each word, the number of words since the same word last occurred in the document (None the first time)."""
    last: dict[str, int] = {}
    out: list[int | None] = []
    for i, w in enumerate(doc_words):
        out.append(i - last[w] if w in last else None)
        last[w] = i
    return out


def accuracy_by(labels: Sequence[str], hits: dict[str, Sequence[bool]], order: Sequence[str]) -> dict[str, dict]:
    """{bucket: {"n": count, name: accuracy or None, ...}} for every bucket in `order` (empty buckets kept)."""
    table: dict[str, dict] = {b: {"n": 0, **{name: 0 for name in hits}} for b in order}
    for i, b in enumerate(labels):
        row = table[b]
        row["n"] += 1
        for name, h in hits.items():
            row[name] += bool(h[i])
    for row in table.values():
        for name in hits:
            row[name] = row[name] / row["n"] if row["n"] else None
    return table


def metric_suffix(b: str) -> str:
    """Bucket label as it appears in metric names: '17-64' -> 'd17_64', '257+' -> 'd257plus', 'first' -> 'first'."""
    return "first" if b == "first" else "d" + b.replace("-", "_").replace("+", "plus")
