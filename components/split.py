"""Split: train/val/test manifests, stratified by label and grouped by patient.

A patient's images always land in one split, so test metrics measure patients the model never
saw. With ``split.use_official_test`` a source's own test split (Kaggle's) is kept as the test
set; patients that also appear in its train part are removed from training and reported.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.core.contract.errors import DataError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Port, StepSpec

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="split",
    help="split the validated manifest into train/val/test by patient, stratified by label",
    params=("data.classes", "split"),
    inputs=(Port("manifest", "data/validated/manifest.csv", "the validated manifest", kind="file"),),
    outputs=(
        Port("out", "data/splits", "output folder: train.csv, val.csv, test.csv"),
        Port("reports", "reports/split", "summary.json", dvc=(("summary.json", "metric"),)),
    ),
    resources=("500m", "1", "1G", "2G"),
)


def carve(df: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about ``fraction`` of ``df`` by patient, stratified by label: (rest, carved)."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = df["patient_id"].to_numpy()
    n_groups = len(np.unique(groups))
    n_splits = max(2, round(1 / fraction))
    if n_groups < n_splits:
        raise DataError(
            f"cannot split off {what} ({fraction:.0%}): only {n_groups} patients; need at least {n_splits}. "
            "Add data or raise split.val_fraction/split.test_fraction."
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        _, idx = next(cv.split(df, df["label"], groups))
    mask = np.zeros(len(df), bool)
    mask[idx] = True
    return df[~mask], df[mask]


def leakage(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """How many patients and sha256 values appear in more than one split (must be 0)."""
    import pandas as pd

    out = {}
    for col in ("patient_id", "sha256"):
        if all(col in s.columns for s in splits.values()):
            seen = pd.concat([s[[col]].drop_duplicates().assign(_s=k) for k, s in splits.items()])
            out[col] = int((seen.groupby(col)["_s"].nunique() > 1).sum())
    return out


@under_spec(SPEC)
def run(params, manifest: str | Path, out: str | Path, reports: str | Path) -> dict:
    """Split ``manifest`` into ``out/{train,val,test}.csv``; ``reports/summary.json`` says how."""
    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.data import manifest as manifests

    manifest_path, out_dir, report_dir = manifest, out, reports
    cfg = params.split
    df = manifests.read(manifest_path, required=("path", "label", "patient_id"))
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    if df.empty:
        raise DataError(f"{manifest_path}: no usable images to split")
    df = df.sort_values("path").reset_index(drop=True)
    notes: list[str] = []
    official = "official_split" in df.columns and (df["official_split"] == "test").any()
    if cfg.use_official_test and official:
        test = df[df["official_split"] == "test"]
        rest = df[df["official_split"] != "test"]
        overlap = rest["patient_id"].isin(set(test["patient_id"]))
        if overlap.any():
            notes.append(f"removed {int(overlap.sum())} training images of {rest[overlap]['patient_id'].nunique()} "
                         "patients who are also in the official test split")
            rest = rest[~overlap]
        notes.append(f"kept the source's official test split ({len(test)} images)")
        rest, val = carve(rest, cfg.val_fraction, cfg.seed, "the validation split")
    else:
        rest, test = carve(df, cfg.test_fraction, cfg.seed, "the test split")
        rest, val = carve(rest, cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed + 1, "the validation split")
    splits = {"train": rest, "val": val, "test": test}
    leaks = leakage(splits)
    if any(leaks.values()):
        raise DataError(f"split leakage detected {leaks}: this is a bug, please report it")
    classes = list(params.data.classes)
    per_split = {}
    for name, s in splits.items():
        counts = s["label"].value_counts()
        per_split[name] = {"images": len(s), "patients": int(s["patient_id"].nunique()),
                           "per_class": {c: int(counts.get(c, 0)) for c in classes}}
        missing = [c for c in classes if counts.get(c, 0) == 0]
        if missing:
            notes.append(f"{name} has no images of {missing}")
    if "patient_id_origin" in df.columns and (df["patient_id_origin"] == "file").any():
        notes.append(f"{int((df['patient_id_origin'] == 'file').sum())} images had no patient id and were "
                     "treated as one patient each")
    with atomic_path(out_dir, directory=True) as tmp:
        for name, s in splits.items():
            manifests.write(s.assign(split=name), tmp / f"{name}.csv")
    summary = {"splits": per_split, "leakage": leaks, "seed": cfg.seed, "notes": notes,
               "official_test_used": bool(cfg.use_official_test and official)}
    write_json(Path(report_dir) / "summary.json", summary)
    log.info("split by patient: %s", {k: f"{v['images']} images / {v['patients']} patients"
                                      for k, v in per_split.items()})
    for note in notes:
        log.info(note)
    return summary
