"""Source adapters: turn a data source into ``<out>/<images>`` + ``manifest.csv``, accounting for every file.

Adapters: ``demo`` (the synthetic generator), ``dir`` (a folder or a CSV), ``kaggle`` (downloaded,
then read like ``dir``), ``dvc`` (``dvc://<git-url>@<rev>``: what a commit pins). Ingest and the
external test sets both call :func:`ingest_into`, so an external set goes through the very same code.

A folder is read in one of these layouts (``data.layout``; ``auto`` picks the first that fits):

- a CSV manifest (``path,label,…``; a ``MANIFEST.csv`` at a folder's root is used as its manifest),
- ``rsna``: the RSNA Pneumonia Detection Challenge (:mod:`.rsna`),
- ``siim``: the SIIM-FISABIO-RSNA COVID-19 Detection competition (:mod:`.siim`),
- ``classes``: a class-folder tree, ``<CLASS>/…`` or ``train|val|test/<CLASS>/…`` (:mod:`.folder`).

Files are hard-linked (or copied) into a temporary sibling of the output, renamed when complete; images in
object storage (an ``s3://`` CSV manifest) are referenced by URI instead of copied.
Contents are not judged here (that is validate's job); labels are normalised (a named layout adds
its own aliases and default exclusions) and unknown labels are an error. Every file the source
holds is either in the manifest or in the skipped list with a reason; :func:`write_account` writes
both as a report. A skipped file whose name is a patient id is reported under a pseudonym; its real
name goes to ``<out>/skipped_sources.csv``, inside the data folder only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from components.core.data import manifest, storage
from components.core.contract.errors import DataError
from components.core.contract.fsutil import atomic_path, remove, write_json
from components.core.data.labels import LabelMap, patient_from_filename
from components.core.contract.progress import progress
from components.core.data.sources import demo, dvc, folder, kaggle, rsna, siim, table
from components.core.data.sources.base import Entry, Scan
from components.core.data.sources.names import Namer

log = logging.getLogger(__name__)
MANIFEST_CANDIDATES = ("MANIFEST.csv", "manifest.csv")
NAMED_LAYOUTS = {"rsna": rsna, "siim": siim}
PRIVATE_SKIPPED = "skipped_sources.csv"

__all__ = ["Entry", "Scan", "ingest_into", "scan_path", "write_account"]


def scan_path(path: Path, labels: LabelMap, layout: str = "auto", root: str | Path | None = None) -> Scan:
    """A folder (class tree, a named Kaggle layout, or one with a MANIFEST.csv) or a CSV file. ``root``: the
    folder a CSV's paths must stay inside (default: the CSV's folder)."""
    if not path.exists():
        raise DataError(f"data.path {path} does not exist (a class-folder tree, an RSNA/SIIM folder or a CSV manifest)")
    if layout in NAMED_LAYOUTS:
        adapter = NAMED_LAYOUTS[layout]
        base = adapter.find(path) if path.is_dir() else None
        if base is None:
            raise DataError(f"data.layout is {layout!r} but " + adapter.expected(path)
                            + ". Set data.layout: auto to detect the layout.")
        return adapter.scan(base, path)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"data.path {path} is a file but not a .csv manifest")
        return table.scan_csv(path, root)
    for name in MANIFEST_CANDIDATES:
        if (path / name).is_file():  # the folder is the data set: its files are accounted for against the rows
            return table.scan_csv(path / name, root or path, whole_folder=root is None or Path(root) == path)
    if layout == "auto":
        for adapter in NAMED_LAYOUTS.values():
            base = adapter.find(path)
            if base is not None:
                return adapter.scan(base, path)
    return folder.scan_tree(path, labels)


def layout_labels(data, scan: Scan) -> LabelMap:
    """The label map for a scanned source: built-in aliases, the layout's, then ``data.label_aliases``;
    the layout's default exclusions unless ``data.label_aliases`` maps them."""
    aliased = LabelMap(data.classes, exclude=data.label_aliases)  # matches a label as alias keys match it
    default_excluded = [x for x in scan.default_excluded if not aliased.excluded(x)]
    return LabelMap(data.classes, {**scan.aliases, **data.label_aliases}, [*data.exclude_labels, *default_excluded])


def _rows(scan: Scan, labels: LabelMap, where: str, default_source: str) -> list[dict[str, Any]]:
    kept = [e for e in scan.entries if not labels.excluded(e.raw_label)]
    by_default = LabelMap([], exclude=scan.default_excluded)
    for e in scan.entries:
        if labels.excluded(e.raw_label):
            why = (f"label {e.raw_label!r} is excluded by default in the {scan.layout.split()[0]} layout (map it with "
                   "data.label_aliases to keep it)" if by_default.excluded(e.raw_label)
                   else f"label {e.raw_label!r} is in data.exclude_labels")
            scan.skip(e.dest, "excluded_label", why, source_file=e.extra.get("source_file", ""), line=e.line)
    excluded = Counter(e.raw_label for e in scan.entries if labels.excluded(e.raw_label))
    if excluded:
        scan.warnings.append(f"excluded labels (data.exclude_labels, or the layout's default): {dict(excluded)}")
    norm = labels.normalise_all([e.raw_label for e in kept], where)
    rows = []
    namer, moved, folders = Namer(), {}, {}
    for e, label in zip(kept, norm, strict=True):
        given = e.dest
        if e.class_folder:  # a CSV row: stored under its normalised class folder, never under the raw label
            dest = e.dest if e.dest.split("/", 1)[0] == label else f"{label}/{e.dest}"
        elif e.class_at >= 0:  # a tree's image: its class folder is stored as the normalised label, too
            parts = e.dest.split("/")
            if parts[e.class_at] != label:
                folders["/".join(parts[:e.class_at + 1])] = "/".join([*parts[:e.class_at], label])
            dest = "/".join([*parts[:e.class_at], label, *parts[e.class_at + 1:]])
        else:
            dest = e.dest
        if not storage.is_remote(dest):  # an object in storage is referenced, not stored
            dest, why = namer.claim(dest, given)
            for reason, detail in why:
                scan.renamed.append({"path": dest, "reason": reason, "detail": detail,
                                     **({"line": e.line} if e.line else {})})
        moved[given] = dest
        e.dest = dest
        if e.patient_id:
            pid, origin = e.patient_id, e.patient_id_origin or "manifest"
        elif (from_name := patient_from_filename(Path(given).name)) is not None:
            pid, origin = from_name, "filename"
        else:
            pid, origin = f"file:{e.dest}", "file"
        rows.append({"path": e.dest, "label": label, "patient_id": pid, "patient_id_origin": origin,
                     "source": e.source or default_source, "license": e.license,
                     "official_split": e.official_split, **e.extra, "_src": e.src})
    for r in scan.renamed:  # rows an adapter recorded (non_utf8_name…) name the path as finally stored
        r["path"] = moved.get(r["path"], r["path"])
    for raw, stored in folders.items():
        scan.warnings.append(f"class folder {raw}/ is stored as {stored}/ (the normalised label)")
    return rows


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src.resolve(), dest)
    except OSError:
        shutil.copyfile(src, dest)


def ingest_into(data, out_dir: str | Path, source_path: str | Path | None = None, data_uri: str = "",
                root: str | Path | None = None, overrides=None, overrides_source: str = "") -> dict:
    """Ingest the ``data`` params section into ``out_dir`` (images + ``manifest.csv``); return a summary.

    ``source_path`` overrides ``data.path`` (for kaggle: the folder a download produced, no download);
    ``data_uri`` (``dvc://<git-url>@<rev>``) fetches what a commit pins instead (its label overrides were
    applied when it was made); ``root`` overrides ``data.root`` (the folder a CSV manifest's paths must stay
    inside; default: the CSV's folder). ``overrides``: the label decisions
    (:func:`components.core.data.overrides.read`) to apply.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    root_override = root
    if data_uri:
        summary = dvc.fetch(data_uri, out_dir)
        summary.update({"skipped": [], "renamed": [], "warnings": []})
        return summary
    src = data.source
    labels = LabelMap(data.classes, data.label_aliases, data.exclude_labels)
    summary: dict = {"source": src, "output": str(out_dir)}
    private: list[dict] = []
    with atomic_path(out_dir, directory=True) as tmp:
        if src == "demo":
            df = pd.DataFrame(demo.write(list(data.classes), data.demo, tmp))
            df = df[[*manifest.RAW_COLUMNS, *[c for c in df.columns if c not in manifest.RAW_COLUMNS]]]
            scan = Scan(layout="demo")
        else:
            if src == "kaggle":
                root = Path(source_path) if source_path else kaggle.download(data.kaggle_dataset)
                default_source = data.kaggle_dataset
            else:
                root = source_path or data.path or ""
                root = str(root) if storage.is_remote(root) else Path(root)
                default_source = ""
            # an s3:// CSV manifest: its images are referenced where they are (components/core/data/sources/table.py)
            confine = root_override or getattr(data, "root", None) or None
            scan = (table.scan_csv(root) if storage.is_remote(root)
                    else scan_path(root, labels, data.layout, Path(confine) if confine else None))
            log.info("scanned %s (%s): %d images, %d skipped", root, scan.layout, len(scan.entries), len(scan.skipped))
            labels = layout_labels(data, scan)
            rows = _rows(scan, labels, str(root), default_source)
            extra = sorted({k for r in rows for k in r} - set(manifest.RAW_COLUMNS) - {"license", "_src"})
            df = pd.DataFrame(rows, columns=[*manifest.RAW_COLUMNS, "license", *extra, "_src"])
            counts = df["label"].value_counts()
            empty = [c for c in labels.classes if counts.get(c, 0) == 0]
            if empty:
                refused = Counter(x["reason"] for x in scan.skipped)
                hint = (f"; skipped: {dict(refused)}" if refused else "") + (
                    " (rows outside the CSV's folder need data.root / --root set to a folder that holds them)"
                    if refused.get("outside_root") else "")
                raise DataError(f"{root}: class(es) {empty} have no images. Add images for them, or remove them "
                                f"from data.classes (found: {counts.to_dict()}{hint})")
            for s, d in progress(zip(df["_src"], df["path"], strict=True), "ingest", total=len(df)):
                if not storage.is_remote(d):  # an object in storage stays where it is
                    _place(s, tmp / d)
            df = df.drop(columns="_src")
            private = [s for s in scan.skipped if s.get("source_file")]
            if private:  # real names of files reported under a pseudonym: the data folder only
                pd.DataFrame(private, columns=["path", "source_file", "reason", "detail"]).to_csv(
                    tmp / PRIVATE_SKIPPED, index=False)
                scan.skipped = [{k: v for k, v in s.items() if k != "source_file"} for s in scan.skipped]
        if overrides is not None:
            from components.core.data import overrides as decisions

            def read_bytes(p: str) -> bytes:
                return storage.read_bytes(p if storage.is_remote(p) else tmp / p)

            df, excluded, summary["label_overrides"] = decisions.apply(df, overrides, read_bytes, overrides_source)
            for e in excluded:  # an excluded image is not in the data folder either
                if not storage.is_remote(e["path"]):
                    remove(tmp / e["path"])
            scan.skipped += excluded
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
    if private:
        summary["skipped_sources"] = (f"{len(private)} skipped files are reported under pseudonyms (their names are "
                                      f"patient ids); their real names are in {out_dir / PRIVATE_SKIPPED}")
    if summary["patient_id_origin"].get("file"):
        summary["warnings"].append(
            f"{summary['patient_id_origin']['file']} images have no patient id: each is treated as its own "
            "patient, so a patient with several images could straddle splits")
    for w in summary["warnings"]:
        log.warning(w)
    if scan.skipped:
        reasons = Counter(s["reason"] for s in scan.skipped)
        log.warning("skipped %d files or rows: %s (see the ingest report)", len(scan.skipped), dict(reasons))
    if scan.renamed:
        reasons = Counter(s["reason"] for s in scan.renamed)
        log.warning("stored %d files under another name: %s (see the ingest report)", len(scan.renamed),
                    dict(reasons))
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
        df = pd.DataFrame(rows, columns=["status", "path", "reason", "detail", "line"])
        df["line"] = df["line"].astype("Int64")  # the CSV line of a manifest row; empty for a file of a tree
        df.to_csv(tmp / "skipped.csv", index=False)
        write_json(tmp / "summary.json", short)
    return short
