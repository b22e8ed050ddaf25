"""Classification metrics from labels and predicted probabilities (numpy + scikit-learn only).

Per class: precision, recall (sensitivity), specificity, F1, support and one-vs-rest ROC-AUC; plus
accuracy, macro F1, macro ROC-AUC, the confusion matrix with its label order, and the expected
calibration error. A class absent from the labels gets ``None`` where a number would be undefined.
"""

from __future__ import annotations

import numpy as np


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class confidence: Σ_b |acc_b − conf_b| · n_b / n over equal-width bins."""
    if len(y_true) == 0:
        return float("nan")
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += abs(correct[m].mean() - conf[m].mean()) * m.sum() / len(y_true)
    return float(ece)


def reliability_bins(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    return [{"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "count": int((idx == b).sum()),
             "confidence": _r(conf[idx == b].mean()) if (idx == b).any() else None,
             "accuracy": _r(correct[idx == b].mean()) if (idx == b).any() else None} for b in range(bins)]


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str], ece_bins: int = 10) -> dict:
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n, k = len(y_true), len(classes)
    y_pred = proba.argmax(axis=1) if n else np.zeros(0, np.int64)
    cm = confusion(y_true, y_pred, k)
    per_class, f1s, aucs, notes = {}, [], [], []
    for i, c in enumerate(classes):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = n - tp - fn - fp
        support = int(cm[i].sum())
        precision = tp / (tp + fp) if tp + fp else (0.0 if support else None)
        recall = tp / support if support else None
        specificity = tn / (tn + fp) if tn + fp else None
        f1 = (2 * precision * recall / (precision + recall) if precision and recall else 0.0) \
            if recall is not None and precision is not None else None
        positives = y_true == i
        auc = float(roc_auc_score(positives, proba[:, i])) if 0 < positives.sum() < n else None
        if support == 0:
            notes.append(f"class {c} has no test images: its recall, F1 and ROC-AUC are undefined")
        per_class[c] = {"precision": _r(precision), "recall": _r(recall), "specificity": _r(specificity),
                        "f1": _r(f1), "support": support, "roc_auc": _r(auc)}
        if f1 is not None:
            f1s.append(f1)
        if auc is not None:
            aucs.append(auc)
    return {
        "n": int(n),
        "accuracy": _r(np.trace(cm) / n if n else None),
        "macro_f1": _r(np.mean(f1s) if f1s else None),
        "macro_roc_auc": _r(np.mean(aucs) if aucs else None),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(classes), "matrix": cm.tolist()},
        "ece": _r(expected_calibration_error(y_true, proba, ece_bins)) if n else None,
        "notes": notes,
    }


def classification_report_text(metrics: dict) -> str:
    """A fixed-width table like scikit-learn's ``classification_report`` (seed 1's table)."""
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1-score':>9} {'specif.':>9} {'roc-auc':>9} {'support':>9}"]

    def fmt(x):
        return f"{x:9.3f}" if isinstance(x, float) else f"{'n/a':>9}"

    for c, m in metrics["per_class"].items():
        lines.append(f"{c:>12} {fmt(m['precision'])} {fmt(m['recall'])} {fmt(m['f1'])} {fmt(m['specificity'])} "
                     f"{fmt(m['roc_auc'])} {m['support']:9d}")
    lines.append("")
    lines.append(f"{'accuracy':>12} {'':>9} {'':>9} {fmt(metrics['accuracy'])} {'':>9} {'':>9} {metrics['n']:9d}")
    lines.append(f"{'macro avg':>12} {'':>9} {'':>9} {fmt(metrics['macro_f1'])} {'':>9} "
                 f"{fmt(metrics['macro_roc_auc'])} {metrics['n']:9d}")
    lines.append(f"{'ECE':>12} {fmt(metrics['ece'])}")
    return "\n".join(lines) + "\n"
