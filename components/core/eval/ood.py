"""How well the out-of-distribution score (:mod:`components.core.model.ood`) works on held-out data: the flag rate
on the internal test split (false alarms) and, per external set, its flag rate and the AUROC of the score for
telling it apart from the test split (the ``ood`` block of metrics.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.core.model.ood import REFERENCE_FILE, OodReference, probs_and_features


def auroc(inside: np.ndarray, outside: np.ndarray) -> float | None:
    """How well the score separates ``outside`` from ``inside`` (0.5: not at all, 1: perfectly)."""
    if not len(inside) or not len(outside):
        return None
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return round(float(roc_auc_score(y, np.r_[inside, outside])), 4)


def _set_summary(ref: OodReference, scores: np.ndarray) -> dict:
    return {"n": len(scores), "flag_rate": round(float(ref.flag(scores).mean()), 4) if len(scores) else None,
            "median_score": round(float(np.median(scores)), 4) if len(scores) else None}


def evaluate_dir(model, model_dir: str | Path, test_x: np.ndarray, external_dir: str | Path | None,
                 external_names: list[str]) -> dict:
    """The ``ood`` block of metrics.json: the flag rate on the internal test split (the false alarms) and,
    per external set, its flag rate and the AUROC of the score for telling it apart from the test split."""
    from components.core.data import shards

    path = Path(model_dir) / REFERENCE_FILE
    if not path.is_file():
        return {"available": False, "note": f"no {REFERENCE_FILE} next to the model (trained before OOD references?)"}
    ref = OodReference.load(path)
    dims = int(ref.means.shape[1])
    test_scores = ref.score(probs_and_features(model, test_x, dims=dims)[1])
    out = {"available": True, **ref.describe(), "test": _set_summary(ref, test_scores), "external": {}}
    for name in external_names:
        d = Path(external_dir) / name if external_dir else None
        if d is None or not ((d / "meta.json").is_file() or (d / "test_x.npy").is_file()):  # shards, or older ones
            continue
        scores = ref.score(probs_and_features(model, shards.load_split(d, "test").x, dims=dims)[1])
        out["external"][name] = {**_set_summary(ref, scores), "auroc_vs_test": auroc(test_scores, scores)}
    return out
