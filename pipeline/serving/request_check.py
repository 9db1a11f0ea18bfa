"""The one check of a prediction request. The HTTP API (app.py), the MLflow pyfunc (pyfunc.py) and the `predict`
command run it before reading anything, so a bad `k`, `mode` or text gets the same answer from each: a RequestError
that names the field and what it allows (HTTP sends it as a 422 `{"error", "field"}`, the pyfunc raises it, the
command prints it to stderr and exits 2)."""
from __future__ import annotations

import numbers
from typing import Any

from pipeline.config import ServeConfig
from pipeline.evaluation.typed import typed_word

MODES = ("auto", "next", "complete")
LIMITS = ("max_k", "max_text_chars", "max_word_chars")  # the serve.* keys this check reads


class RequestError(ValueError):
    """A request no model answers; `field` names the request field (k, mode, text, texts[i], input row i)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def limits_of(config: dict[str, Any] | None) -> ServeConfig:
    """The limits a model was saved with (its config's serve section), the defaults for keys it predates: what the
    pyfunc checks against, since it runs without the project's config files."""
    serve = (config or {}).get("serve") or {}
    return ServeConfig(**{key: serve[key] for key in LIMITS if key in serve})


def check_k(k: Any, max_k: int) -> int:
    """k as an int, if it is an integer (not a bool, not a float or a string of one) from 1 to serve.max_k."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= max_k:
        raise RequestError("k", f"k must be an integer from 1 to {max_k} (serve.max_k), the number of words to "
                                f"suggest; got {k!r}")
    return int(k)


def check_text(text: Any, max_text_chars: int, name: str) -> str:
    if not isinstance(text, str):
        raise RequestError(name, f"{name} must be a string (the text typed so far); got {type(text).__name__}")
    if not text.strip():
        raise RequestError(name, f"{name} holds no text (only whitespace, or nothing); send what has been typed so "
                                 "far")
    if len(text) > max_text_chars:
        raise RequestError(name, f"{name} is {len(text)} characters; the limit is {max_text_chars} "
                                 "(serve.max_text_chars): send the end of the text")
    return text


def check_request(texts: list[Any], k: Any, mode: Any, limits: ServeConfig, field: str = "texts[{i}]") -> int:
    """Refuses, naming the field: k outside 1 to serve.max_k or not an integer; a mode other than auto, next or
    complete; a text that is not a string, holds only whitespace or is longer than serve.max_text_chars; "complete"
    on text that ends in no word; a word being typed longer than serve.max_word_chars. `field` names text i (a
    format string with {i}). Returns k as an int."""
    k = check_k(k, limits.max_k)
    if not isinstance(mode, str) or mode not in MODES:
        raise RequestError("mode", f"mode must be \"auto\" (the default: complete the word the text ends in, else the "
                                   f"next word), \"next\" or \"complete\"; got {mode!r}")
    for i, text in enumerate(texts):
        name = field.format(i=i)
        check_text(text, limits.max_text_chars, name)
        try:
            _, prefix = typed_word(text, mode)
        except ValueError as e:
            raise RequestError("mode", f"{name}: {e}") from None
        if len(prefix) > limits.max_word_chars:
            raise RequestError(name, f"{name} ends in a word of {len(prefix)} characters, longer than any word "
                                     f"completed (serve.max_word_chars={limits.max_word_chars}); end the text with a "
                                     "space to ask for the next word")
    return k
