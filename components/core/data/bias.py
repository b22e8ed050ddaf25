"""Source-bias audit: can file metadata alone predict the label?

A classifier that sees only width, height, aspect, file size, format, colour mode and bit depth —
and, for DICOM, the acquisition facts validate puts in the manifest: view position, manufacturer,
modality and pixel spacing — is cross-validated (grouped by patient) against chance. When it wins
by a wide margin, the label is recoverable from how the film was made: a CNN can learn the
hospital, the scanner, the export tool or the patient's posture instead of the disease, and its test
accuracy will not transfer. The view is the classic case: AP films are taken of patients too ill to
stand for a PA film, so "AP" alone predicts pneumonia in many sets.

DICOM columns are used only when the manifest has them with at least one non-empty value; an empty
value is its own category (``unknown``). The report lists the features, the strongest three, and a
table of labels per value of each header column used (``by_header``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.contract.params.validate import BiasAuditConfig

NUMERIC = ["width", "height", "bytes", "channels", "bit_depth"]
CATEGORICAL = ["format", "mode"]
# DICOM header facts (manifest columns written by validate), used when present
HEADER_CATEGORICAL = ["view_position", "manufacturer", "modality"]
MAX_LEVELS = 20  # rarer values of a header column are pooled as "other"


def header_columns(df: pd.DataFrame) -> list[str]:
    """The DICOM header columns of ``df`` that hold at least one value."""
    return [c for c in HEADER_CATEGORICAL if c in df.columns and df[c].fillna("").astype(str).str.strip().ne("").any()]


def _levels(col: pd.Series) -> pd.Series:
    values = col.fillna("").astype(str).str.strip().str.upper().replace("", "unknown")
    keep = set(values.value_counts().index[:MAX_LEVELS])
    return values.where(values.isin(keep), "other")


def _spacing_mm(col: pd.Series) -> pd.Series:
    """``"0.143 x 0.143"`` → 0.143 (mean of row and column spacing); missing or unreadable → NaN."""
    def one(v) -> float:
        try:
            parts = [float(x) for x in str(v).lower().split("x")]
        except ValueError:
            return np.nan
        return float(np.mean(parts)) if parts else np.nan

    return col.fillna("").map(one).astype(float)


def metadata_features(df: pd.DataFrame) -> pd.DataFrame:
    x = df[NUMERIC].astype(float).copy()
    x["aspect"] = x["width"] / x["height"].replace(0, np.nan)
    x["log_bytes_per_pixel"] = np.log1p(x["bytes"]) - np.log1p(x["width"] * x["height"])
    if "pixel_spacing" in df.columns and df["pixel_spacing"].fillna("").astype(str).str.strip().ne("").any():
        x["pixel_spacing_mm"] = _spacing_mm(df["pixel_spacing"])
    x = x.fillna(0.0)
    cats = df[CATEGORICAL].astype(str)
    for c in header_columns(df):
        cats[c] = _levels(df[c])
    dummies = pd.get_dummies(cats, prefix=list(cats.columns), dtype=float)
    return pd.concat([x.reset_index(drop=True), dummies.reset_index(drop=True)], axis=1)


def by_header(df: pd.DataFrame) -> dict:
    """Images per label for each value of each DICOM header column used."""
    out = {}
    for c in header_columns(df):
        table = pd.crosstab(_levels(df[c]), df["label"].astype(str))
        out[c] = {str(v): {str(k): int(n) for k, n in row.items() if n} for v, row in table.iterrows()}
    return out


def patient_sample(df: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most about ``max_rows`` rows of whole patients, drawn at random (``seed``); ``df`` itself when smaller."""
    if len(df) <= max_rows:
        return df
    patients = df["patient_id"].astype(str)
    order = np.random.default_rng(seed).permutation(patients.unique())
    sizes = patients.value_counts().reindex(order).to_numpy()
    keep = set(order[: max(1, int(np.searchsorted(np.cumsum(sizes), max_rows, side="right")))])
    return df[patients.isin(keep).to_numpy()]


def source_bias_audit(df: pd.DataFrame, cfg: BiasAuditConfig) -> dict:
    """Cross-validated balanced accuracy of a metadata-only classifier vs chance (1 / classes), on at most
    ``cfg.max_rows`` images (whole patients at random beyond that; the report says how many)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    images = len(df)
    df = patient_sample(df, cfg.max_rows)

    y = df["label"].astype(str).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        return {"enabled": True, "skipped": "needs at least 2 classes with 2 images each"}
    groups = df["patient_id"].astype(str).to_numpy()
    folds = int(min(cfg.folds, counts.min(), len(np.unique(groups))))
    if folds < 2:
        return {"enabled": True, "skipped": "too few patients per class to cross-validate"}
    x = metadata_features(df)
    clf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=0, n_jobs=1,
                                 class_weight="balanced")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    pred = cross_val_predict(clf, x, y, groups=groups, cv=cv)
    balanced = float(balanced_accuracy_score(y, pred))
    chance = 1.0 / len(classes)
    majority = float(counts.max() / counts.sum())
    clf.fit(x, y)
    top = sorted(zip(x.columns, clf.feature_importances_, strict=True), key=lambda t: -t[1])[:3]
    margin = balanced - chance
    flagged = margin > cfg.warn_margin
    report = {
        "enabled": True,
        "images": images,
        "images_used": len(df),
        "features": list(x.columns),
        "folds": folds,
        "balanced_accuracy": round(balanced, 4),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "chance_balanced_accuracy": round(chance, 4),
        "majority_accuracy": round(majority, 4),
        "margin": round(margin, 4),
        "warn_margin": cfg.warn_margin,
        "top_features": [{"feature": f, "importance": round(float(i), 4)} for f, i in top],
        "flagged": bool(flagged),
    }
    if header_columns(df):
        report["by_header"] = by_header(df)
    if flagged:
        report["warning"] = (
            f"File metadata alone predicts the label with balanced accuracy {balanced:.2f} "
            f"(chance {chance:.2f}); strongest cues: {', '.join(f for f, _ in top)}. The classes differ in "
            "how their files were made (source, scanner, export), so a model can score well by learning the "
            "source instead of the disease. Treat test accuracy as an upper bound and check external data."
        )
        if any(f.startswith("view_position_") for f, _ in top):
            report["warning"] += (
                " The view position is among the strongest cues: AP films are taken of patients too ill to "
                "stand for a PA film, so a model can read the posture (markers, scapulae, magnified heart) "
                "instead of the disease. Compare results per view.")
    else:
        report["note"] = "File metadata does not predict the label much better than chance."
    return report
