"""Cleaning rules of DESIGN §3 on hand-written Marathi."""
from pipeline.corpus.cleaning import clean_text, drop_reason, is_word, words


def test_punctuation_split_off_and_danda_kept():
    assert clean_text("हे घर आहे.") == "हे घर आहे ."
    assert clean_text("तो आला, बसला।") == "तो आला , बसला ।"
    out = clean_text("राम घरी गेला॥ सीता (आई) आली!")
    assert out.split() == ["राम", "घरी", "गेला", "॥", "सीता", "(", "आई", ")", "आली", "!"]
    assert "।" in clean_text("मी जातो।").split()


def test_urls_mentions_emails_removed_and_hashtag_sign_dropped():
    out = clean_text("पहा https://example.com/a?b=1 आणि www.test.in @ramesh ला लिहा ram@example.org #मराठी दिवस")
    assert "http" not in out and "example" not in out and "www" not in out
    assert "ramesh" not in out and "@" not in out and "ram@" not in out
    assert "#" not in out and "मराठी" in out.split()
    assert out.split() == ["पहा", "आणि", "ला", "लिहा", "मराठी", "दिवस"]
    assert clean_text("स्वागत fb.me/8153JKQDm आहे") == "स्वागत आहे"


def test_nfc_applied_to_decomposed_nukta():
    # न + ़ composes to ऩ (U+0929) under NFC; क़ (U+0958) is a composition exclusion, so its NFC form is क + ़
    assert clean_text("\u0928\u093c\u0939\u0940 आहे") == "\u0929\u0939\u0940 आहे"
    assert clean_text("\u0958लम आहे") == "\u0915\u093c\u0932\u092e आहे"
    assert clean_text("\u0915\u093c\u0932\u092e आहे") == "\u0915\u093c\u0932\u092e आहे"  # nukta stays on its letter


def test_digits_kept_and_numbers_not_split():
    assert clean_text("२०२४ साली ३.५ टक्के, 1,000 लोक") == "२०२४ साली ३.५ टक्के , 1,000 लोक"


def test_controls_and_whitespace_normalised_zwj_kept():
    out = clean_text("  एक\t\x07दोन\n\nतीन  क्\u200dष  ")
    assert out == "एक दोन तीन क्\u200dष"


def test_english_only_document_dropped_with_reason():
    assert drop_reason(clean_text("This is an English sentence only."), 0.5, 2) == "not_devanagari"
    assert drop_reason(clean_text("नमस्कार"), 0.5, 2) == "too_few_words"
    assert drop_reason(clean_text("https://only.example.com"), 0.5, 2) == "empty"
    assert drop_reason(clean_text("मी शाळेत जातो."), 0.5, 2) == ""


def test_word_definition():
    assert is_word("आहे") and is_word("२०२४") and not is_word("।") and not is_word(",")
    assert words("तो आला , बसला ।") == ["तो", "आला", "बसला"]
