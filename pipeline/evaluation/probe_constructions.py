"""What the project's probes are made of, and how often the training text teaches it (DESIGN §7).

A probe kind says something about distance only if a trained model is well above chance at its shortest distance,
and a model can only be that if the training text teaches the construction. So the probes are built from
constructions counted in the cleaned train split of configs/full.yaml (`python -m pipeline probe --count --config
configs/full.yaml`: 88,455 documents, 1,576,576 words; data/README.md keeps the table) and chosen by those counts and
by grammar alone, never by a model's scores:

- `person_agreement`: a present auxiliary agrees with its pronoun subject's person and number:
  `मी … आहे` 1,305, `तू … आहेस` 301, `आम्ही … आहोत` 299, `तुम्ही … आहात` 284 clauses in train; each subject takes its
  own form in 67-97 % of its clauses.
- `gender_agreement`: a past auxiliary agrees with its pronoun subject's gender and number:
  `तो … होता` 131, `ती … होती` 76, `ते … होते` 325 clauses; 72-86 % agreeing.
- `recall`: a surname introduced as `{S} यांनी सांगितले .` (the frame: 60 times) comes back after sentences that name
  nobody. News text teaches it: the ten surnames occur 2,570 times and recur within a document 225 times.

Between subject and auxiliary stands an invariant participle (`जात`, `येत`, `बोलत`, `करत`, `करणार`); in train each is
followed by every auxiliary form of both kinds (1 to 390 times). Adverbial fillers carry no gender, number or person
(invariant adverbs, oblique noun phrases, converbs). The agreement kinds of the first generator (`काल एक मुलगा … घरी
गेला`, noun subjects, five intransitive verbs) were dropped: its ten (completion, verb) bigrams occur 23 times in all
in train, six of them never.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.corpus.cleaning import is_word

# kind -> {subject: the auxiliary form that agrees with it}; the candidates of a probe are all forms of its kind.
AGREEMENT = {"person_agreement": {"मी": "आहे", "तू": "आहेस", "आम्ही": "आहोत", "तुम्ही": "आहात"},
             "gender_agreement": {"तो": "होता", "ती": "होती", "ते": "होते"}}
# Invariant participles between subject and auxiliary ("मी जात आहे", "ती बोलत होती").
COMPLETIONS = ("जात", "येत", "बोलत", "करत", "करणार")
# Gender-, number- and person-free adverbials: invariant adverbs, oblique noun phrases, converbs. No nominative noun
# (it could control the auxiliary) and no चा/ची/चे genitive (it shows a gender).
ADVERBIALS = ("अचानक", "शांतपणे", "हळूहळू", "पुन्हा", "लगेच", "नेहमीप्रमाणे", "आनंदाने", "घाईघाईने", "शेवटी",
              "थोड्या वेळाने", "मोठ्या आनंदाने", "मोठ्या उत्साहाने", "खूप थकल्यामुळे", "पावसात भिजल्यामुळे",
              "बाजारातून परतल्यावर", "संध्याकाळच्या वेळी", "कोणालाही न सांगता", "पहाटेच्या थंड वाऱ्यात",
              "नदीच्या काठाने चालत", "आपल्या जुन्या सायकलवरून", "गावातल्या जुन्या मंदिराजवळून")

# Recall: surnames that recur within documents of the training text (>= 5 repeats each).
SURNAMES = ("पाटील", "पवार", "देशमुख", "शिंदे", "चव्हाण", "जोशी", "कुलकर्णी", "कदम", "देशपांडे", "जाधव")
RECALL_FRAME = "यांनी सांगितले ."  # "{S} said." (60 times in train)
RECALL_INTRO = "{name} " + RECALL_FRAME
# Filler sentences of 3-6 words that name nobody and refer to no person.
RECALL_FILLERS = (
    "वातावरण खूप उत्साही होते .", "गर्दी प्रचंड होती .", "पाऊस सुरूच होता .", "सभागृह पूर्णपणे भरले होते .",
    "कार्यक्रम वेळेवर सुरू झाला .", "यंदा पाऊस चांगला झाला .", "महिलांची संख्या लक्षणीय होती .",
    "तरुणांचा सहभाग उल्लेखनीय होता .", "सर्वत्र आनंदाचे वातावरण होते .", "शेतकऱ्यांच्या प्रश्नांवर चर्चा झाली .",
    "विद्यार्थ्यांनी उत्साहाने भाग घेतला .", "सर्वांनी नियमांचे पालन करावे .", "वाहतूक काही काळ ठप्प झाली .",
    "पोलिसांनी चोख बंदोबस्त ठेवला होता .", "या निर्णयाचे सर्वांनी स्वागत केले .", "अनेक प्रश्न अजूनही प्रलंबित आहेत .",
    "पाणीटंचाईचा प्रश्न गंभीर झाला आहे .", "बाजारात भाज्यांचे दर वाढले आहेत .", "गावात स्वच्छता मोहीम राबवण्यात आली .",
    "रस्त्यांची अवस्था खूप खराब आहे .", "नवीन इमारतीचे काम सुरू आहे .", "परीक्षेचा निकाल लवकरच जाहीर होईल .",
    "याबाबत अधिक तपास सुरू आहे .", "लोकांनी टाळ्यांच्या गजरात स्वागत केले .", "शाळेला सुट्टी जाहीर करण्यात आली .",
    "पुढील बैठक पुढच्या महिन्यात होईल .", "हा प्रश्न लवकर सुटला पाहिजे .", "सर्व काही सुरळीत पार पडले .",
    "आरोग्य शिबिरात अनेकांची तपासणी झाली .", "गेल्या वर्षीही असाच प्रकार घडला होता .",
    "या बैठकीला अनेक कार्यकर्ते उपस्थित होते .", "दुपारी जेवणाची व्यवस्था करण्यात आली होती .",
    "शहरात सकाळपासून जोरदार पाऊस पडत होता .", "या वर्षी धरणात पुरेसा पाणीसाठा आहे .",
    "अनेक गावांमध्ये अजूनही वीज नाही .", "नागरिकांनी मोठ्या संख्येने गर्दी केली .", "शहरातील रस्ते पाण्याखाली गेले .",
    "कार्यक्रमाची सुरुवात दीपप्रज्वलनाने झाली .", "दिवसभर बाजारपेठेत वर्दळ होती .", "ग्रामस्थांनी श्रमदान केले .")


def count_constructions(documents: Iterable[str]) -> dict[str, Any]:
    """How often each construction of the generator occurs in cleaned documents (punctuation split off):

    - `{completion} {form}`: the two tokens adjacent, for every completion and every auxiliary form of a kind;
    - `{subject} … {form}`: `form` is the first auxiliary of that kind after `subject` in the same clause (a clause
      ends at any punctuation token);
    - `{S}`, `{S} यांनी`, `{S} … {S}` (a surname seen again later in the same document), and the intro frame.

    {"documents": n, "words": n, "counts": {kind: {construction: count}}}; "words" counts words as every table
    does (punctuation excluded)."""
    forms = {kind: set(subj.values()) for kind, subj in AGREEMENT.items()}
    bigrams = {(c, f) for fs in forms.values() for c in COMPLETIONS for f in fs}
    frame = tuple(RECALL_FRAME.split())
    counts: dict[str, dict[str, int]] = {
        kind: {**{f"{c} {f}": 0 for c in COMPLETIONS for f in sorted(forms[kind], key=list(subj.values()).index)},
               **{f"{s} … {f}": 0 for s in subj for f in subj.values()}} for kind, subj in AGREEMENT.items()}
    counts["recall"] = {**{s: 0 for s in SURNAMES}, **{f"{s} यांनी": 0 for s in SURNAMES},
                        **{f"{s} … {s}": 0 for s in SURNAMES}, RECALL_FRAME: 0}
    subject_kind = {s: kind for kind, subj in AGREEMENT.items() for s in subj}
    form_kind = {f: kind for kind, fs in forms.items() for f in fs}
    surnames = set(SURNAMES)
    n_docs = n_words = 0
    for doc in documents:
        n_docs += 1
        tokens = doc.split()
        pending: dict[str, list[str]] = {kind: [] for kind in AGREEMENT}  # subjects still waiting for their verb
        seen: set[str] = set()
        for i, tok in enumerate(tokens):
            if not is_word(tok):
                for waiting in pending.values():
                    waiting.clear()
                continue
            n_words += 1
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if (tok, nxt) in bigrams:
                counts[form_kind[nxt]][f"{tok} {nxt}"] += 1
            if tok in form_kind:
                kind = form_kind[tok]
                for s in pending[kind]:
                    counts[kind][f"{s} … {tok}"] += 1
                pending[kind].clear()
            if tok in subject_kind:
                pending[subject_kind[tok]].append(tok)
            if tok in surnames:
                counts["recall"][tok] += 1
                counts["recall"][f"{tok} … {tok}"] += tok in seen
                seen.add(tok)
                counts["recall"][f"{tok} यांनी"] += nxt == "यांनी"
            if tuple(tokens[i:i + len(frame)]) == frame:
                counts["recall"][RECALL_FRAME] += 1
    return {"documents": n_docs, "words": n_words, "counts": counts}


def format_counts(result: dict[str, Any]) -> str:
    """The table `probe --count` prints: construction, count in train, per million words, and `share` = the count
    over all rows that start with the same word (how strongly that word predicts the form)."""
    words = max(result["words"], 1)
    lines = [f"{result['documents']:,} documents, {result['words']:,} words",
             f"{'kind':<17} {'construction':<28} {'count':>7} {'per M words':>11} {'share':>6}"]
    for kind, table in result["counts"].items():
        totals: dict[str, int] = {}
        for label, n in table.items():
            if " " in label and kind in AGREEMENT:
                totals[label.split()[0]] = totals.get(label.split()[0], 0) + n
        for label, n in table.items():
            first = label.split()[0]
            share = f"{n / totals[first]:.2f}" if totals.get(first) else ""
            lines.append(f"{kind:<17} {label:<28} {n:>7,} {1e6 * n / words:>11.1f} {share:>6}")
    return "\n".join(lines)
