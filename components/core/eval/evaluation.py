"""Evaluation shared by evaluate and the gate: predictions, metrics, per-source metrics, patient-level
CIs and operating points for a labelled set, the calibration report, the external test sets, and the
shortcut stress tests over all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.core.contract.errors import DataError
from components.core.contract.params.evaluate import applicable_external
from components.core.data import shards
from components.core.model import models
from components.core.stats import clinical
from components.core.stats import metrics as M


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities for ``x`` (an array, memory map or shard-backed array), a block at a time."""
    if len(x) == 0:
        return np.zeros((0, int(model.output.shape[-1])), np.float32)
    return np.asarray(shards.predict(model, x, batch_size), dtype=np.float64)


def per_source(rows: pd.DataFrame, y: np.ndarray, proba: np.ndarray, classes: list[str], bins: int) -> dict:
    if "source" not in rows.columns:
        return {}
    sources = rows["source"].fillna("").astype(str).to_numpy()
    if len(set(sources) - {""}) < 2:
        return {}
    out = {}
    patients = rows["patient_id"].astype(str).to_numpy() if "patient_id" in rows.columns else None
    for s in sorted(set(sources)):
        sel = sources == s
        out[s or "unknown"] = M.classification_metrics(y[sel], proba[sel], classes, bins)
        if patients is not None:
            add_patient_counts(out[s or "unknown"], y[sel], patients[sel], classes)
    return out


def image_refs(rows) -> list[str]:
    """A reference per image for reports that leave the data folder: ``img:`` + the first 12 hex digits of its
    sha256 (of its path when the manifest has none). File names can carry patient ids (Kermany's
    ``person123_…``), so reports, MLflow and the model card name images this way;
    ``grep <ref without img:> data/validated/manifest.csv`` finds the file."""
    import hashlib

    sha = rows["sha256"].astype(str) if "sha256" in rows.columns else None
    return [f"img:{sha.iloc[i][:12]}" if sha is not None and sha.iloc[i] else
            "img:" + hashlib.sha256(str(rows["path"].iloc[i]).encode()).hexdigest()[:12] for i in range(len(rows))]


def top_losses(test: shards.Split, y: np.ndarray, proba: np.ndarray, classes: list[str], k: int):
    loss = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1))
    order = np.argsort(-loss)[:k]
    refs = image_refs(test.rows)
    items = [{"image": refs[i], "label": classes[y[i]], "predicted": classes[int(proba[i].argmax())],
              "p_label": round(float(proba[i, y[i]]), 4), "loss": round(float(loss[i]), 4)} for i in order]
    return order, items


def evaluate_arrays(model, test: shards.Split, classes: list[str], params,
                    thresholds: dict | None = None) -> tuple[np.ndarray, dict]:
    """Metrics, per-source metrics, patient-level CIs and operating points for one labelled set."""
    cfg = params.evaluate
    proba = predict(model, test.x)
    result = M.classification_metrics(test.y, proba, classes, cfg.ece_bins)
    result["per_source"] = per_source(test.rows, test.y, proba, classes, cfg.ece_bins)
    patients = test.rows["patient_id"].astype(str).to_numpy()
    add_patient_counts(result, test.y, patients, classes)
    result["ci"] = clinical.confidence_intervals(test.y, proba, patients, classes, cfg.bootstrap.resamples,
                                                 cfg.bootstrap.seed, cfg.bootstrap.level, cfg.ece_bins)
    if thresholds:
        result["operating_points"] = clinical.apply_thresholds(test.y, proba, classes, thresholds, patients,
                                                               cfg.bootstrap.level)
    return proba, result


def add_patient_counts(result: dict, y: np.ndarray, patients: np.ndarray, classes: list[str]) -> None:
    """Every per-class number carries the patients it rests on: ``positive_patients`` (with the class) and
    ``negative_patients`` (without it) next to the image ``support``."""
    result["patients"] = len(set(patients))
    for i, c in enumerate(classes):
        result["per_class"][c]["positive_patients"] = len(set(patients[y == i]))
        result["per_class"][c]["negative_patients"] = len(set(patients[y != i]))


def calibration_report(model, test: shards.Split, proba: np.ndarray, bins: int, train_summary: dict) -> dict:
    """ECE on the test split without and with the model's temperature. The logits take a second pass:
    recovering them from float32 probabilities loses the saturated ones."""
    t = models.temperature(model)
    logits = np.asarray(shards.predict(models.logits_model(model), test.x), dtype=np.float64)
    return {**(train_summary.get("calibration") or {}), "temperature": round(t, 6),
            "test_ece_before": round(M.expected_calibration_error(test.y, clinical.calibrated(logits, 1.0), bins), 5),
            "test_ece_after": round(M.expected_calibration_error(test.y, proba, bins), 5)}


def load_external(model, external_dir: Path | None, classes: list[str], params) -> dict[str, tuple]:
    """Every prepared external set (``cxr external``) as ``{name: (Split, ShardMeta)}``, in params order."""
    out: dict[str, tuple] = {}
    if external_dir is None or not external_dir.is_dir():
        return out
    for ext in applicable_external(params):  # a synthetic set only with the demo's data (or when asked for)
        d = external_dir / ext.name
        if not (d / "meta.json").is_file():
            raise DataError(f"external set {ext.name!r} is not prepared under {external_dir}: run `cxr external`")
        meta = shards.read_meta(d)
        if meta.classes != classes or meta.image_size != models.model_image_size(model):
            raise DataError(f"{d} was prepared for {meta.image_size}px {meta.classes}: re-run `cxr external`")
        out[ext.name] = (shards.load_split(d, "test"), meta)
    return out


def external_sets(model, external: Path | dict | None, classes: list[str], params, thresholds: dict) -> dict:
    """Evaluate every prepared external set exactly like the internal test split. ``external``: the folder
    of ``cxr external``, or what :func:`load_external` returned for it."""
    loaded = external if isinstance(external, dict) else load_external(model, external, classes, params)
    return {name: evaluate_arrays(model, split, classes, params, thresholds)[1] for name, (split, _) in loaded.items()}


def shortcut_tests(model, test: shards.Split, resize: str, external: dict, classes: list[str], params,
                   train_rows: pd.DataFrame | None = None) -> dict:
    """The shortcut stress tests (:mod:`components.core.eval.shortcut`) on the test split and every external set:
    the ``shortcut`` block of metrics.json. ``train_rows``: the training manifest (sources vs labels)."""
    from components.core.eval import shortcut

    sets = {"test": shortcut.EvalSet(test.x, test.y, test.rows, resize)}
    for name, (split, meta) in external.items():
        sets[name] = shortcut.EvalSet(split.x, split.y, split.rows, meta.resize)
    return shortcut.stress_tests(model, sets, classes, params.evaluate.shortcut, train_rows)
