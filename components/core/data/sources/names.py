"""Names that every checkout can store: ``data/raw`` is pulled with ``dvc checkout`` onto Linux, macOS and
Windows, so a path ingest writes must mean one file on each of them.

:class:`Namer` gives each image its stored path and says why when that differs from the path it came with
(a ``renamed`` row of the ingest report, never a silent change):

- ``name_too_long``: a name (one path component) over :data:`NAME_MAX` bytes, as a percent-encoded name of 90
  Shift-JIS characters is, becomes a prefix + ``~`` + 10 hex digits of the name's sha256 + its extension;
- ``backslash_in_name``: a ``\\`` inside a name (a folder separator on Windows) is stored as ``%5C``;
- ``case_twin`` / ``unicode_twin`` / ``name_taken``: a path that only differs from an earlier one in letter case
  (one file on a case-insensitive macOS or Windows checkout), in Unicode normalisation (NFC/NFD: one file on
  macOS), or not at all (two sources of one stored name) gets ``-2`` (``-3``…) before its extension.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import PurePosixPath

NAME_MAX = 255  # bytes in one name: ext4, XFS, APFS, NTFS (UTF-16 units there, never more than UTF-8 bytes)
HASH_DIGITS = 10
MAX_SUFFIX = 16  # a longer "extension" is part of the name


def shorten(name: str) -> str:
    """``name`` when its UTF-8 form fits :data:`NAME_MAX` bytes; else a prefix of it, ``~``, a short sha256 of
    the whole name, and its extension. The prefix never splits a character or a ``%XX`` escape."""
    if len(name.encode("utf-8")) <= NAME_MAX:
        return name
    suffix = PurePosixPath(name).suffix
    suffix = suffix if len(suffix.encode("utf-8")) <= MAX_SUFFIX else ""
    stem = name[:len(name) - len(suffix)] if suffix else name
    tag = "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_DIGITS]
    room = NAME_MAX - len(tag) - len(suffix.encode("utf-8"))
    prefix, used = [], 0
    i = 0
    while i < len(stem):
        piece = stem[i:i + 3] if stem[i] == "%" and len(stem) >= i + 3 else stem[i]
        size = len(piece.encode("utf-8"))
        if used + size > room:
            break
        prefix.append(piece)
        used += size
        i += len(piece)
    return "".join(prefix) + tag + suffix


def _twin_key(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


class Namer:
    """Stored paths, one at a time: :meth:`claim` returns the path to store and the renamed rows (``reason``,
    ``detail``) that explain any change."""

    def __init__(self) -> None:
        self._taken: dict[str, str] = {}  # twin key → the path that holds it

    def claim(self, dest: str, origin: str = "") -> tuple[str, list[tuple[str, str]]]:
        """The path to store for ``dest`` and why it differs, if it does; ``origin``: the path as the source named
        it (a tree's ``normal/x.png`` whose class folder is stored as ``NORMAL/``), shown in the reasons."""
        why: list[tuple[str, str]] = []
        parts = dest.split("/")
        for k, part in enumerate(parts):
            if "\\" in part:
                fixed = part.replace("\\", "%5C")
                why.append(("backslash_in_name", f"{part!r} holds a backslash, a folder separator on Windows: "
                                                 f"stored as {fixed!r}"))
                part = fixed
            short = shorten(part)
            if short != part:
                size = len(part.encode("utf-8"))
                why.append(("name_too_long", f"the name is {size} bytes (a file system stores at most {NAME_MAX}): "
                                             f"stored as {short!r}; the full name: {part}"))
                part = short
            parts[k] = part
        path = "/".join(parts)
        out, n = path, 1
        while _twin_key(out) in self._taken:
            n += 1
            p = PurePosixPath(path)
            out = str(p.with_name(shorten(f"{p.stem}-{n}{p.suffix}")))
        if out != path:
            earlier = self._taken[_twin_key(path)]
            source = f"{origin!r} is stored as {path!r}: " if origin and origin != path else ""
            if earlier == path:
                reason, what = "name_taken", f"{path!r} is another image's path"
            elif unicodedata.normalize("NFC", earlier) == unicodedata.normalize("NFC", path):
                reason, what = "unicode_twin", (f"{ascii(path)} and {ascii(earlier)} are one name in two Unicode "
                                                "normalisations (NFC/NFD): one file on macOS")
            else:
                reason, what = "case_twin", (f"{path!r} and {earlier!r} differ only in letter case: one file on a "
                                             "case-insensitive checkout (macOS, Windows)")
            why.append((reason, f"{source}{what}; stored as {out!r}"))
        self._taken[_twin_key(out)] = out
        return out, why
