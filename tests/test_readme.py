"""The README is a manual (STYLE.md habit 16): it quotes no corpus size the embedded data do not have, and names no
make target or `python -m pipeline` command that does not exist — nor leaves one out.

The true sizes are counted here from data/corpus/*.jsonl with the project's own cleaning and word definition
(pipeline/corpus/cleaning.py, the functions `prepare` counts with), so a figure goes stale the moment the data change.
Files checked: README.md and every docs/*.md that is not generated (a generated file starts with `<!-- generated`).
"""
from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.corpus.cleaning import clean_text, drop_reason, words

README = PROJECT_ROOT / "README.md"
SPLITS = ("train", "validation", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "test": "test"}
MANUAL_LINES = 300  # the manual, not counting the pasted output of `make run`
RUN_OUTPUT = re.compile(r"<!-- make-run-output -->.*?<!-- /make-run-output -->", re.S)

# "8,644 words", "94 k training words", "~89 k words", "530 documents", "1.7 M test words", "504 docs"
FIGURE = re.compile(r"(?<![\w.,–-])(?P<num>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(?P<unit>k|M)?\s+"
                    r"(?P<between>(?:[\w-]+\s+){0,2}?)(?P<what>words?|documents?|docs)\b(?!/)")
# where a clause ends: a paragraph, a list item or heading, a table cell, a sentence
CLAUSE_END = re.compile(r"\n\s*\n|\n\s*(?:[-*#]|\d+\.)\s|\||(?<=[.;!?])\s")
# a figure about another text than the embedded splits, or a bound rather than a size
NOT_THE_EMBEDDED_SPLITS = re.compile(r"\bfull\b|\bseeded\b|\bsample of\b|\bsampled\b", re.I)
BOUND_BEFORE = re.compile(r"(?:under|at least|at most|fewer than|more than|over|per|up to|≥|≤|<|>)\s*~?$")


def manual_files() -> list[Path]:
    docs = sorted((PROJECT_ROOT / "docs").glob("*.md"))
    return [README] + [p for p in docs if not p.read_text(encoding="utf-8").startswith("<!-- generated")]


@functools.cache
def embedded_counts() -> dict[str, dict[str, int]]:
    """Per split of configs/default.yaml (the embedded corpus): documents kept by cleaning, their words, and the words
    with a letter (the headline targets: a numeral has none), counted as `prepare` and the evaluation count them."""
    cfg = load_config(PROJECT_ROOT / "configs" / "default.yaml")
    out = {}
    for split in SPLITS:
        docs = n_words = letters = 0
        path = PROJECT_ROOT / getattr(cfg.data, split)
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            text = clean_text(json.loads(line).get(cfg.data.text_field) or "")
            if drop_reason(text, cfg.data.min_devanagari, cfg.data.min_words):
                continue
            ws = words(text)
            docs, n_words = docs + 1, n_words + len(ws)
            letters += sum(any(ch.isalpha() for ch in w) for w in ws)
        out[split] = {"documents": docs, "words": n_words, "letter_words": letters}
    return out


def _clause(text: str, start: int, end: int) -> tuple[str, str]:
    """The text of the figure's clause before `start` and after `end` (at most ~120 characters each way)."""
    before = text[max(0, start - 120):start]
    cuts = list(CLAUSE_END.finditer(before))
    before = before[cuts[-1].end():] if cuts else before
    after = text[end:end + 120]
    cut = CLAUSE_END.search(after)
    return before, after[:cut.start()] if cut else after


def _split_named(before: str, between: str, after: str) -> str | None:
    """The split a figure is about: named between the number and its unit, else the nearest name before it in its
    clause, else the nearest after it."""
    names = r"\b(train|training|validation|test)\b"
    for part, last in ((between, False), (before, True), (after, False)):
        found = re.findall(names, part, re.I)
        if found:
            return SPLIT_NAMES[(found[-1] if last else found[0]).lower()]
    return None


def _matches(num: str, unit: str | None, true: int) -> bool:
    """8,644 matches 8644 exactly; "90 k" or "89.7 k" match 89,741 at the precision written."""
    value = float(num.replace(",", ""))
    if not unit:
        return value == true
    decimals = len(num.split(".")[1]) if "." in num else 0
    return abs(value - true / {"k": 1e3, "M": 1e6}[unit]) <= 0.5 * 10 ** -decimals + 1e-9


def stale_sizes(text: str, counts: dict[str, dict[str, int]]) -> list[str]:
    """Every words/documents figure of `text` about an embedded split that the split does not have."""
    stale = []
    for m in FIGURE.finditer(text):
        before, after = _clause(text, m.start(), m.end())
        if BOUND_BEFORE.search(before) or NOT_THE_EMBEDDED_SPLITS.search(before + m.group(0) + after):
            continue
        what = "documents" if m.group("what").startswith("doc") else \
            "letter_words" if re.match(r"\s*with a letter", after) else "words"
        split = _split_named(before, m.group("between"), after)
        if split is not None:
            allowed = {counts[split][what]}
        elif re.search(r"\bembedded\b", before + m.group(0) + after, re.I):
            allowed = {c[what] for c in counts.values()} | {sum(c[what] for c in counts.values())}
        else:
            continue  # not about the embedded splits
        value = float(m.group("num").replace(",", "")) * {"k": 1e3, "M": 1e6}.get(m.group("unit") or "", 1)
        if value < min(allowed) / 10:
            continue  # a length (a window, a skip, a distance), not a split's size
        if not any(_matches(m.group("num"), m.group("unit"), true) for true in allowed):
            where = split or "embedded corpus"
            stale.append(f"{m.group(0)!r} ({where}: {what.replace('_', ' ')} is "
                         f"{' or '.join(f'{t:,}' for t in sorted(allowed))}) in …{before[-60:]}{m.group(0)}{after[:40]}…")
    return stale


def test_the_checker_finds_stale_sizes_and_passes_true_ones():
    counts = {"train": {"documents": 6053, "words": 89741, "letter_words": 89000},
              "validation": {"documents": 531, "words": 7957, "letter_words": 7800},
              "test": {"documents": 530, "words": 8644, "letter_words": 8448}}
    stale = ["The embedded corpus has 94 k training words.",
             "the test split: 83,299 words in 4,911 documents",
             "601 test documents",
             "`data/corpus/` holds the embedded sample (87 k training words)",
             "fitted on all 7,958 validation words",
             "top-1 on the 8,000 test words with a letter"]
    for text in stale:
        assert stale_sizes(text, counts), text
    assert len(stale_sizes(stale[1], counts)) == 2
    true = ["The embedded corpus has 90 k training words and 89.7 k after all.",
            "the test split (8,644 words in 530 documents)",
            "n = 8,448 test words with a letter in 530 documents",
            "mixture fitted on 7,957 validation words",
            "the full test split has 74,610 words in 4,319 documents",
            "on a seeded sample of 5,000 test words",
            "documents with under 2 words are dropped from the train split",
            "a block of 256 words | test",
            "the model reads 512 words of context",
            "a skip of 3 words in the validation split", "the test split: 9–16 words apart, 35 words/s"]
    for text in true:
        assert stale_sizes(text, counts) == [], text


@pytest.mark.parametrize("path", manual_files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_no_stale_corpus_size(path):
    stale = stale_sizes(path.read_text(encoding="utf-8"), embedded_counts())
    assert not stale, f"{path.name} quotes corpus sizes the embedded data do not have (`make prepare` prints them):\n" \
        + "\n".join(stale)


# ------------------------------------------------------------------------------------------- commands that exist
def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):(?!=)", (PROJECT_ROOT / "Makefile").read_text(), re.M))


def pipeline_commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def code_text(text: str) -> str:
    """What the markdown shows as code: fenced blocks and `inline spans`."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(blocks + spans)


def named(text: str) -> tuple[set[str], set[str]]:
    code = code_text(text)
    return (set(re.findall(r"\bmake ([a-z][a-z-]*)", code)),
            set(re.findall(r"\bpython -m pipeline ([a-z][a-z-]*)", code)))


@pytest.mark.parametrize("path", manual_files(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_named_command_exists(path):
    targets, commands = named(path.read_text(encoding="utf-8"))
    assert not targets - make_targets(), f"{path.name} names make targets the Makefile lacks: {targets - make_targets()}"
    assert not commands - pipeline_commands(), \
        f"{path.name} names `python -m pipeline` commands that pipeline/cli.py lacks: {commands - pipeline_commands()}"


def test_the_readme_names_every_command():
    targets, commands = named(README.read_text(encoding="utf-8"))
    assert not make_targets() - targets, f"make targets the README leaves out: {make_targets() - targets}"
    assert not pipeline_commands() - commands, f"commands the README leaves out: {pipeline_commands() - commands}"


def test_the_readme_is_a_manual():
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
    assert RUN_OUTPUT.search(text), "README.md lost its <!-- make-run-output --> block"
    lines = RUN_OUTPUT.sub("", text).count("\n")
    assert lines <= MANUAL_LINES, (f"README.md is {lines} lines besides make run's output (at most {MANUAL_LINES}): "
                                   "move results to generated files and method to docs/method.md")
