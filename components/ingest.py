"""Ingest: bring images from a source into ``data/raw/`` with a raw manifest.

Sources (``data.source``):

* ``demo`` – the embedded synthetic generator (offline, seconds);
* ``dir`` – a class-folder tree (``<CLASS>/…`` or ``train|val|test/<CLASS>/…``) or a CSV
  manifest with ``path,label[,patient_id,source,split]``; a ``MANIFEST.csv`` at the root of a
  folder is used as its manifest;
* ``kaggle`` – downloaded with ``kagglehub`` using credentials from the environment, then read
  like ``dir``.

Files are hard-linked (or copied) under the output folder, which is built in a temporary
sibling and renamed when complete. Contents are not judged here (that is validate's job); labels
are normalised and unknown labels are an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from components.core import manifest, synthetic
from components.core.config import Params
from components.core.errors import DataError, ServiceError
from components.core.fsutil import atomic_path
from components.core.images import IMAGE_SUFFIXES
from components.core.labels import LabelMap, patient_from_filename
from components.core.progress import progress

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
MANIFEST_CANDIDATES = ("MANIFEST.csv", "manifest.csv")
IGNORED_DIRS = {"__MACOSX"}


@dataclass
class Entry:
    """One image to ingest: where it is now and what we know about it."""

    src: Path
    dest: str  # posix path relative to the output folder
    raw_label: str
    patient_id: str = ""
    source: str = ""
    license: str = ""
    official_split: str = ""


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layout: str = ""


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name not in IGNORED_DIRS)


def _walk_files(folder: Path, scan: Scan, root: Path):
    """Files under ``folder`` (no symlinked dirs followed); broken links and loops are skipped."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if name.startswith("."):
                continue
            if not name.lower().endswith(IMAGE_SUFFIXES):
                scan.skipped.append({"path": rel, "reason": "not an image file name (by extension)"})
                continue
            try:
                if not p.resolve(strict=True).is_file():
                    raise OSError("not a regular file")
            except (OSError, RuntimeError) as err:
                scan.skipped.append({"path": rel, "reason": f"unreadable link or file: {err}"})
                continue
            yield p, rel


def _scan_class_folders(base: Path, root: Path, scan: Scan, official_split: str = "") -> None:
    for folder in _visible_dirs(base):
        before = len(scan.entries)
        for p, rel in _walk_files(folder, scan, root):
            scan.entries.append(Entry(src=p, dest=rel, raw_label=folder.name, official_split=official_split))
        if len(scan.entries) == before:
            scan.warnings.append(f"class folder {folder.relative_to(root).as_posix()}/ has no images")


def _looks_like_class(name: str, labels: LabelMap) -> bool:
    return labels.normalise(name) is not None or labels.excluded(name)


def find_layout_root(root: Path, labels: LabelMap) -> tuple[Path, str]:
    """Descend through single wrapper folders (as Kaggle zips have) to the split or class level."""
    current = root
    for _ in range(6):
        dirs = _visible_dirs(current)
        names = [d.name for d in dirs]
        if any(n.lower() in SPLIT_NAMES for n in names):
            return current, "split"
        if any(_looks_like_class(n, labels) for n in names):
            return current, "class"
        if len(dirs) != 1:
            break
        current = dirs[0]
    found = ", ".join(d.name for d in _visible_dirs(root)) or "nothing"
    raise DataError(
        f"{root}: cannot find class folders. Expected <CLASS>/ or train|val|test/<CLASS>/ folders "
        f"(classes {labels.classes}), or a MANIFEST.csv; found folders: {found}"
    )


def scan_tree(root: Path, labels: LabelMap) -> Scan:
    """Scan a class-folder tree, with an optional split level."""
    scan = Scan()
    base, layout = find_layout_root(root, labels)
    scan.layout = layout if base == root else f"{layout} (under {base.relative_to(root).as_posix()}/)"
    # paths in the manifest are relative to the layout level, without wrapper folders
    if layout == "class":
        _scan_class_folders(base, base, scan)
        return scan
    for split_dir in _visible_dirs(base):
        split = SPLIT_NAMES.get(split_dir.name.lower())
        if split is None:
            scan.warnings.append(f"ignored folder {split_dir.relative_to(root).as_posix()}/ (not train/val/test)")
            continue
        _scan_class_folders(split_dir, base, scan, official_split=split)
    return scan


def scan_csv(csv_path: Path) -> Scan:
    """Scan a CSV manifest: ``path,label`` plus optional ``patient_id``, ``source``/``source_repo``, ``split``."""
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{csv_path}: cannot read the CSV manifest: {err}") from None
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DataError(f"{csv_path}: CSV manifest needs columns path,label; missing {sorted(missing)}")
    source_col = "source" if "source" in df.columns else ("source_repo" if "source_repo" in df.columns else None)
    scan = Scan(layout="csv")
    base = csv_path.parent
    used: set[str] = set()
    for row in df.itertuples(index=False):
        rel = str(row.path)
        src = Path(rel) if Path(rel).is_absolute() else base / rel
        posix = PurePosixPath(rel.replace("\\", "/"))
        escapes = posix.is_absolute() or ".." in posix.parts
        dest = f"{row.label}/{posix.name}" if escapes else posix.as_posix()  # never outside the output folder
        stem, n = dest, 1
        while dest in used:
            n += 1
            dest = f"{PurePosixPath(stem).with_suffix('')}-{n}{PurePosixPath(stem).suffix}"
        used.add(dest)
        try:
            if not src.resolve(strict=True).is_file():
                raise OSError("not a regular file")
        except (OSError, RuntimeError) as err:
            scan.skipped.append({"path": rel, "reason": f"listed in the CSV but unreadable: {err}"})
            continue
        split = SPLIT_NAMES.get(str(getattr(row, "split", "")).lower(), "")
        scan.entries.append(Entry(
            src=src, dest=dest, raw_label=str(row.label),
            patient_id=str(getattr(row, "patient_id", "") or ""),
            source=str(getattr(row, source_col)) if source_col else "",
            license=str(getattr(row, "license", "") or ""),
            official_split=split,
        ))
    return scan


def scan_path(path: Path, labels: LabelMap) -> Scan:
    if not path.exists():
        raise DataError(f"data.path {path} does not exist (a class-folder tree or a CSV manifest)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"data.path {path} is a file but not a .csv manifest")
        return scan_csv(path)
    for name in MANIFEST_CANDIDATES:
        if (path / name).is_file():
            return scan_csv(path / name)
    return scan_tree(path, labels)


def kaggle_download(dataset: str) -> Path:
    """Download (or reuse the cache of) a Kaggle dataset with kagglehub; clear errors offline."""
    has_env = bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or bool(
        os.environ.get("KAGGLE_API_TOKEN"))
    kaggle_json = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not has_env and not kaggle_json.is_file():
        raise ServiceError(
            "data.source is 'kaggle' but no Kaggle credentials were found: set KAGGLE_USERNAME and "
            f"KAGGLE_KEY (from kaggle.com → Settings → API), or put kaggle.json in {kaggle_json.parent}"
        )
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(dataset))
    except Exception as err:
        raise ServiceError(
            f"downloading Kaggle dataset {dataset!r} failed: {type(err).__name__}: {err}. "
            "Check the network, the credentials and data.kaggle_dataset."
        ) from None


def _resolve_entries(scan: Scan, labels: LabelMap, where: str, default_source: str) -> pd.DataFrame:
    kept = [e for e in scan.entries if not labels.excluded(e.raw_label)]
    excluded = Counter(e.raw_label for e in scan.entries if labels.excluded(e.raw_label))
    if excluded:
        scan.warnings.append(f"excluded by data.exclude_labels: {dict(excluded)}")
    norm = labels.normalise_all([e.raw_label for e in kept], where)
    rows = []
    for e, label in zip(kept, norm, strict=True):
        if e.patient_id:
            pid, origin = e.patient_id, "manifest"
        elif (from_name := patient_from_filename(e.src.name)) is not None:
            pid, origin = from_name, "filename"
        else:
            pid, origin = f"file:{e.dest}", "file"
        rows.append({"path": e.dest, "label": label, "patient_id": pid, "patient_id_origin": origin,
                     "source": e.source or default_source, "license": e.license,
                     "official_split": e.official_split, "_src": e.src})
    df = pd.DataFrame(rows, columns=[*manifest.RAW_COLUMNS, "license", "_src"])
    counts = df["label"].value_counts()
    empty = [c for c in labels.classes if counts.get(c, 0) == 0]
    if empty:
        raise DataError(
            f"{where}: class(es) {empty} have no images. Add images for them, or remove them from "
            f"data.classes (found: {counts.to_dict()})"
        )
    return df


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src.resolve(), dest)
    except OSError:
        shutil.copyfile(src, dest)


def _write_demo(params: Params, tmp: Path) -> pd.DataFrame:
    d = params.data.demo
    rows = []
    gen = synthetic.generate(params.data.classes, d.patients_per_class, d.max_images_per_patient,
                             d.min_side, d.max_side, d.seed)
    for rel, label, patient, data in progress(gen, "demo images"):
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        rows.append({"path": rel, "label": label, "patient_id": patient, "patient_id_origin": "manifest",
                     "source": "demo", "official_split": ""})
    return pd.DataFrame(rows, columns=manifest.RAW_COLUMNS)


def run(params: Params, out_dir: str | Path, source_path: str | Path | None = None) -> dict:
    """Ingest ``params.data`` into ``out_dir`` (images + ``manifest.csv``); return a summary.

    ``source_path`` overrides ``data.path`` (and, for kaggle, skips the download: it is the
    folder the download produced).
    """
    out_dir = Path(out_dir)
    src = params.data.source
    labels = LabelMap(params.data.classes, params.data.label_aliases, params.data.exclude_labels)
    summary: dict = {"source": src, "output": str(out_dir)}
    with atomic_path(out_dir, directory=True) as tmp:
        if src == "demo":
            df = _write_demo(params, tmp)
            scan = Scan(layout="demo")
        else:
            if src == "kaggle":
                root = Path(source_path) if source_path else kaggle_download(params.data.kaggle_dataset)
                default_source = params.data.kaggle_dataset
            else:
                root = Path(source_path or params.data.path or "")
                default_source = ""
            scan = scan_path(root, labels)
            df = _resolve_entries(scan, labels, str(root), default_source)
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
        "warnings": scan.warnings,
    })
    if summary["patient_id_origin"].get("file"):
        summary["warnings"].append(
            f"{summary['patient_id_origin']['file']} images have no patient id: each is treated as its own "
            "patient, so a patient with several images could straddle splits"
        )
    return summary


def parse_dvc_uri(uri: str) -> tuple[str, str]:
    """``dvc://<git-url>@<rev>`` → (git url, rev). The URL may itself contain '@' (git@host:repo)."""
    body = uri.removeprefix("dvc://")
    if "@" not in body:
        raise DataError(f"{uri!r}: expected dvc://<git-url>@<rev>, e.g. dvc://https://github.com/org/repo@v1.2")
    url, rev = body.rsplit("@", 1)
    if not url or not rev:
        raise DataError(f"{uri!r}: expected dvc://<git-url>@<rev>")
    return url, rev


def fetch_dvc(uri: str, out_dir: str | Path, path_in_repo: str = "data/raw") -> dict:
    """Fetch the ingested data exactly as a commit pins it (``dvc get`` from the repo's remote)."""
    url, rev = parse_dvc_uri(uri)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        target = tmp / "fetched"
        proc = subprocess.run(["dvc", "get", url, path_in_repo, "--rev", rev, "-o", str(target)],
                              capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        if proc.returncode != 0:
            raise ServiceError(f"dvc get {url} {path_in_repo} --rev {rev} failed: {proc.stderr.strip()[-800:]}")
        if not (target / manifest.MANIFEST_NAME).is_file():
            raise DataError(f"{uri}: {path_in_repo} at {rev} has no {manifest.MANIFEST_NAME}: not an ingest output")
        for child in target.iterdir():
            os.replace(child, tmp / child.name)
        target.rmdir()
    df = manifest.read(out_dir / manifest.MANIFEST_NAME)
    return {"source": "dvc", "uri": uri, "rev": rev, "images": len(df), "output": str(out_dir),
            "per_class": {k: int(v) for k, v in df["label"].value_counts().sort_index().items()}}
