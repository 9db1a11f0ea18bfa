"""What the project's probes are made of, where their fillers come from, and how often training text holds the frames
(DESIGN §7). Pure functions of cleaned documents (punctuation split off); `probes.py` draws the probe set from them.

Each kind has one frame, the same at every distance d (words from the cue to the target):

- `person_agreement`: `{subject} <d-1 words> ___`, the target a present auxiliary that agrees with the pronoun
  subject's person and number: `मी … आहे`, `तू … आहेस`, `आम्ही … आहोत`, `तुम्ही … आहात`.
- `gender_agreement`: the same frame with a past auxiliary and a third-person pronoun: `तो … होता`, `ती … होती`,
  `ते … होते`.
- `recall`: `{S} यांनी सांगितले . <d-3 words of whole sentences> ___`, the target the surname S introduced at the start.

The d-1 words of an agreement probe are *real training text within one clause*: the words that stood right before a
present or past auxiliary in a training document (so what precedes the target is something an auxiliary follows:
`करत`, `उपस्थित`, `तयार`, a locative), stopping at the first break, which none of them is:

- a punctuation token, or a Latin-script token (URL residue such as `pic twitter com`);
- a clause end: a finite form of असणे / होणे (AUXILIARIES), a conjunction or relative word that opens a clause
  (CLAUSE_OPENERS), or a *clause-final word* of the text read: one followed by a sentence end in >= 30 % of its >= 3
  occurrences (finite verbs such as `करतात`, `मिळाले`, `पाहिजे`; `clause_final_words`);
- a cue: a personal or demonstrative pronoun in any case (PRONOUNS: another subject, or a pronoun that shows a person
  or gender); for `gender_agreement` also a gender-marked word (`gender_marked_words`: a noun, adjective,
  participle or genitive whose -ा/-ी/-े form has a sibling in the text, as मुलगा/मुलगी, चांगला/चांगली, `…चा/ची/चे`).

The word before the target is never a perfect participle (`केले`, `गेला`, `झाली`, `गेलो`: PERFECT): with it the
auxiliary agrees with the participle or its object, not the subject (`आम्ही काम केले आहे`). Nominative nouns cannot
be told apart without a tagger and stay: a filler may hold a third-person noun, the same for every answer of a group.

Recall fillers are whole sentences of one training document, verbatim (punctuation included: recall crosses sentences
by design), prose (no verse marker ॥), with none of the ten surnames and no Latin-script token.

`count_constructions` counts each frame in a corpus under these same rules, by distance; `python -m pipeline probe
--count [--config configs/full.yaml]` prints the table that data/README.md quotes.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.corpus.cleaning import is_word

# kind -> {subject: the auxiliary form that agrees with it}; the candidates of a probe are all forms of its kind.
AGREEMENT = {"person_agreement": {"मी": "आहे", "तू": "आहेस", "आम्ही": "आहोत", "तुम्ही": "आहात"},
             "gender_agreement": {"तो": "होता", "ती": "होती", "ते": "होते"}}
PRESENT = ("आहे", "आहेस", "आहोत", "आहात", "आहेत")
PAST = ("होता", "होती", "होते", "होतो", "होतास", "होतात", "होत्या")
# Finite forms of असणे / होणे: each ends a clause. A filler is the stretch before one of PRESENT + PAST.
AUXILIARIES = frozenset((*PRESENT, *PAST, "नाही", "नाहीत", "नाहीस", "नाहीये", "नव्हता", "नव्हती", "नव्हते", "नव्हतो",
                         "नव्हत्या", "होईल", "होतील", "असेल", "असतील", "असतो", "असते", "असतात", "असतोस", "आहेच",
                         "होतेच", "होतं", "असावा", "असावी", "असावे"))
# Conjunctions, complementisers and relative words: a new clause starts at each.
CLAUSE_OPENERS = frozenset("आणि व पण परंतु परंतू मात्र की म्हणून कारण तर जर किंवा अथवा म्हणजे जेव्हा तेव्हा जेथे "
                           "तेथे जिथे तिथे जो जी जे ज्या ज्याने ज्यांनी ज्यांना ज्याला ज्याचा ज्याची ज्याचे ज्यांचा "
                           "ज्यांची ज्यांचे ज्यांच्या ज्यामुळे ज्यात असे अशी असा".split())
# Personal and demonstrative pronouns, every case: a subject, or a word that shows a person, number or gender.
PRONOUNS = frozenset(
    "मी मला माझा माझी माझे माझ्या मज मजला माझं आम्ही आम्हाला आम्हा आमचा आमची आमचे आमच्या आमचं "
    "तू तुला तुझा तुझी तुझे तुझ्या तुज तुजला तुझं तुम्ही तुम्हाला तुम्हा तुमचा तुमची तुमचे तुमच्या तुमचं "
    "आपण आपला आपली आपले आपल्या आपल्याला आपलं "
    "तो ती ते त्या त्याला त्याचा त्याची त्याचे त्याच्या त्याचं त्याने त्यानं तिला तिचा तिची तिचे तिच्या तिचं तिने "
    "तिनं त्यांना त्यांचा त्यांची त्यांचे त्यांच्या त्यांचं त्यांनी "
    "हा ही हे ह्या या याला याचा याची याचे याच्या याने हिला हिचा हिची हिचे हिच्या हिने यांना यांचा यांची यांचे "
    "यांच्या यांनी".split())
SENTENCE_ENDS = frozenset(". ? ! । ॥".split())
FINAL_SHARE, FINAL_MIN = 0.3, 3  # a clause-final word: followed by a sentence end in >= 30 % of its >= 3 occurrences
PERFECT = re.compile(r"(?:ला|ली|ले|लो|लं|ल्या|लेत|लीत|लात|लास|लीस|लेस)$")
LATIN = re.compile(r"[A-Za-z]")
GENDER_VOWELS = "ाीे"
VERSE = "॥"  # closes a verse (classical texts): recall passages are prose, the register of their introduction

# Recall: surnames that recur within documents of the training text (>= 5 repeats each).
SURNAMES = ("पाटील", "पवार", "देशमुख", "शिंदे", "चव्हाण", "जोशी", "कुलकर्णी", "कदम", "देशपांडे", "जाधव")
RECALL_FRAME = "यांनी सांगितले ."  # "{S} said." (the introduction)
RECALL_INTRO = "{name} " + RECALL_FRAME
RECALL_FRAME_WORDS = 3  # the surname, यांनी, सांगितले: the slot after the frame alone is d = 3

# Distances at which the frame counts are reported: each probe distance collects the counts above the previous one.
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def clause_final_words(documents: Iterable[str]) -> frozenset[str]:
    """Words followed by a sentence end in >= FINAL_SHARE of their >= FINAL_MIN occurrences: mostly finite verbs."""
    seen, final = Counter(), Counter()
    for doc in documents:
        tokens = doc.split()
        for tok, nxt in zip(tokens, tokens[1:] + [""]):
            if is_word(tok):
                seen[tok] += 1
                final[tok] += nxt in SENTENCE_ENDS
    return frozenset(w for w, n in seen.items() if n >= FINAL_MIN and final[w] >= FINAL_SHARE * n)


def gender_marked_words(vocabulary: Iterable[str]) -> frozenset[str]:
    """Words whose last vowel sign is -ा/-ी/-े (before an optional emphatic -च) and another of the three gives a word
    of the vocabulary too (मुलगा/मुलगी, चांगला/चांगले, लिहिली/लिहिले), and genitives in -चा/-ची/-चे."""
    vocab = set(vocabulary)
    out = set()
    for w in vocab:
        stem, tail = (w[:-1], "च") if w.endswith("च") and len(w) > 2 else (w, "")
        if len(stem) < 2 or stem[-1] not in GENDER_VOWELS:
            continue
        if stem.endswith(("चा", "ची", "चे")) or any(stem[:-1] + v + tail in vocab for v in GENDER_VOWELS
                                                     if v != stem[-1]):
            out.add(w)
    return frozenset(out)


@dataclass(frozen=True)
class FillerRules:
    """Which tokens may stand between cue and target (module docstring); `final` and `gendered` come from the text
    read (`FillerRules.of(documents)`), the rest are fixed lists."""
    final: frozenset[str] = frozenset()
    gendered: frozenset[str] = frozenset()

    @classmethod
    def of(cls, documents: Sequence[str]) -> FillerRules:
        return cls(clause_final_words(documents),
                   gender_marked_words(t for doc in documents for t in doc.split() if is_word(t)))

    def admits(self, token: str, kind: str) -> bool:
        """True when `token` may be a word of a `kind` filler: a word, no clause end, no cue."""
        if not is_word(token) or LATIN.search(token) or token in AUXILIARIES or token in CLAUSE_OPENERS:
            return False
        if token in self.final or token in PRONOUNS:
            return False
        return not (kind == "gender_agreement" and token in self.gendered)

    @staticmethod
    def may_end(token: str) -> bool:
        """The word right before the target: anything but a perfect participle."""
        return not PERFECT.search(token)


def agreement_sources(documents: Sequence[str], kind: str, rules: FillerRules
                      ) -> list[tuple[int, int, tuple[str, ...]]]:
    """Every place where an auxiliary (PRESENT or PAST) follows admitted words in a document: (document, token index
    of the auxiliary, the admitted words right before it, as far back as the first break). A filler of L words is
    the last L of them; empty when the word before the auxiliary may not end a filler."""
    out = []
    ends = set(PRESENT) | set(PAST)
    for d, doc in enumerate(documents):
        tokens = doc.split()
        run: list[str] = []
        for i, tok in enumerate(tokens):
            if tok in ends and run and rules.may_end(run[-1]):
                out.append((d, i, tuple(run)))
            run = run + [tok] if rules.admits(tok, kind) else []
    return out


def sentences(doc: str) -> list[list[str]]:
    """A document's sentences: token runs closed by a sentence end (a trailing run without one is not a sentence)."""
    out, cur = [], []
    for tok in doc.split():
        cur.append(tok)
        if tok in SENTENCE_ENDS:
            out.append(cur)
            cur = []
    return out


def recall_passages(documents: Sequence[str], lengths: Iterable[int]) -> dict[int, list[tuple[int, int, int, str]]]:
    """For each word count k > 0 in `lengths`: every run of whole consecutive sentences of one document with exactly
    k words of prose (no verse marker ॥), no surname and no Latin-script token, as (document, first sentence, last
    sentence, text)."""
    want = {k for k in lengths if k > 0}
    out: dict[int, list[tuple[int, int, int, str]]] = {k: [] for k in want}
    top = max(want, default=0)
    banned = set(SURNAMES)
    for d, doc in enumerate(documents):
        sents = sentences(doc)
        clean = [not any(t in banned or t == VERSE or LATIN.search(t) for t in s) for s in sents]
        counts = [sum(map(is_word, s)) for s in sents]
        for i in range(len(sents)):
            total = 0
            for j in range(i, len(sents) if counts[i] else i):  # no passage starts with punctuation alone
                if not clean[j] or total + counts[j] > top:
                    break
                total += counts[j]
                if total in want and counts[j]:  # a sentence of punctuation alone adds no passage of its own
                    out[total].append((d, i, j, " ".join(t for s in sents[i:j + 1] for t in s)))
    return out


# ---------------------------------------------------------------------------------------------------------- counting

def _bucket(d: int) -> str:
    """The label of the COUNT_BUCKETS cell that holds distance d: "1", "2", "3-4", ..., "65-128", "129+"."""
    lo = 0
    for edge in COUNT_BUCKETS:
        if d <= edge:
            return str(edge) if edge == lo + 1 else f"{lo + 1}-{edge}"
        lo = edge
    return f"{lo + 1}+"


def bucket_labels() -> list[str]:
    return [_bucket(e) for e in COUNT_BUCKETS] + [_bucket(COUNT_BUCKETS[-1] + 1)]


def count_constructions(documents: Sequence[str], rules: FillerRules | None = None) -> dict[str, Any]:
    """How often each frame of the probes occurs in cleaned documents, under the filler rules of this module (derived
    from the same documents unless given):

    - `{subject} … {form}`: a subject pronoun of the kind, then admitted words only (none at all is d = 1), then the
      auxiliary `form`, the word before it no perfect participle; by distance d = words from subject to auxiliary.
      Every form of the kind is counted, so `share` (in `format_counts`) is how often a subject takes its own form;
    - recall: each surname, `{S} यांनी`, `{S} … {S}` per surname and summed (a surname again, by distance from its
      previous mention in the document), `{S} यांनी … {S}` (again after being introduced as an agent), the
      introduction `{S} यांनी सांगितले .` and the whole frame `{S} यांनी सांगितले . … {S}`, by distance from the
      introduction.

    {"documents", "words", "counts": {kind: {label: n}}, "by_distance": {kind: {label: {bucket: n}}}}; "words" counts
    words as every table does (punctuation excluded)."""
    documents = list(documents)
    rules = rules or FillerRules.of(documents)
    counts: dict[str, dict[str, int]] = {}
    by_distance: dict[str, dict[str, Counter]] = {}
    for kind, subj in AGREEMENT.items():
        counts[kind] = {f"{s} … {f}": 0 for s in subj for f in subj.values()}
        by_distance[kind] = {label: Counter() for label in counts[kind]}
    again, agent = "{S} … {S}", "{S} यांनी … {S}"
    intro = "{S} " + RECALL_FRAME
    frame = intro + " … {S}"
    counts["recall"] = {**{s: 0 for s in SURNAMES}, **{f"{s} यांनी": 0 for s in SURNAMES},
                        **{f"{s} … {s}": 0 for s in SURNAMES}, again: 0, agent: 0, intro: 0, frame: 0}
    by_distance["recall"] = {again: Counter(), agent: Counter(), frame: Counter()}
    frame_tokens = RECALL_FRAME.split()
    n_docs = n_words = 0
    for doc in documents:
        n_docs += 1
        tokens = doc.split()
        position = [0] * len(tokens)  # word index of each token (punctuation: the next word's)
        for i, tok in enumerate(tokens):
            position[i] = n_words
            n_words += is_word(tok)
        for kind, subj in AGREEMENT.items():
            forms = set(subj.values())
            pending: tuple[str, int] | None = None  # the subject and its token index, while only admitted words follow
            for i, tok in enumerate(tokens):
                if pending and tok in forms and (i == pending[1] + 1 or rules.may_end(tokens[i - 1])):
                    label = f"{pending[0]} … {tok}"
                    counts[kind][label] += 1
                    by_distance[kind][label][_bucket(position[i] - position[pending[1]])] += 1
                if tok in subj:
                    pending = (tok, i)
                elif not rules.admits(tok, kind):
                    pending = None
        last: dict[str, int] = {}  # surname -> word index of its previous mention
        opened: dict[str, dict[str, int]] = {agent: {}, frame: {}}  # surname -> word index of its `S यांनी` / intro
        for i, tok in enumerate(tokens):
            if tok not in SURNAMES:
                continue
            counts["recall"][tok] += 1
            if tok in last:
                counts["recall"][f"{tok} … {tok}"] += 1
                counts["recall"][again] += 1
                by_distance["recall"][again][_bucket(position[i] - last[tok])] += 1
            last[tok] = position[i]
            for label, since in opened.items():
                if tok in since:
                    counts["recall"][label] += 1
                    by_distance["recall"][label][_bucket(position[i] - since.pop(tok))] += 1
            nxt = tokens[i + 1:i + 1 + len(frame_tokens)]
            if nxt[:1] == ["यांनी"]:
                counts["recall"][f"{tok} यांनी"] += 1
                opened[agent][tok] = position[i]
            if nxt == frame_tokens:
                counts["recall"][intro] += 1
                opened[frame][tok] = position[i]
    return {"documents": n_docs, "words": n_words, "counts": counts,
            "by_distance": {k: {label: dict(c) for label, c in t.items()} for k, t in by_distance.items()}}


def format_counts(result: dict[str, Any]) -> str:
    """The table `probe --count` prints: construction, count, per million words, `share` = the count over all rows of
    its kind that start with the same word (how often that subject takes that form), and for each frame its count by
    distance d (words from cue to target, in the buckets 1, 2, 3-4, 5-8, ...)."""
    words = max(result["words"], 1)
    buckets = bucket_labels()
    lines = [f"{result['documents']:,} documents, {result['words']:,} words",
             f"{'kind':<17} {'construction':<34} {'count':>7} {'per M words':>11} {'share':>6}   by distance d: "
             + " ".join(f"{b:>6}" for b in buckets)]
    for kind, table in result["counts"].items():
        totals: dict[str, int] = {}
        for label, n in table.items():
            if kind in AGREEMENT:
                totals[label.split()[0]] = totals.get(label.split()[0], 0) + n
        for label, n in table.items():
            first = label.split()[0]
            share = f"{n / totals[first]:.2f}" if totals.get(first) else ""
            dist = result.get("by_distance", {}).get(kind, {}).get(label)
            cells = "   " + " " * 15 + " ".join(f"{dist.get(b, 0):>6}" for b in buckets) if dist is not None else ""
            lines.append(f"{kind:<17} {label:<34} {n:>7,} {1e6 * n / words:>11.1f} {share:>6}{cells}")
    return "\n".join(lines)
