"""pydantic's validation errors in our words, for the files people write by hand.

Workflow specs and cluster profiles are both checked by pydantic models and both report
``<file>:<line>: <dotted.path>: <what is wrong>; <what to do>``. :func:`problems_of` turns
a :class:`pydantic.ValidationError` into ``(key path, message)`` pairs; the caller's
:class:`~airflow_desc._yaml_lines.LocatedYaml` adds the lines. What differs between the two
kinds of file (what to add for a missing key, what a literal's values are called, where the
example lives) is an :class:`ErrorWords`.

A validator of such a model raises :class:`ValueError` with a message that already has both
halves; it is shown as written.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from airflow_desc._yaml_lines import KeyPath, describe_value, did_you_mean

__all__ = ["ErrorWords", "choose", "problems_of", "translate_error"]

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
_WRITE = {
    "text": "write text",
    "a whole number": "write a whole number, e.g. 4",
    "a number": "write a number, e.g. 2.5",
    "true or false": "write true or false",
    "a mapping": "write 'key: value' lines indented below it",
    "a list": "write a list: [a, b] or one '- ' item per line",
}
# pydantic's bound errors: (what the bound is, the ctx key holding it, what to write).
_BOUNDS = {
    "greater_than_equal": ("at least {}", "ge", "{} or more"),
    "greater_than": ("more than {}", "gt", "a number above {}"),
    "less_than_equal": ("at most {}", "le", "{} or less"),
    "less_than": ("less than {}", "lt", "a number below {}"),
}


@dataclass(frozen=True)
class ErrorWords:
    """What one kind of file adds to the messages of its model's errors.

    :param missing: field name -> what to add when it is missing (default: ``add it``).
    :param literals: field name -> what its values are called, e.g. ``process type``.
    :param see: where to look for an error that has no words here, e.g. ``the example in x``.
    """

    missing: Mapping[str, str] = field(default_factory=dict)
    literals: Mapping[str, str] = field(default_factory=dict)
    see: str = "the documentation"


def choose(
    word: Any, choices: Collection[str], *, known: str = "use one of", empty: str = "there is none to name"
) -> str:
    """``did you mean 'x'?`` when a choice is close, else the list of choices (or ``empty``).

    :param word: what was written.
    :param choices: what could have been written, in the order to list them.
    :param known: the words before the list.
    :param empty: what to say when there are no choices.
    """
    guess = did_you_mean(word, choices) if isinstance(word, str) else None
    if guess:
        return f"did you mean '{guess}'?"
    return f"{known} {', '.join(choices)}" if choices else empty


def problems_of(exc: ValidationError, model: type[BaseModel], words: ErrorWords) -> list[tuple[KeyPath, str]]:
    """Every error of a validation, as ``(path, "<what is wrong>; <what to do>")``.

    :param exc: what ``model.model_validate`` raised.
    :param model: the model validated (to name the keys and values it allows).
    :param words: the file kind's words.
    """
    return [translate_error(error, model, words) for error in exc.errors()]


def translate_error(error: ErrorDetails, model: type[BaseModel], words: ErrorWords) -> tuple[KeyPath, str]:
    """One pydantic error as ``(path, "<what is wrong>; <what to do>")``.

    :param error: one item of :meth:`pydantic.ValidationError.errors`.
    :param model: the model validated.
    :param words: the file kind's words.
    """
    loc: KeyPath = tuple(error["loc"])
    kind, value = error["type"], error.get("input")
    if loc and loc[-1] == "[key]":  # a mapping key's own error: the key is the place
        loc = loc[:-1]
    field_name = str(loc[-1]) if loc else ""
    if kind == "missing":
        return loc, f"missing; {words.missing.get(field_name, 'add it')}"
    if kind == "extra_forbidden":
        parent = _annotation_at(model, loc[:-1])
        is_model = isinstance(parent, type) and issubclass(parent, BaseModel)
        choices = list(parent.model_fields) if is_model else []
        return loc, f"unknown key; {choose(field_name, choices)}"
    if kind in ("value_error", "assertion_error"):
        return loc, str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        choices = [str(c) for c in get_args(_annotation_at(model, loc))]
        word = words.literals.get(field_name, "value")
        listed = ", ".join(choices)
        guess = did_you_mean(value, choices) if isinstance(value, str) else None
        hint = f"did you mean '{guess}'? (one of {listed})" if guess else f"use one of {listed}"
        return loc, f"unknown {word} {describe_value(value)}; {hint}"
    if kind in _BOUNDS:
        what, key, fix = _BOUNDS[kind]
        bound = f"{(error.get('ctx') or {}).get(key):g}"
        return loc, f"must be {what.format(bound)}, got {value}; write {fix.format(bound)}"
    expected = _TYPE_WORDS.get(kind)
    if expected is None:
        return loc, f"{error['msg']}; see {words.see}"
    return loc, f"expected {expected}, got {describe_value(value)}; {_fix(expected, value, field_name)}"


def _fix(word: str, value: Any, field_name: str) -> str:
    if word == "text" and isinstance(value, int | float) and not isinstance(value, bool):
        if field_name == "version":
            return f'quote it: "{value}" (YAML reads an unquoted 1.10 as the number 1.1)'
        return f"quote it: '{value}'"
    return _WRITE[word]


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` off an annotation."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            annotation = members[0]
        else:
            return annotation


def _annotation_at(model: type[BaseModel], path: Sequence[Hashable]) -> Any:
    """Return the annotation of the value at ``path`` of ``model``, or None."""
    annotation: Any = model
    for part in path:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = annotation.model_fields.get(str(part))
            if found is None:
                return None
            annotation = found.annotation
        elif origin is dict:
            annotation = get_args(annotation)[1]
        elif origin in (tuple, list):
            annotation = get_args(annotation)[0]
        else:
            return None
    return _unwrap(annotation)
