"""CSV manifests: ``path,label`` plus optional ``patient_id``, ``source``/``source_repo``, ``split``, ``license``.

Paths are relative to the CSV's folder (or absolute).

**Object storage, by reference**: the CSV itself may be an ``s3://`` object (``data.path``), and a row's path an
``s3://`` URI (or relative to an ``s3://`` CSV). Such images are **not copied**: the raw manifest keeps their
URIs, and validate and preprocess read them where they are (:mod:`components.core.data.storage`), so ingest of
400,000 images writes one CSV, and the KFP tasks pass that CSV, not the images, between them. Their existence
is not checked here (one request per image); validate reads every one and quarantines what it cannot read.

Windows-style ``a\\b.png`` paths are
resolved as ``a/b.png`` when no file has the literal name. A row whose file is missing is skipped
and reported (every row is accounted for); a CSV row names its file explicitly, so it may point
outside the CSV's folder (the README's held-out example does).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from components.core.contract.errors import DataError
from components.core.data.sources.base import SPLIT_NAMES, Entry, Scan, safe_name


def _locate(base: Path, rel: str) -> tuple[Path, str]:
    """The file a CSV path names: as given, else with backslashes read as separators."""
    literal = Path(rel) if Path(rel).is_absolute() else base / rel
    if "\\" not in rel or literal.exists():
        return literal, rel
    posix = rel.replace("\\", "/")
    return (Path(posix) if Path(posix).is_absolute() else base / posix), posix


def scan_csv(csv_path: Path | str) -> Scan:
    import io

    import pandas as pd

    from components.core.data import storage

    remote_csv = storage.is_remote(csv_path)
    try:
        source = io.BytesIO(storage.read_bytes(csv_path)) if remote_csv else csv_path
        df = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{csv_path}: cannot read the CSV manifest: {err}") from None
    csv_name = str(csv_path).rsplit("/", 1)[-1]
    if remote_csv:
        return _scan_remote(df, str(csv_path), csv_name)
    csv_path = Path(csv_path)
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DataError(f"{csv_path}: CSV manifest needs columns path,label; missing {sorted(missing)}")
    source_col = "source" if "source" in df.columns else ("source_repo" if "source_repo" in df.columns else None)
    scan = Scan(layout="csv")
    base = csv_path.parent
    used: set[str] = set()
    for line, row in enumerate(df.itertuples(index=False), start=2):
        rel = str(row.path)
        if not rel.strip():
            scan.skip(f"{csv_path.name}:{line}", "empty_path", "the row has no path")
            continue
        if storage.is_remote(rel):  # an object in storage: referenced, not copied
            scan.entries.append(_entry(row, rel, rel, source_col))
            continue
        src, resolved = _locate(base, rel)
        posix = PurePosixPath(resolved)
        escapes = posix.is_absolute() or ".." in posix.parts
        dest = f"{row.label}/{posix.name}" if escapes else posix.as_posix()  # never outside the output folder
        dest = safe_name(dest)
        stem, n = dest, 1
        while dest in used:
            n += 1
            dest = f"{PurePosixPath(stem).with_suffix('')}-{n}{PurePosixPath(stem).suffix}"
        try:
            if not src.resolve(strict=True).is_file():
                raise OSError("not a regular file")
        except FileNotFoundError:
            scan.skip(rel, "missing_file", f"listed in {csv_path.name} (line {line}) but no such file")
            continue
        except (OSError, RuntimeError) as err:
            scan.skip(rel, "unreadable_link_or_file", f"{csv_path.name} line {line}: {err}")
            continue
        used.add(dest)
        if resolved != rel:
            scan.renamed.append({"path": rel, "reason": "backslash_path", "detail": f"read as {resolved}"})
        split = SPLIT_NAMES.get(str(getattr(row, "split", "")).lower(), "")
        scan.entries.append(Entry(
            src=src, dest=dest, raw_label=str(row.label),
            patient_id=str(getattr(row, "patient_id", "") or ""),
            source=str(getattr(row, source_col)) if source_col else "",
            license=str(getattr(row, "license", "") or ""),
            official_split=split,
        ))
    _note_references(scan)
    if any(r["reason"] == "backslash_path" for r in scan.renamed):
        scan.warnings.append(f"{sum(r['reason'] == 'backslash_path' for r in scan.renamed)} CSV paths used "
                             "Windows separators (\\) and were read with /")
    return scan


def _entry(row, src, dest: str, source_col: str | None) -> Entry:
    return Entry(src=src, dest=dest, raw_label=str(row.label), patient_id=str(getattr(row, "patient_id", "") or ""),
                 source=str(getattr(row, source_col)) if source_col else "",
                 license=str(getattr(row, "license", "") or ""),
                 official_split=SPLIT_NAMES.get(str(getattr(row, "split", "")).lower(), ""))


def _scan_remote(df, csv_uri: str, csv_name: str) -> Scan:
    """A CSV in object storage: every row's image by reference (relative paths against the CSV's prefix)."""
    from components.core.data import storage

    source_col = "source" if "source" in df.columns else ("source_repo" if "source_repo" in df.columns else None)
    base = csv_uri.rsplit("/", 1)[0]
    scan = Scan(layout="csv")
    for line, row in enumerate(df.itertuples(index=False), start=2):
        rel = str(row.path).replace("\\", "/")
        if not rel.strip():
            scan.skip(f"{csv_name}:{line}", "empty_path", "the row has no path")
            continue
        uri = storage.join(base, rel)
        scan.entries.append(_entry(row, uri, uri, source_col))
    _note_references(scan)
    return scan


def _note_references(scan: Scan) -> None:
    from components.core.data import storage

    n = sum(storage.is_remote(e.dest) for e in scan.entries)
    if n:
        scan.warnings.append(f"{n} images are in object storage: referenced by URI in the manifest, not copied "
                             "(validate reads each one and records its sha256)")
