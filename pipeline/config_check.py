"""How pipeline/config.py's sections are checked, and how a mistake is worded.

A section is a frozen pydantic dataclass (`section`); pydantic checks each field against its type and range when
the section is built, in whatever way: from a file, by `--set`, by `dataclasses.replace`. `explain` turns what
pydantic found into a `ConfigError` message that names where the value came from, the key, the value and what is
allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Callable, Literal

import pydantic
from pydantic import Strict


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


# Scalars are strict: YAML has typed them already, so a string, a bool for a number or a float for an int is a
# mistake, not something to convert. An int is taken for a float and stored as a float.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]

# Keys that are gone, and what to do instead: a file that still sets one is told this, not "unknown key".
RENAMED = {"experiment.longrange_lr": "use experiment.longrange_lrs (each cell's learning rate comes from a sweep "
                                      "over them)",
           "experiment.longrange_share": "use experiment.longrange_minutes (a fixed reserve: the long-range task "
                                        "has a fixed step budget, experiment.longrange_steps)",
           "eval.context_positions": "the context-length curve now scores every eligible position: set "
                                     "eval.context_curves (text kind -> words of context needed), {} for none",
           "eval.max_documents": "use eval.max_words (a seeded sample of that many words, long documents keeping "
                                 "their share; null scores every word) instead of the first N documents"}
REMOVED = {"eval.long_document_words": "nothing read it (eval.max_words' sample keeps long documents' share by "
                                      "itself); delete the line"}


def section(name: str) -> Callable[[type], type]:
    """Make `cls` the config section `name` ("" for the whole config): a frozen pydantic dataclass, unknown keys
    refused, whose every construction (`dataclasses.replace` included) raises a ConfigError for a bad value."""
    def make(cls: type) -> type:
        cls = pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid"))(cls)
        cls.section_name = name
        validated_init = cls.__init__

        @functools.wraps(validated_init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                validated_init(self, *args, **kwargs)
            except pydantic.ValidationError as e:
                raise ConfigError(explain(e, cls, lambda key, cross_field: cls.__name__)) from None

        cls.__init__ = __init__
        return cls
    return make


def explain(error: pydantic.ValidationError, cls: type, source: Callable[[str, bool], str]) -> str:
    """The first problem pydantic found building `cls`, as `source: key 'section.key' ...`. `source(key,
    cross_field)` says where the value came from: a file, a --set, the class built in code."""
    e = error.errors(include_url=False)[0]
    kind, value = e["type"], e.get("input")
    path = [cls.section_name] if cls.section_name else []
    tp: Any = cls
    owner, name, index = cls, None, ""
    for part in e["loc"]:  # walk the type along pydantic's location: fields, list items, mapping keys
        if dataclasses.is_dataclass(tp):
            owner, name = tp, part
            path.append(part)
            tp = typing.get_type_hints(tp).get(part)
            if tp is None:  # an unknown key
                break
            continue
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(members) == 1:
            tp = members[0]
        if isinstance(part, int) and typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            index, tp = f"{index}[{part}]", args[0] if args[-1] is Ellipsis else args[part]
        elif isinstance(part, str) and typing.get_origin(tp) is dict:
            path.append(part)
            tp = typing.get_args(tp)[1]
        # else a union member's tag (e.g. 'float'): the key stays the field's
    key = ".".join(path)
    where = source(key, kind == "value_error")
    if kind == "value_error":  # a rule of a section or of the whole config: its message names the keys
        return f"{where}: {e['ctx']['error']}"
    if kind == "unexpected_keyword_argument":
        if not owner.section_name:
            allowed = ", ".join(f.name for f in dataclasses.fields(owner) if f.name != "name")
            return f"{where}: unknown section '{key}' (allowed: {allowed})"
        if key in RENAMED:
            return f"{where}: key '{key}' was replaced: {RENAMED[key]}"
        if key in REMOVED:
            return f"{where}: key '{key}' was removed: {REMOVED[key]}"
        allowed = ", ".join(sorted(f.name for f in dataclasses.fields(owner)))
        return f"{where}: unknown key '{key}' (allowed in '{owner.section_name}': {allowed})"
    if kind in ("dataclass_type", "dataclass_args_type"):
        return f"{where}: section '{key}' must be a mapping, got {type(value).__name__}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = {a: getattr(m, a) for m in owner.__pydantic_fields__[name].metadata for a in ("ge", "gt", "le", "lt")
                  if hasattr(m, a)}
        lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
        return (f"{where}: key '{key}'{index} = {value} is out of range; allowed "
                f"[{lo if lo is not None else '-∞'}, {hi if hi is not None else '∞'}]")
    return f"{where}: key '{key}'{index}: got {value!r} ({type(value).__name__}); expected {describe(tp)}"


def describe(tp: Any) -> str:
    """A type in the words of a YAML file."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")
