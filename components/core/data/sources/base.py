"""What every source adapter produces: entries to ingest, and an account of everything it skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from components.core.contract.errors import DataError

# Folder names that mean a split (Kaggle's layouts) and what they mean.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
IGNORED_DIRS = {"__MACOSX"}


@dataclass
class Entry:
    """One image to ingest: where it is now and what we know about it."""

    src: Path | str  # a local file, or an s3:// URI (referenced, not copied)
    dest: str  # posix path relative to the output folder (valid UTF-8)
    raw_label: str
    patient_id: str = ""
    patient_id_origin: str = ""  # where patient_id came from; "manifest" when left empty
    source: str = ""
    license: str = ""
    official_split: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # more manifest columns (e.g. DICOM study uid)
    line: int = 0  # the CSV line that named it (0: not from a CSV row)
    class_folder: bool = False  # store it under <CLASS>/ (the normalised label) + dest
    class_at: int = -1  # a tree's image: the part of dest that is its class folder (stored as the normalised label)


@dataclass
class Scan:
    """A scanned source: what to ingest, what was skipped (with a reason), what was renamed.

    A layout whose labels are not class names brings its own ``aliases`` (raw label → class, under
    ``data.label_aliases``) and ``default_excluded`` labels (dropped unless ``data.label_aliases``
    maps them). A skipped file whose path names a patient (RSNA file names are patientIds) is
    reported under a pseudonymous ``path``; its real path is kept in ``source_file``, which
    :func:`components.core.data.sources.ingest_into` writes into the data folder only.
    """

    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    renamed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layout: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    default_excluded: tuple[str, ...] = ()

    def skip(self, path: str, reason: str, detail: str = "", source_file: str = "", line: int = 0) -> None:
        """Record ``path`` as not ingested; ``line``: the CSV line of the row that named it."""
        row: dict = {"path": path, "reason": reason, "detail": detail}
        if line:
            row["line"] = line
        if source_file:
            row["source_file"] = source_file
        self.skipped.append(row)


def read_table(path: Path, required: tuple[str, ...], what: str):
    """A label CSV of a named layout, as strings (nothing parsed as NaN); a missing column is a
    :class:`DataError` naming the file, the columns it needs and those it has."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read {what}: {err}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: {what} needs columns {list(required)}; missing {missing} (it has {list(df.columns)})")
    return df


def _escaped(ch: str) -> bool:
    return "\udc80" <= ch <= "\udcff" or ch < " " or ch == "\x7f"


def safe_name(name: str) -> str:
    """A file name as valid UTF-8 that any CSV reader reads back: bytes that were not UTF-8 (surrogate-escaped
    by the OS layer, as in names from archives made on Windows) and control characters (a line break inside
    a name) become ``%XX``, so nothing is lost and nothing crashes."""
    if not any(_escaped(ch) for ch in name):
        return name
    return "".join(f"%{_byte(ch):02X}" if _escaped(ch) else ch for ch in name)


def _byte(ch: str) -> int:
    return ord(ch) - 0xDC00 if ch >= "\udc80" else ord(ch)


def renamed_reason(raw: str) -> str:
    """Why :func:`safe_name` changed ``raw``: ``non_utf8_name`` or ``control_character_name``."""
    return "non_utf8_name" if any("\udc80" <= ch <= "\udcff" for ch in raw) else "control_character_name"


RENAMED_DETAIL = "bytes that are not UTF-8, and control characters, are stored as %XX"


def shown(path: str | Path) -> str:
    """A path for reports and messages (never raises on undecodable bytes)."""
    return safe_name(os.fspath(path))


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (following every link) to somewhere under ``root``."""
    try:
        path.resolve(strict=True).relative_to(root.resolve())
        return True
    except (OSError, RuntimeError, ValueError):
        return False
