"""Source-bias audit: can file metadata alone predict the label?

A classifier that sees only width, height, aspect, file size, format, colour mode and bit depth
is cross-validated (grouped by patient) against the majority baseline. When it wins by a wide
margin, the label is recoverable from how the file was made: a CNN can learn the hospital, the
scanner or the export tool instead of the disease, and its test accuracy will not transfer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.config import BiasAuditConfig

NUMERIC = ["width", "height", "bytes", "channels", "bit_depth"]
CATEGORICAL = ["format", "mode"]


def metadata_features(df: pd.DataFrame) -> pd.DataFrame:
    x = df[NUMERIC].astype(float).copy()
    x["aspect"] = x["width"] / x["height"].replace(0, np.nan)
    x["log_bytes_per_pixel"] = np.log1p(x["bytes"]) - np.log1p(x["width"] * x["height"])
    x = x.fillna(0.0)
    dummies = pd.get_dummies(df[CATEGORICAL].astype(str), prefix=CATEGORICAL, dtype=float)
    return pd.concat([x.reset_index(drop=True), dummies.reset_index(drop=True)], axis=1)


def source_bias_audit(df: pd.DataFrame, cfg: BiasAuditConfig) -> dict:
    """Cross-validated balanced accuracy of a metadata-only classifier vs chance (1 / classes)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

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
    if flagged:
        report["warning"] = (
            f"File metadata alone predicts the label with balanced accuracy {balanced:.2f} "
            f"(chance {chance:.2f}); strongest cues: {', '.join(f for f, _ in top)}. The classes differ in "
            "how their files were made (source, scanner, export), so a model can score well by learning the "
            "source instead of the disease. Treat test accuracy as an upper bound and check external data."
        )
    else:
        report["note"] = "File metadata does not predict the label much better than chance."
    return report
