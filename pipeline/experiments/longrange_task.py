"""The controlled long-range task's data (DESIGN §8): verb agreement with a subject d words back.

    position   0        1 … d−2                         d−1        d
    words      <cue>    <distractor> × (d−2)            <query>    [verb form]      e.g. d = 5:
               मुली      बागेत  मुलाबरोबर  अचानक           घरी        [गेल्या]
               ^ subject noun: class = gender × number   ^ says which verb; the cue says which of its 4 forms

The cue is a subject noun of one of four classes (masculine/feminine × singular/plural, 6 nouns each); the past tense
of an intransitive verb agrees with it: गेला / गेली / गेले / गेल्या. The query word right before the target says
which of 8 verbs follows, only the cue says which form; the prediction is the argmax over the query verb's 4 forms
(chance 1/4). Distractors are drawn independently of the class, uniformly at every position of every example, from a
pool of 232 words: 112 invariant adverbs, place words and postpositions, and 120 *attractors* — the 12 cue lexemes
of both genders in the oblique singular and plural (मुलाबरोबर, मुलींना, राण्यांच्या …), nouns of every class. The cue
is the only class-dependent token before the target (`draws` never looks at the class; the tests check it). Word
level, closed vocabulary (296 words): one id per word in a `RecurrentLM`; the task tests the recurrence, not the
tokenizer. A seed sets three data streams (training, validation, test; numpy generators keyed by (seed, d, stream)).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

CLASSES = ("m.sg", "f.sg", "m.pl", "f.pl")  # the order of every verb's forms below
# (singular, plural, oblique singular, oblique plural)
NOUNS = {"m": [("मुलगा", "मुलगे", "मुला", "मुलां"), ("घोडा", "घोडे", "घोड्या", "घोड्यां"),
               ("कुत्रा", "कुत्रे", "कुत्र्या", "कुत्र्यां"), ("लांडगा", "लांडगे", "लांडग्या", "लांडग्यां"),
               ("राजा", "राजे", "राजा", "राजां"), ("रेडा", "रेडे", "रेड्या", "रेड्यां")],
         "f": [("मुलगी", "मुली", "मुली", "मुलीं"), ("राणी", "राण्या", "राणी", "राण्यां"), ("शेळी", "शेळ्या", "शेळी", "शेळ्यां"),
               ("बहीण", "बहिणी", "बहिणी", "बहिणीं"), ("मैत्रीण", "मैत्रिणी", "मैत्रिणी", "मैत्रिणीं"),
               ("आजी", "आज्या", "आजी", "आज्यां")]}
CUES = [[n[0] for n in NOUNS["m"]], [n[0] for n in NOUNS["f"]], [n[1] for n in NOUNS["m"]], [n[1] for n in NOUNS["f"]]]
VERBS = [("घरी", "गे"), ("परत", "आ"), ("मोठ्याने", "हस"), ("खाली", "बस"), ("तिथेच", "थांब"), ("लवकर", "झोप"),
         ("जोरात", "पळा"), ("ढसाढसा", "रड")]  # (query word, stem): stem + ला / ली / ले / ल्या
QUERIES = [q for q, _ in VERBS]
FORMS = [[s + "ला", s + "ली", s + "ले", s + "ल्या"] for _, s in VERBS]
ADVERBS = ("अचानक शांतपणे हळूहळू पुन्हा शेवटी लगेच नेहमीप्रमाणे मग नंतर तेव्हा सकाळी दुपारी संध्याकाळी रात्री आज काल पटकन "
           "सावकाश आनंदाने कदाचित खरोखर नक्कीच आधी अगदी खूप फार जरा कधीकधी रोज नेहमी मुद्दाम चुपचाप घाईघाईने निवांत एकदम "
           "सरळ उगाच आपोआप वेळेवर उशिरा पहाटे परवा तरीही म्हणून आणि पण किंवा कारण जेव्हा तिथे इथे कुठे सगळीकडे बाहेर आत "
           "पलीकडे अलीकडे").split()
PLACES = ("बागेत शाळेत बाजारात गावात नदीकडे रस्त्यावर घराजवळ डोंगरावर शेतात जंगलात मंदिरात पुलावर झाडाखाली दारात "
          "अंगणात ओढ्याकाठी विहिरीजवळ स्टेशनवर वाड्यात मैदानात तळ्याकाठी बसमधून गाडीतून पावसात उन्हात थंडीत अंधारात "
          "गर्दीत जत्रेत समुद्रावर किनाऱ्यावर शहरात वाटेत कोपऱ्यात खोलीत स्वयंपाकघरात ओसरीवर गोठ्यात रानात टेकडीवर "
          "बरोबर सोबत कडे साठी जवळ मागे पुढे समोर शिवाय पर्यंत पासून विषयी मुळे वरून भोवती").split()
ATTRACTORS = [stem + suffix for g in ("m", "f") for n in NOUNS[g]
              for stem, dative in ((n[2], "ला"), (n[3], "ना"))
              for suffix in (dative, "च्या", "बरोबर", "साठी", "कडे")]
POOL = ADVERBS + PLACES + ATTRACTORS
VOCAB = [w for c in CUES for w in c] + POOL + QUERIES + [w for f in FORMS for w in f]
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
CUE_IDS = np.array([[WORD_ID[w] for w in c] for c in CUES])  # (classes, nouns)
POOL_IDS = np.array([WORD_ID[w] for w in POOL])
QUERY_IDS = np.array([WORD_ID[w] for w in QUERIES])
FORM_IDS = np.array([[WORD_ID[w] for w in f] for f in FORMS])  # (verbs, classes)
CHANCE = 1 / len(CLASSES)
SUCCESS = 0.95  # accuracy on the test items that counts as solved; fixed, like the scoring
TASK = hashlib.sha256(json.dumps([CLASSES, CUES, FORMS, QUERIES, POOL, 1], ensure_ascii=False).encode()).hexdigest()[:12]


def draws(rng: np.random.Generator, d: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything random about n examples but their class: (noun (n,), verb (n,), distractors (n, d−2))."""
    if d < 2:
        raise ValueError(f"distance d={d}: the task needs d >= 2 (cue, query word, verb); use d in 2, 3, …")
    return (rng.integers(len(CUES[0]), size=n), rng.integers(len(VERBS), size=n),
            rng.integers(len(POOL), size=(n, d - 2)))


def assemble(cue_class: np.ndarray, target_class: np.ndarray, noun, verb, fill) -> np.ndarray:
    """ids (n, d+1): cue, distractors, query, target."""
    return np.concatenate([CUE_IDS[cue_class, noun][:, None], POOL_IDS[fill], QUERY_IDS[verb][:, None],
                           FORM_IDS[verb, target_class][:, None]], axis=1)


def example(rng: np.random.Generator, d: int, cls: int) -> tuple[list[str], list[str]]:
    """(words (d+1), the query verb's 4 forms); words[0] is the cue, words[d] the target."""
    noun, verb, fill = draws(rng, d, 1)
    ids = assemble(np.array([cls]), np.array([cls]), noun, verb, fill)[0]
    return [VOCAB[i] for i in ids], FORMS[int(verb[0])]


def batch(rng: np.random.Generator, d: int, n: int, balanced: bool = False,
          independent_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, d) inputs, y (n,) target ids, cand (n, 4) the query verb's forms. `balanced`: n/4 items per class;
    `independent_labels`: the target's class drawn apart from the cue's (the chance guard)."""
    k = len(CLASSES)
    cls = np.arange(n) % k if balanced else rng.integers(k, size=n)
    target = rng.integers(k, size=n) if independent_labels else cls
    noun, verb, fill = draws(rng, d, n)
    ids = torch.from_numpy(assemble(cls, target, noun, verb, fill))  # (n, d+1)
    return ids[:, :-1], ids[:, -1], torch.from_numpy(FORM_IDS[verb])


def stream(seed: int, d: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, d, ("train", "validation", "test").index(name)])
