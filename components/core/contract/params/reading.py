"""How the text of ``params.yaml``, a recipe or a ``--set`` value becomes data, with one meaning or an error.

* **YAML 1.2's core schema**, the reading DVC (ruamel.yaml) and the current spec give: ``true``/``false`` are
  booleans, ``1e3`` and ``1.0e3`` are the number 1000.0, ``010`` is 10, ``0x10`` 16, ``0o10`` 8, ``.inf``/``.nan``
  are floats (the schema then refuses them: no parameter means infinity), ``null``/``~``/nothing is null, and
  ``2024-01-01`` is text.
* **A plain scalar that YAML 1.1 reads otherwise** (PyYAML and many other tools: ``yes``/``no``/``on``/``off``
  as booleans, ``010`` as 8, ``1_000``, ``0b11`` and ``1:30`` as numbers, ``0o10`` as text, ``2024-01-01`` as a
  date) is kept as a :class:`Yaml11` marker: its text, with both readings. The schema decides by the key's type
  (:mod:`.strict`): ``yes``/``no``/``on``/``off`` are booleans in a boolean key, any such scalar is its text in a
  text key (``classes: [NO]`` is the class ``NO``; ``mixed_precision: off`` is ``'off'``), and it is refused
  anywhere else, with both readings in the message. One exception: ``1e3`` (YAML 1.1: text) is not marked but
  read as the number, as YAML 1.2, Python and JSON read it; a text key then refuses it (quote it).
* **Duplicate keys** at any depth are refused, naming both lines: YAML keeps the last, which would silently
  replace the first (a second ``data:`` block at the bottom of the file).
* **Anchors, aliases and merge keys** (``<<: *base``) mean what YAML says: a copy of the anchored value; keys
  written beside a ``<<`` override the merged ones (that is no duplicate). A structure that contains itself,
  or expands to more than :data:`MAX_VALUES` values, is refused.
* Anything else PyYAML cannot read (syntax, unknown tags such as ``!!python/object``, several documents,
  nesting too deep, bytes that are not UTF-8) is a :class:`~components.core.contract.errors.ParamsError` with
  the line, never a traceback.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from components.core.contract.errors import ParamsError

MAX_VALUES = 100_000  # values after expanding aliases: a params file has a few hundred
YAML11_TAG = "tag:cxr-mlops,2024:yaml11"
_STR, _BOOL, _INT, _FLOAT, _NULL, _MERGE = (f"tag:yaml.org,2002:{t}" for t in
                                            ("str", "bool", "int", "float", "null", "merge"))


class Yaml11(str):
    """A plain scalar that YAML 1.1 and YAML 1.2 read differently: its text (so it is that text as a mapping key
    and where text is expected), ``yaml11`` (PyYAML's reading; ``None`` with ``yaml11_error`` where PyYAML cannot
    read it) and ``yaml12`` (the core schema's: the text itself, or a number)."""

    yaml11: Any
    yaml12: Any

    def __new__(cls, text: str, yaml11: Any, yaml12: Any) -> Yaml11:
        self = super().__new__(cls, text)
        self.yaml11, self.yaml12 = yaml11, yaml12
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    def __reduce__(self):  # pickle and copy.deepcopy (overrides copy the tree): immutable, like str
        return (Yaml11, (self.text, self.yaml11, self.yaml12))

    def __deepcopy__(self, memo: dict) -> Yaml11:
        return self


class _Core12Resolver(yaml.resolver.BaseResolver):
    """The YAML 1.2 core schema's implicit types (null, bool, int, float); everything else is text."""


_CORE12 = [
    (_NULL, r"^(?:~|null|Null|NULL|)$", [*"~nN", ""]),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (_FLOAT, r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
             r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
    (_MERGE, r"^<<$", ["<"]),
]
for _tag, _pattern, _first in _CORE12:
    _Core12Resolver.add_implicit_resolver(_tag, re.compile(_pattern), _first)

_V11 = yaml.resolver.Resolver()  # PyYAML's YAML 1.1 resolution, for comparison


def _int12(text: str) -> int:
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _reading12(tag: str, text: str) -> Any:
    if tag == _INT:
        return _int12(text)
    if tag == _FLOAT:
        return SafeConstructor.construct_yaml_float(_CONSTRUCTOR, ScalarNode(tag, text))
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _NULL:
        return None
    return text


class _Unreadable:
    """PyYAML cannot construct this plain scalar (``=``: YAML 1.1's value key)."""


def _reading11(tag: str, text: str) -> Any:
    constructor = SafeConstructor.yaml_constructors.get(tag)
    if constructor is None:
        return _Unreadable()
    try:
        return constructor(_CONSTRUCTOR, ScalarNode(tag, text))
    except (ValueError, yaml.YAMLError):
        return _Unreadable()


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


_CONSTRUCTOR = SafeConstructor()


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the core schema's implicit types and :class:`Yaml11` markers."""

    yaml_implicit_resolvers = _Core12Resolver.yaml_implicit_resolvers

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag != _MERGE:
            v11 = _reading11(_V11.resolve(ScalarNode, value, implicit), value)
            v12 = _reading12(tag, value)
            if not _same(v11, v12) and not (isinstance(v11, str) and tag == _FLOAT):  # 1e3: the number
                return YAML11_TAG
        return tag

    def construct_yaml11(self, node: ScalarNode) -> Yaml11:
        text = node.value
        v11 = _reading11(_V11.resolve(ScalarNode, text, (True, False)), text)
        return Yaml11(text, None if isinstance(v11, _Unreadable) else v11,
                      _reading12(_Core12Resolver().resolve(ScalarNode, text, (True, False)), text))

    def construct_core_int(self, node: ScalarNode) -> int:
        return _int12(self.construct_scalar(node))


Loader.add_constructor(YAML11_TAG, Loader.construct_yaml11)
Loader.add_constructor(_INT, Loader.construct_core_int)


# ---------------------------------------------------------------- checks on the node graph
def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else f"<{type(node).__name__}>"


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _check_nodes(root: Node) -> list[str]:
    """Duplicate keys (at any depth), self-containing structures and too-large expansions, as messages."""
    problems: list[str] = []
    size: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: Node, path: str) -> int:
        ident = id(node)
        if ident in size:
            return size[ident]
        if ident in active:
            problems.append(f"line {_line(node)}: {path or 'the document'} contains itself (an alias of an "
                            "anchor around it): write the value out")
            raise _Stop
        active.add(ident)
        total = 1
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, value_node in node.value:
                is_merge = key_node.tag == _MERGE
                key = _comparable(key_node)
                if key is not None and key in seen:
                    first = seen[key]
                    shown = f"{path}.{_key_text(key_node)}" if path else _key_text(key_node)
                    what = ("a second merge key <<: use one, with a list: <<: [*a, *b]" if is_merge else
                            "YAML keeps only the last one, which would silently replace the first: merge them "
                            "into one")
                    problems.append(f"line {_line(key_node)}: duplicate key {shown} (first at line {_line(first)}):"
                                    f" {what}")
                elif key is not None:
                    seen[key] = key_node
                child = path if is_merge else (f"{path}.{_key_text(key_node)}" if path else _key_text(key_node))
                total += walk(key_node, child) + walk(value_node, child)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                total += walk(item, f"{path}.{i}" if path else str(i))
        active.discard(ident)
        size[ident] = total
        if total > MAX_VALUES:
            problems.append(f"line {_line(node)}: {path or 'the document'} expands to more than {MAX_VALUES} values "
                            "(aliases of aliases?): a params file has a few hundred")
            raise _Stop
        return total

    with contextlib.suppress(_Stop):
        walk(root, "")
    return problems


class _Stop(Exception):
    pass


def _comparable(node: Node) -> Any:
    """A scalar key's value as the constructed mapping will hold it (``1`` and ``1.0`` are one key; so are
    ``yes`` and ``'yes'``: both are the text yes in YAML 1.2); None for keys that are not scalars."""
    if not isinstance(node, ScalarNode):
        return None
    if node.tag == YAML11_TAG or node.tag == _STR:
        return ("text", node.value)
    try:
        value = _reading12(node.tag, node.value)
        hash(value)
    except (ValueError, TypeError):
        return ("tag", node.tag, node.value)
    return ("value", value) if not isinstance(value, str) else ("text", value)


def read(text: str | bytes, source: str) -> Any:
    """Parse YAML text as described in the module docstring; raise :class:`ParamsError` naming ``source``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ParamsError(f"{source}: not UTF-8 text (byte {err.start}: {text[err.start:err.start + 1]!r}): "
                              "save it as UTF-8") from None
    loader = None
    try:
        loader = Loader(text)  # reads the first characters: may raise already
        loader.name = source  # PyYAML's marks: 'in "params.yaml", line 3, column 5'
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _check_nodes(node)
        if problems:
            raise ParamsError(f"{source}: " + ("\n  ".join(problems) if len(problems) == 1 else
                                               "\n  " + "\n  ".join(problems)))
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {err}") from None
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply to read (hundreds of levels): a params file has a few")\
            from None
    finally:
        if loader is not None:
            loader.dispose()


def read_file(path) -> Any:
    """:func:`read` on a file's bytes (a missing file: the message says how to pass another)."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found (pass --params PATH)") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: a folder, not a parameters file (pass --params PATH)") from None
    return read(data, str(path))
