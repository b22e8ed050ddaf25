"""Source adapters: turn a data source into ``<out>/<images>`` + ``manifest.csv``, accounting for every file.

Adapters: ``demo`` (the synthetic generator), ``dir`` (a class-folder tree, or a CSV manifest; a
``MANIFEST.csv`` at a folder's root is used as its manifest), ``kaggle`` (downloaded, then read
like ``dir``), ``dvc`` (``dvc://<git-url>@<rev>``: what a commit pins). Ingest and the external
test sets both call :func:`ingest_into`, so an external set goes through the very same code.

Files are hard-linked (or copied) into a temporary sibling of the output, renamed when complete.
Contents are not judged here (that is validate's job); labels are normalised and unknown labels
are an error. Every file the source holds is either in the manifest or in the skipped list with a
reason; :func:`write_account` writes both as a report.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from components.core import manifest
from components.core.errors import DataError
from components.core.fsutil import atomic_path, write_json
from components.core.labels import LabelMap, patient_from_filename
from components.core.progress import progress
from components.core.sources import demo, dvc, folder, kaggle, table
from components.core.sources.base import Entry, Scan

log = logging.getLogger(__name__)
MANIFEST_CANDIDATES = ("MANIFEST.csv", "manifest.csv")

__all__ = ["Entry", "Scan", "ingest_into", "scan_path", "write_account"]


def scan_path(path: Path, labels: LabelMap) -> Scan:
    """A folder (class tree or one with a MANIFEST.csv) or a CSV file."""
    if not path.exists():
        raise DataError(f"data.path {path} does not exist (a class-folder tree or a CSV manifest)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"data.path {path} is a file but not a .csv manifest")
        return table.scan_csv(path)
    for name in MANIFEST_CANDIDATES:
        if (path / name).is_file():
            return table.scan_csv(path / name)
    return folder.scan_tree(path, labels)


def _rows(scan: Scan, labels: LabelMap, where: str, default_source: str) -> list[dict[str, Any]]:
    kept = [e for e in scan.entries if not labels.excluded(e.raw_label)]
    for e in scan.entries:
        if labels.excluded(e.raw_label):
            scan.skip(e.dest, "excluded_label", f"label {e.raw_label!r} is in data.exclude_labels")
    excluded = Counter(e.raw_label for e in scan.entries if labels.excluded(e.raw_label))
    if excluded:
        scan.warnings.append(f"excluded by data.exclude_labels: {dict(excluded)}")
    norm = labels.normalise_all([e.raw_label for e in kept], where)
    rows = []
    for e, label in zip(kept, norm, strict=True):
        if e.patient_id:
            pid, origin = e.patient_id, "manifest"
        elif (from_name := patient_from_filename(Path(e.dest).name)) is not None:
            pid, origin = from_name, "filename"
        else:
            pid, origin = f"file:{e.dest}", "file"
        rows.append({"path": e.dest, "label": label, "patient_id": pid, "patient_id_origin": origin,
                     "source": e.source or default_source, "license": e.license,
                     "official_split": e.official_split, **e.extra, "_src": e.src})
    return rows


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src.resolve(), dest)
    except OSError:
        shutil.copyfile(src, dest)


def ingest_into(data, out_dir: str | Path, source_path: str | Path | None = None, data_uri: str = "") -> dict:
    """Ingest the ``data`` params section into ``out_dir`` (images + ``manifest.csv``); return a summary.

    ``source_path`` overrides ``data.path`` (for kaggle: the folder a download produced, no download);
    ``data_uri`` (``dvc://<git-url>@<rev>``) fetches what a commit pins instead.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    if data_uri:
        summary = dvc.fetch(data_uri, out_dir)
        summary.update({"skipped": [], "renamed": [], "warnings": []})
        return summary
    src = data.source
    labels = LabelMap(data.classes, data.label_aliases, data.exclude_labels)
    summary: dict = {"source": src, "output": str(out_dir)}
    with atomic_path(out_dir, directory=True) as tmp:
        if src == "demo":
            df = pd.DataFrame(demo.write(list(data.classes), data.demo, tmp), columns=manifest.RAW_COLUMNS)
            scan = Scan(layout="demo")
        else:
            if src == "kaggle":
                root = Path(source_path) if source_path else kaggle.download(data.kaggle_dataset)
                default_source = data.kaggle_dataset
            else:
                root = Path(source_path or data.path or "")
                default_source = ""
            scan = scan_path(root, labels)
            log.info("scanned %s (%s): %d images, %d skipped", root, scan.layout, len(scan.entries), len(scan.skipped))
            rows = _rows(scan, labels, str(root), default_source)
            extra = sorted({k for r in rows for k in r} - set(manifest.RAW_COLUMNS) - {"license", "_src"})
            df = pd.DataFrame(rows, columns=[*manifest.RAW_COLUMNS, "license", *extra, "_src"])
            counts = df["label"].value_counts()
            empty = [c for c in labels.classes if counts.get(c, 0) == 0]
            if empty:
                raise DataError(f"{root}: class(es) {empty} have no images. Add images for them, or remove them "
                                f"from data.classes (found: {counts.to_dict()})")
            for s, d in progress(zip(df["_src"], df["path"], strict=True), "ingest", total=len(df)):
                _place(s, tmp / d)
            df = df.drop(columns="_src")
        manifest.write(df, tmp / manifest.MANIFEST_NAME)
    summary.update({
        "layout": scan.layout,
        "images": len(df),
        "per_class": {k: int(v) for k, v in df["label"].value_counts().sort_index().items()},
        "per_official_split": {k or "none": int(v) for k, v in df["official_split"].value_counts().items()},
        "patients": int(df["patient_id"].nunique()),
        "patient_id_origin": {k: int(v) for k, v in df["patient_id_origin"].value_counts().items()},
        "skipped": scan.skipped,
        "renamed": scan.renamed,
        "warnings": scan.warnings,
    })
    if summary["patient_id_origin"].get("file"):
        summary["warnings"].append(
            f"{summary['patient_id_origin']['file']} images have no patient id: each is treated as its own "
            "patient, so a patient with several images could straddle splits")
    for w in summary["warnings"]:
        log.warning(w)
    if scan.skipped:
        reasons = Counter(s["reason"] for s in scan.skipped)
        log.warning("skipped %d files or rows: %s (see the ingest report)", len(scan.skipped), dict(reasons))
    return summary


def account(summary: dict) -> dict:
    """The short form of an ingest summary: counts by reason and a few examples, no long lists."""
    out = {k: v for k, v in summary.items() if k not in ("skipped", "renamed")}
    for key in ("skipped", "renamed"):
        items = summary.get(key) or []
        out[key] = {"count": len(items), "by_reason": dict(Counter(i["reason"] for i in items)),
                    "examples": items[:10]}
    return out


def write_account(summary: dict, report_dir: str | Path) -> dict:
    """``summary.json`` (counts) and ``skipped.csv`` (every skipped or renamed file with its reason)."""
    import pandas as pd

    report_dir = Path(report_dir)
    short = account(summary)
    with atomic_path(report_dir, directory=True) as tmp:
        rows = [{"status": "skipped", **s} for s in summary.get("skipped") or []]
        rows += [{"status": "renamed", **s} for s in summary.get("renamed") or []]
        pd.DataFrame(rows, columns=["status", "path", "reason", "detail"]).to_csv(tmp / "skipped.csv", index=False)
        write_json(tmp / "summary.json", short)
    return short
