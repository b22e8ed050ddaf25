"""Overrides of single parameters: ``cxr <step> --set KEY=VALUE``, ``cxr recipe apply --set``, and dotted keys
from code (tests, benchmarks).

A ``--set`` VALUE is read as YAML, by the same rules as ``params.yaml`` (:mod:`.reading`): ``64`` is a number,
``true`` a boolean, ``[a, b]`` a list, ``{a: 1}`` a mapping, nothing at all is null. Text with ``: `` or
``#`` in it, or that starts with one of ``[{&*!|>'"%@```, must be quoted *for YAML* (and the quotes kept from the
shell): ``--set 'gate.accept_shortcut_risk="Dr. A: the border marker is the scanner's"'``. Every error about an
overridden key shows what the value was read as (:meth:`Override.note`); ``cxr --help`` says so (``cxr/cli.py``
SET_HELP)."""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.core.contract.errors import ParamsError
from components.core.contract.params import reading


@dataclass(frozen=True)
class Override:
    """One dotted key and its value; ``text``: what ``--set`` gave (None when set from code)."""

    key: str
    value: Any
    text: str | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    def note(self, wants_text: bool = False) -> str:
        """``(--set KEY=TEXT was read as YAML: …)``; with ``wants_text`` (the key takes text, and got none), how
        to quote it."""
        from components.core.contract.params.strict import describe

        if self.text is None:
            return f"(override {self.key}: {describe(self.value, limit=200)})"
        hint = ""
        if wants_text and not isinstance(self.value, str):  # "Dr. A: reviewed" became a mapping, 2024 a number
            quoted = json.dumps(self.text.strip(), ensure_ascii=False)  # a JSON string is a YAML double-quoted one
            hint = f"; for the text itself, quote it: --set {shlex.quote(f'{self.key}={quoted}')}"
        return f"(--set {self.key}={self.text} was read as YAML: {describe(self.value, limit=200)}{hint})"


def parse_set(items: Sequence[str] | None, option: str = "--set") -> list[Override]:
    """``KEY=VALUE`` strings → overrides; a missing ``=``, an empty key part, a key given twice or a VALUE that is
    not YAML is a :class:`ParamsError`."""
    out: list[Override] = []
    seen: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ParamsError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} train.image_size=64")
        key, text = item.split("=", 1)
        if not key or "" in key.split("."):
            raise ParamsError(f"{option} {item!r}: the key {key!r} has an empty part: write a dotted key such as "
                              "train.image_size")
        if key in seen:
            raise ParamsError(f"{option} {key} is given twice ({seen[key]!r}, then {text!r}): give it once")
        seen[key] = text
        out.append(Override(key, reading.read(text, f"{option} {item}"), text))
    return out


def as_overrides(overrides: Mapping[str, Any] | Sequence[Override] | None) -> list[Override]:
    """A mapping of dotted keys (from code) or parsed ``--set`` options, as a list of :class:`Override`."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return [Override(k, v) for k, v in overrides.items()]
    return list(overrides)


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any] | Sequence[Override] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``{"train.image_size": 64}``-style overrides (or :class:`Override`\\ s)
    applied."""
    out = copy.deepcopy(raw)
    for o in as_overrides(overrides):
        node = out
        *parents, leaf = o.path
        for depth, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(o.path[:depth + 1])
                given = f"--set {o.key}={o.text}" if o.text is not None else f"override {o.key}"
                raise ParamsError(f"{given}: {where} is {_what(node)}, not a mapping of keys: set "
                                  f"{where} itself{_whole_hint(where, node)}")
        node[leaf] = o.value
    return out


def _what(value: Any) -> str:
    from components.core.contract.params.strict import describe

    return "a list" if isinstance(value, list) else describe(value)


def _whole_hint(key: str, value: Any) -> str:
    if isinstance(value, list):
        return f", the whole list (e.g. --set '{key}=[{{epochs: 3, lr: 0.001}}]')" if key.endswith("phases") else \
            f", the whole list (--set '{key}=[…]')"
    return ""
