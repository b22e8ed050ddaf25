"""Strict types for params: every value is checked against its key's type *before* pydantic sees it.

pydantic's lax mode would take ``yes`` (a YAML 1.1 boolean) for 1.0 in a number field, ``1`` for true in a
boolean field, ``'7'`` for 7, and report ``train.image_size: true`` as "1 is below the minimum 32". Here:

* a number field takes numbers only: never a boolean, text or null; a whole-number field also takes a float
  without a fractional part (``224.0``: a Kubeflow pipeline parameter passes every number as a float), never
  ``1.5``; ``.inf`` and ``.nan`` are refused (no parameter means infinity);
* a boolean field takes ``true``/``false`` only, and YAML 1.1's ``yes``/``no``/``on``/``off``
  (:class:`~.reading.Yaml11` markers), which mean true/false there;
* a text field takes text only (a number is refused: quote it); a :class:`~.reading.Yaml11` marker is its text;
* a mapping or list where a section, mapping or list belongs; mapping keys are text.

:func:`resolve` returns the value with markers resolved and whole floats made ints, plus the problems found
(``(location, message)``, the location as pydantic gives it). Ranges, allowed values, unknown keys and the rules
across keys stay with pydantic and the sections' validators.
"""

from __future__ import annotations

import datetime
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from components.core.contract.params.reading import Yaml11

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

# how a model says that a field also takes another raw form, converted by its own ``mode="before"`` validator
# (``train.phases[].lr: [low, high]``): ``__raw_forms__ = {"lr": list[float]}``
RAW_FORMS = "__raw_forms__"


def describe(value: Any, limit: int = 80) -> str:
    """A value as the user wrote it: ``a boolean true``, ``the number 3``, ``the text 'big'``, ``null``,
    ``a mapping {...}`` (cut at ``limit`` characters)."""
    if isinstance(value, Yaml11):  # yes (YAML 1.1 reads a boolean true, YAML 1.2 the text 'yes')
        old = "nothing it can read" if value.yaml11 is None else describe(value.yaml11)
        return f"{value.text} (YAML 1.1 reads {old}, YAML 1.2 {describe(value.yaml12)})"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean {str(value).lower()}"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"the number {'.nan' if math.isnan(value) else ('-' if value < 0 else '') + '.inf'}"
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {_cut(repr(value), limit)}"
    if isinstance(value, dict):
        return f"a mapping {_cut(repr(_plain(value)), limit)}"
    if isinstance(value, list | tuple):
        return f"a list {_cut(repr(_plain(value)), limit)}"
    if isinstance(value, datetime.date):
        return f"a date {value.isoformat()}"
    if isinstance(value, bytes):
        return f"binary data ({len(value)} bytes)"
    return f"a {type(value).__name__} {_cut(repr(value), limit)}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _plain(value: Any) -> Any:
    """Markers as their text (for reprs)."""
    if isinstance(value, Yaml11):
        return value.text
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """``value`` with :class:`Yaml11` markers replaced by their text (for writing back)."""
    return _plain(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _union_args(ann: Any) -> tuple[Any, ...] | None:
    if get_origin(ann) in (Union, types.UnionType):
        return get_args(ann)
    return None


def _kind(ann: Any) -> str:
    """What a type expects, in words."""
    if ann is bool:
        return "true or false"
    if ann is int:
        return "a whole number"
    if ann is float:
        return "a number"
    if ann is str:
        return "text"
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a mapping (keys: " + ", ".join(f.alias or n for n, f in ann.model_fields.items()) + ")"
    if get_origin(ann) in (list, tuple):
        return "a list"
    if get_origin(ann) is dict:
        return "a mapping"
    members = _union_args(ann)
    if members:
        return " or ".join(_kind(m) for m in members if m is not type(None))
    return str(ann)


def _advice(value: Any, ann: Any) -> str:
    """What to write instead, where a short hint helps."""
    members = _union_args(ann) or (ann,)
    if isinstance(value, Yaml11) and (int in members or float in members):
        if isinstance(value.yaml11, bool):
            return ": write a number"
        return ": write it as YAML 1.1 and 1.2 both read it (e.g. 8, 1000, 0.5, 1.0e-4)"
    if isinstance(value, Yaml11) and ann is bool:
        return ": write true or false"
    if isinstance(value, str) and ann in (int, float) and _looks_numeric(value):
        return ": remove the quotes to give a number"
    if _is_number(value) and ann is str:
        return ": quote it to give text"
    if isinstance(value, bool) and ann is str:
        return ": quote it to give text"
    return ""


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Walker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, loc: Loc, value: Any, ann: Any, expected: str | None = None) -> Any:
        self.problems.append((loc, f"expected {expected or _kind(ann)}, got {describe(value)}{_advice(value, ann)}"))
        return value

    def check(self, value: Any, ann: Any, loc: Loc) -> Any:
        if ann is Any or ann is typing.Any:
            return value
        members = _union_args(ann)
        if members is not None:
            return self.union(value, members, ann, loc)
        if ann is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, Yaml11) and isinstance(value.yaml11, bool):
                return value.yaml11
            return self.bad(loc, value, ann)
        if ann is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return int(value)
            if isinstance(value, float) and math.isfinite(value):
                return self.bad(loc, value, ann, "a whole number")
            return self.bad(loc, value, ann, "a number" if not _is_number(value) else "a finite whole number")
        if ann is float:
            if _is_number(value) and math.isfinite(value):
                return value
            return self.bad(loc, value, ann, "a finite number" if _is_number(value) else "a number")
        if ann is str:
            if isinstance(value, Yaml11):
                return value.text
            if isinstance(value, str):
                return value
            return self.bad(loc, value, ann)
        origin = get_origin(ann)
        if origin is Literal:
            return value.text if isinstance(value, Yaml11) and value.text in get_args(ann) else value
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return self.model(value, ann, loc)
        if origin in (list, tuple):
            if not isinstance(value, list | tuple):
                return self.bad(loc, value, ann)
            (item,) = get_args(ann)[:1] or (Any,)
            return [self.check(v, item, (*loc, i)) for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                return self.bad(loc, value, ann)
            key_ann, value_ann = get_args(ann) or (Any, Any)
            out = {}
            for k, v in value.items():
                key = self.key(k, key_ann, (*loc, str(k)))
                out[key] = self.check(v, value_ann, (*loc, str(key)))
            return out
        return value

    def key(self, k: Any, ann: Any, loc: Loc) -> Any:
        if isinstance(k, Yaml11):
            return k.text
        if ann is str and not isinstance(k, str):
            self.problems.append((loc, f"a key must be text, got {describe(k)}: quote it"))
        return k

    def union(self, value: Any, members: tuple[Any, ...], ann: Any, loc: Loc) -> Any:
        if value is None and type(None) in members:
            return None
        options = [m for m in members if m is not type(None)]
        if len(options) == 1:
            return self.check(value, options[0], loc)
        literals = [a for m in options if get_origin(m) is Literal for a in get_args(m)]
        text = value.text if isinstance(value, Yaml11) else value
        if isinstance(text, str) and text in literals:
            return text
        for m in options:  # the member whose kind the value has
            if (m is float and _is_number(value)) or (m is int and _is_number(value)) or \
                    (m is str and isinstance(value, str)) or (m is bool and isinstance(value, bool)):
                return self.check(value, m, loc)
        return self.bad(loc, value, ann)

    def model(self, value: Any, model: type[BaseModel], loc: Loc) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            return self.bad(loc, value, model)
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        names = {n: f for n, f in model.model_fields.items()}
        raw_forms = getattr(model, RAW_FORMS, {})
        out = {}
        for k, v in value.items():
            key = k.text if isinstance(k, Yaml11) else k
            field = fields.get(key) or names.get(key) if isinstance(key, str) else None
            if field is None:
                out[key] = v  # pydantic reports the unknown key, with the allowed ones
                continue
            if isinstance(key, str) and key in raw_forms and isinstance(v, list | tuple):
                out[key] = self.check(v, raw_forms[key], (*loc, key))
            else:
                out[key] = self.check(v, field.annotation, (*loc, key))
        return out


def resolve(raw: Any, model: type[BaseModel]) -> tuple[Any, list[Problem]]:
    """``raw`` checked against ``model``'s types: (the value to validate, the type problems)."""
    walker = _Walker()
    value = walker.check(raw, model, ())
    return value, walker.problems
