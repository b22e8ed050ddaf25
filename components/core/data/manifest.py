"""The manifest: one row per image, the table every step after ingest reads and writes.

Paths are relative to the image root (``data/raw``), so a manifest stays valid when the root
moves (a DVC checkout, a KFP artifact folder). Stored as CSV: small, diffable, readable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from components.core.contract.errors import DataError
from components.core.contract.fsutil import atomic_path

# Column order of a fully validated manifest; earlier steps fill a prefix of it.
# After ``reason``: how the pixels were read (EXIF orientation, windowing rule) and, for DICOM, the
# header facts and the de-identification audit (names and counts, never values). The raw DICOM
# PatientID (``dicom_patient_id`` in ImageFacts) is not a manifest column: the digest is; a step that
# wants the raw id (e.g. to fill ``patient_id`` in the data folder's manifest) takes it explicitly.
DICOM_COLUMNS = [
    "modality", "view_position", "manufacturer", "study_uid", "series_uid", "pixel_spacing", "transfer_syntax",
    "dicom_patient_digest", "phi_count", "phi_attributes", "burned_in_annotation", "private_tags",
]
COLUMNS = [
    "path", "label", "patient_id", "patient_id_origin", "source", "license", "official_split", "split",
    "width", "height", "channels", "mode", "format", "bit_depth", "bytes", "sha256", "status", "reason",
    "orientation", "window", *DICOM_COLUMNS,
]
RAW_COLUMNS = ["path", "label", "patient_id", "patient_id_origin", "source", "official_split"]
STRING_COLUMNS = {"path", "label", "patient_id", "patient_id_origin", "source", "license", "official_split", "split",
                  "mode", "format", "sha256", "status", "reason", "window", "modality", "view_position",
                  "manufacturer", "study_uid", "series_uid", "pixel_spacing", "transfer_syntax", "dicom_patient_id",
                  "dicom_patient_digest", "phi_attributes", "burned_in_annotation"}
INT_COLUMNS = {"width", "height", "channels", "bit_depth", "bytes", "orientation", "phi_count", "private_tags"}
MANIFEST_NAME = "manifest.csv"


def write(df: pd.DataFrame, path: str | Path, sort: bool = True) -> Path:
    """Write ``df`` atomically with the known columns first, sorted by path unless ``sort=False``
    (shard indexes must keep the row order of their arrays)."""
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    out = df[cols].sort_values("path", kind="stable") if sort else df[cols]
    out = out.reset_index(drop=True)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
    return Path(path)


def read(path: str | Path, required: tuple[str, ...] = ("path", "label"),
         columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a manifest; a missing file or column is a :class:`DataError` naming it. ``columns``: read only
    these (they are required), for steps that need a few columns of a large manifest."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the previous step first)")
    header = pd.read_csv(path, nrows=0).columns
    if columns is not None:
        required = tuple(dict.fromkeys((*required, *columns)))
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: manifest lacks column(s) {missing}; it has {list(header)}")
        header = [c for c in header if c in columns]
    dtypes = {c: "string" for c in header if c in STRING_COLUMNS}
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, usecols=list(header))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV manifest: {err}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {missing}; it has {list(df.columns)}")
    for c in INT_COLUMNS & set(df.columns):
        df[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype("int64")
    for c in dtypes:
        df[c] = df[c].astype(object)
    return df


def fingerprint(paths: list[str | Path]) -> str:
    """A short content hash of manifest files: the data version logged with every model."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]
