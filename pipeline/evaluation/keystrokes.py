"""Keystroke savings (Trnka & McCoy 2008, "Evaluating word prediction: framing keystroke savings"): what a typist
saves with a suggestion bar of W slots (eval.keystroke_slots, 3 like a phone keyboard's bar).

The typist replays each document word by word. Before the word, and after each character typed, the bar shows the
model's top W for the prefix typed so far (the next word with no prefix; completions of it after that). If the word
is in the bar the typist taps it: one keystroke, and the space comes with it. Otherwise the typist types the next
character. A word never offered costs all its characters and a space. Keystrokes are Unicode code points of the
cleaned (NFC) word, which is what an InScript keyboard types: क्ष is three (क ् ष).

    without the bar:  Σ (len(w) + 1)            with it:  Σ (c_w + 1)   (c_w: characters typed before the tap)
    KSR = 1 − with / without                                             (c_w = len(w) for a word never offered)

Worked example, W = 3, the word आणि (3 code points: आ ण ि): the bar before it shows [व, आणि, या] → tapped after 0
characters: 1 keystroke instead of 4, 3 saved. The word सुमित्रा (8 code points) not offered until "सु" is typed →
2 + 1 = 3 keystrokes instead of 9. Together: 1 − (1 + 3) / (4 + 9) = 69 % saved.

Every scored word is typed (numerals too: they are typed); punctuation is typed with or without the bar and is
left out of both counts. The words are the evaluation's (every word of the split, or the seeded eval.max_words
sample); the intervals are the document-clustered bootstrap of the ratio (pipeline/evaluation/bootstrap.py).

How it is computed: the bar before a word is the scorer's full top W; after a typed character the typist only
needs to know whether the word is in the bar, and a scorer may answer that alone (the network's `settle`:
predict.WordPredictor.top_words), which is the same answer for much less search.

The same bar also says how often a model echoes what was just typed: the top-W before a word that repeat one of the
last 3 words, beside how often the text itself repeats one of its last 3 words.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from pipeline.config import EvalConfig
from pipeline.evaluation.distance import ECHO_WINDOW
from pipeline.evaluation.sampling import sample_of, sampled_documents
from pipeline.evaluation.scorer import Key, Scorer
from pipeline.evaluation.shards import sharded


def simulate(words: list[str], suggest: Callable[[list[int], list[str], bool], list[list[str]]], slots: int
             ) -> tuple[list[int], list[list[str]]]:
    """The typist on N words at once. suggest(rows, prefixes, settle) gives the bar (top `slots`) for words[rows[i]]
    with prefixes[i] typed; with `settle` the bar only has to settle whether the word is in it (the whole bar is
    wanted before the first character, where it is reported). Returns per word the characters typed before it was
    tapped (-1: never offered) and the bar shown before its first character. Rounds go by characters typed, so each
    call holds every word still typed."""
    typed, first = [-1] * len(words), [[] for _ in words]
    active, c = list(range(len(words))), 0
    while active:
        bars = suggest(active, [words[i][:c] for i in active], c > 0)
        later = []
        for i, bar in zip(active, bars):
            if c == 0:
                first[i] = list(bar[:slots])
            if words[i] in bar[:slots]:
                typed[i] = c
            elif c + 1 < len(words[i]):  # with all but the last character typed, typing it is no dearer than a tap
                later.append(i)
        active, c = later, c + 1
    return typed, first


def type_documents(scorer: Scorer, docs: list[list[str]], targets: list[list[int]], slots: int,
                   progress: Callable[[int], object] = lambda n: None, bos: bool = True
                   ) -> dict[Key, tuple[int, list[str]]]:
    """The typist at every target, the bar filled by the scorer's own ranking under each typed prefix: per target,
    the characters typed before the bar offered the word (-1: never) and the bar before the first character."""
    out = {}
    for batch in scorer.read(docs, targets, bos, logp=False):
        words = [docs[d][j] for d, j in batch.keys]
        typed, first = simulate(words, lambda rows, prefixes, settle: batch.words(
            slots, prefixes, rows, [words[i] for i in rows] if settle else None), slots)
        out.update(zip(batch.keys, zip(typed, first)))
        progress(len(batch.keys))
    return out


def run_scorer(scorer: Scorer, tokens: list[list[str]], targets: list[list[int]], chosen: list[list[int]],
               slots: int, workers: int = 1) -> dict[str, Any]:
    """One scorer's typist on the scored words (sampled_targets' output), in their order: per word the characters
    typed before the tap (-1: never), its length, the bar's echoes and whether the text itself repeats."""
    keep, cut, want = sampled_documents(tokens, targets, chosen)
    n = sum(map(len, want))
    with tqdm(total=n, unit="word", desc=f"keystrokes {scorer.name}", unit_scale=True, leave=False) as bar:
        res, = sharded(lambda ds, progress: (type_documents(scorer, [cut[d] for d in ds], [want[d] for d in ds],
                                                            slots, progress),),
                       [len(c) + len(w) for c, w in zip(cut, want)], workers, bar.update, scorer)
        elapsed = bar.format_dict.get("elapsed") or 0.0
    typed, length, echo, repeat = [], [], [], []
    for r, d in enumerate(keep):
        ws = [tokens[d][j] for j in targets[d]]
        for i in chosen[d]:
            t, shown = res[(r, targets[d][i])]
            recent = set(ws[max(0, i - ECHO_WINDOW):i])
            typed.append(t)
            length.append(len(ws[i]))
            echo.append(sum(w in recent for w in shown))
            repeat.append(ws[i] in recent)
    return {"slots": slots, "typed": typed, "length": length, "echo": echo, "repeat": repeat,
            "words_per_s": n / elapsed if elapsed > 0 else None}


def typist_sample(docs: list[str], ec: EvalConfig):
    """sampled_targets for the typist: eval.keystroke_words seeded words (at most the evaluation's own budget), or
    the evaluation's own words when it is not set."""
    budgets = [b for b in (ec.max_words, ec.keystroke_words) if b is not None]
    return sample_of(docs, min(budgets) if budgets else None, ec.sample_seed)
