"""CSV manifests: ``path,label`` plus optional ``patient_id``, ``source``/``source_repo``, ``split``, ``license``.

Paths are relative to the CSV's folder (or absolute). A CSV gets the same rules as a class-folder tree:

- **confined to the data root** (``data.root`` / ``cxr ingest --root``; default: the CSV's folder): a row
  whose path lies outside it (``../``, an absolute path elsewhere) is ``outside_root`` and its file is never
  opened; a path inside that is a link leading outside is ``link_outside_data_folder`` (DVC would cache and
  push whatever it points at);
- **only image files** (by extension, as in a tree: ``not_an_image_name``);
- **every row accounted for**: each data row becomes an image or a row of ``reports/ingest/skipped.csv``
  with its reason and its line number (``missing_file``, ``empty_path``, ``empty_label``, ``malformed_row``,
  …); when the CSV is a folder's ``MANIFEST.csv`` the folder is the data set, and every file under it that
  no row names is ``not_in_manifest``;
- **class folders in the output**: images are stored under ``<CLASS>/`` (the normalised label) plus their path
  inside the root (``NORMAL/sub/a.png``; a path that already starts with its class folder keeps it).

The file is read as UTF-8 (a BOM is dropped; bytes that are not UTF-8 are kept as the file system keeps them,
so a Latin-1 name still finds its file, and stored percent-encoded like a tree's); CRLF line ends, quoted
fields (with separators or line breaks inside), and ``;`` or tab separators (taken from the header line) are
read. Windows-style ``a\\b.png`` paths are resolved as ``a/b.png`` when no file has the literal name.

**Object storage, by reference**: the CSV itself may be an ``s3://`` object (``data.path``), and a row's path an
``s3://`` URI (or relative to an ``s3://`` CSV). Such images are **not copied**: the raw manifest keeps their
URIs, and validate and preprocess read them where they are (:mod:`components.core.data.storage`), so ingest of
400,000 images writes one CSV, and the KFP tasks pass that CSV, not the images, between them. Their existence
is not checked here (one request per image); validate reads every one and quarantines what it cannot read.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path, PurePosixPath

from components.core.contract.errors import DataError
from components.core.data.sources.base import (
    RENAMED_DETAIL,
    SPLIT_NAMES,
    Entry,
    Scan,
    inside,
    renamed_reason,
    safe_name,
    shown,
)

SEPARATORS = (",", ";", "\t")


def read_rows(data: bytes, where: str) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[tuple[int, str]]]:
    """The header (stripped, lower case), ``(line, row)`` per data record and ``(line, problem)`` per malformed
    one. ``line`` is the record's first physical line (1 = the header). Blank lines are not records."""
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    head = text.split("\n", 1)[0]
    counts = {s: head.count(s) for s in SEPARATORS}
    sep = "," if counts[","] or not any(counts.values()) else max(SEPARATORS[1:], key=counts.get)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[tuple[int, str]] = []
    header: list[str] | None = None
    start = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip() and header is not None):
                continue
            if header is None:
                header = [c.strip().lower() for c in record]
                continue
            if len(record) > len(header) and any(v.strip() for v in record[len(header):]):
                bad.append((line, f"{len(record)} fields, the header has {len(header)}"))
                continue
            record = record[:len(header)] + [""] * (len(header) - len(record))
            row: dict[str, str] = {}
            for name, value in zip(header, record, strict=True):
                row.setdefault(name, value)
            rows.append((line, row))
    except csv.Error as err:
        raise DataError(f"{where}: cannot read the CSV manifest at line {reader.line_num}: {err}") from None
    if header is None:
        raise DataError(f"{where}: the CSV manifest is empty (it needs a header: path,label,…)")
    return header, rows, bad


def _read(csv_path: Path | str) -> bytes:
    from components.core.data import storage

    try:
        return storage.read_bytes(csv_path)
    except OSError as err:
        raise DataError(f"{csv_path}: cannot read the CSV manifest: {err.strerror or err}") from None


def locate(base: Path, rel: str) -> tuple[Path, str]:
    """The file a CSV path names, and the path as read: as given, else with backslashes read as separators
    (ingest and predict read CSV paths by this rule)."""
    literal = Path(rel) if Path(rel).is_absolute() else base / rel
    if "\\" not in rel or literal.exists():
        return literal, rel
    posix = rel.replace("\\", "/")
    return (Path(posix) if Path(posix).is_absolute() else base / posix), posix


def _within(path: str, root: str) -> str | None:
    """``path`` (absolute, normalised) relative to ``root`` as posix, or None when it is not under it."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return None
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return None
    return PurePosixPath(Path(rel).as_posix()).as_posix()


def _entry(row: dict[str, str], src, dest: str, line: int, **more) -> Entry:
    """An image from a row; its text columns made safe for the manifest (see :func:`safe_name`)."""
    source = safe_name(row.get("source", row.get("source_repo", "")))
    return Entry(src=src, dest=dest, raw_label=row.get("label", ""), patient_id=safe_name(row.get("patient_id", "")),
                 source=source, license=safe_name(row.get("license", "")),
                 official_split=SPLIT_NAMES.get(row.get("split", "").strip().lower(), ""), line=line, **more)


def scan_csv(csv_path: Path | str, root: Path | str | None = None, whole_folder: bool = False) -> Scan:
    """Scan a CSV manifest. ``root``: the folder every path must resolve inside (default: the CSV's folder).
    ``whole_folder``: the CSV is its folder's ``MANIFEST.csv``: every other file under the root is accounted for
    (``not_in_manifest`` when no row names it)."""
    from components.core.data import storage
    from components.core.data.images import IMAGE_SUFFIXES

    remote_csv = storage.is_remote(csv_path)
    csv_name = str(csv_path).rsplit("/", 1)[-1]
    header, rows, bad = read_rows(_read(csv_path), str(csv_path))
    missing = {"path", "label"} - set(header)
    if missing:
        raise DataError(f"{csv_path}: CSV manifest needs columns path,label; missing {sorted(missing)} (its header "
                        f"has {[safe_name(h) for h in header]}; separators read: , ; or tab)")
    scan = Scan(layout="csv")
    for line, problem in bad:
        scan.skip(f"{csv_name}:{line}", "malformed_row", f"{csv_name} line {line}: {problem}", line=line)
    if remote_csv:
        _scan_remote(rows, str(csv_path), csv_name, scan)
        return scan
    csv_path = Path(csv_path)
    base = csv_path.parent
    root = Path(root) if root else base
    if not root.is_dir():
        raise DataError(f"the data root {root} (data.root / --root) is not a folder")
    roots = (os.path.abspath(root), str(root.resolve()))
    named: set[str] = set()  # real paths of the files rows name (found inside the root)
    for line, row in rows:
        rel = row["path"]
        where = f"{csv_name} line {line}"
        shown_rel = safe_name(rel) or f"{csv_name}:{line}"
        if not rel.strip():
            scan.skip(f"{csv_name}:{line}", "empty_path", f"{where}: the row has no path", line=line)
            continue
        if storage.is_remote(rel):  # an object in storage: referenced, not copied
            scan.entries.append(_entry(row, rel, rel, line))
            continue
        if "\0" in rel:
            scan.skip(shown_rel, "bad_path", f"{where}: the path contains a NUL character", line=line)
            continue
        src, resolved = locate(base, rel)
        literal = os.path.abspath(src)
        inner = next((r for r in (_within(literal, x) for x in roots) if r is not None), None)
        if inner is None:
            scan.skip(shown_rel, "outside_root", f"{where}: the path lies outside the data root {shown(root)} "
                      "(set data.root / --root to a folder that holds it); the file was not opened", line=line)
            continue
        try:
            real = src.resolve(strict=True)
            if not real.is_file():
                raise OSError("not a regular file")
        except FileNotFoundError:
            scan.skip(shown_rel, "missing_file", f"{where}: no such file", line=line)
            continue
        except (OSError, RuntimeError, ValueError) as err:
            scan.skip(shown_rel, "unreadable_link_or_file", f"{where}: {shown(str(err))}", line=line)
            continue
        if not inside(real, root):
            scan.skip(shown_rel, "link_outside_data_folder",
                      f"{where}: the link points outside {shown(root)}; copy the file in instead", line=line)
            continue
        named.add(str(real))
        if not real.name.lower().endswith(IMAGE_SUFFIXES) or not src.name.lower().endswith(IMAGE_SUFFIXES):
            scan.skip(shown_rel, "not_an_image_name", f"{where}: extension not in {', '.join(IMAGE_SUFFIXES)}",
                      line=line)
            continue
        if not row.get("label", "").strip():
            scan.skip(shown_rel, "empty_label", f"{where}: the row has no label", line=line)
            continue
        dest = safe_name(inner)
        if dest != inner:
            scan.renamed.append({"path": dest, "reason": renamed_reason(inner), "detail": f"{where}: {RENAMED_DETAIL}"})
        if resolved != rel:
            scan.renamed.append({"path": shown_rel, "reason": "backslash_path", "detail": f"{where}: read as "
                                 f"{safe_name(resolved)}"})
        scan.entries.append(_entry(row, src, dest, line, class_folder=True))
    if whole_folder:
        _account_unlisted(root, csv_path, named, scan)
    _note_references(scan)
    if any(r["reason"] == "backslash_path" for r in scan.renamed):
        scan.warnings.append(f"{sum(r['reason'] == 'backslash_path' for r in scan.renamed)} CSV paths used "
                             "Windows separators (\\) and were read with /")
    return scan


def _account_unlisted(root: Path, csv_path: Path, named: set[str], scan: Scan) -> None:
    """Every file under ``root`` that no row named (nor the manifest itself): ``not_in_manifest``."""
    own = str(csv_path.resolve())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in [*sorted(filenames), *(d for d in dirnames if (here / d).is_symlink())]:
            p = here / name
            real = os.path.realpath(p)
            if real in named or real == own:
                continue
            rel = shown(p.relative_to(root).as_posix()) + ("/" if p.is_dir() else "")
            scan.skip(rel, "not_in_manifest", f"no row of {csv_path.name} names this file")


def _scan_remote(rows: list[tuple[int, dict[str, str]]], csv_uri: str, csv_name: str, scan: Scan) -> None:
    """A CSV in object storage: every row's image by reference (relative paths against the CSV's prefix)."""
    from components.core.data import storage

    base = csv_uri.rsplit("/", 1)[0]
    for line, row in rows:
        rel = row["path"].replace("\\", "/")
        if not rel.strip():
            scan.skip(f"{csv_name}:{line}", "empty_path", f"{csv_name} line {line}: the row has no path", line=line)
            continue
        uri = storage.join(base, rel)
        scan.entries.append(_entry(row, uri, uri, line))
    _note_references(scan)


def _note_references(scan: Scan) -> None:
    from components.core.data import storage

    n = sum(storage.is_remote(e.dest) for e in scan.entries)
    if n:
        scan.warnings.append(f"{n} images are in object storage: referenced by URI in the manifest, not copied "
                             "(validate reads each one and records its sha256)")
