"""Evaluate the best checkpoint on the test split: honest, per-class, per-source numbers.

Writes ``metrics.json`` (accuracy, macro F1, per-class precision/recall/specificity/F1/support/
ROC-AUC, confusion matrix with its label order, ECE, per-source metrics), and under the report
folder: ``predictions.csv`` and ``roc.csv`` (DVC plots), ``classification_report.txt``, and
figures (confusion raw/normalised, ROC, PR, reliability, training curves, top-losses gallery,
Grad-CAM overlays). Everything is also logged to the training run in MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.core import clinical, models, plots, shards, tracking
from components.core import metrics as M
from components.core.config import Params
from components.core.errors import DataError
from components.core.fsutil import atomic_path, read_json, write_json, write_text
from components.core.gradcam import gradcam, overlay


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((0, int(model.output.shape[-1])), np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def per_source(rows: pd.DataFrame, y: np.ndarray, proba: np.ndarray, classes: list[str], bins: int) -> dict:
    if "source" not in rows.columns:
        return {}
    sources = rows["source"].fillna("").astype(str).to_numpy()
    if len(set(sources) - {""}) < 2:
        return {}
    return {s or "unknown": M.classification_metrics(y[sources == s], proba[sources == s], classes, bins)
            for s in sorted(set(sources))}


def top_losses(test: shards.Split, y: np.ndarray, proba: np.ndarray, classes: list[str], k: int):
    loss = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1))
    order = np.argsort(-loss)[:k]
    items = [{"path": test.rows["path"].iloc[i], "label": classes[y[i]], "predicted": classes[int(proba[i].argmax())],
              "p_label": round(float(proba[i, y[i]]), 4), "loss": round(float(loss[i]), 4)} for i in order]
    return order, items


def evaluate_arrays(model, test: shards.Split, classes: list[str], params: Params,
                    thresholds: dict | None = None) -> tuple[np.ndarray, dict]:
    """Metrics, per-source metrics, patient-level CIs and operating points for one labelled set."""
    cfg = params.evaluate
    proba = predict(model, test.x)
    result = M.classification_metrics(test.y, proba, classes, cfg.ece_bins)
    result["per_source"] = per_source(test.rows, test.y, proba, classes, cfg.ece_bins)
    if cfg.bootstrap.resamples:
        result["ci"] = clinical.bootstrap_ci(test.y, proba, test.rows["patient_id"].to_numpy(), classes,
                                             cfg.bootstrap.resamples, cfg.bootstrap.seed, cfg.bootstrap.level)
    if thresholds:
        result["operating_points"] = clinical.apply_thresholds(test.y, proba, classes, thresholds)
    return proba, result


def calibration_report(model, test: shards.Split, proba: np.ndarray, bins: int, train_summary: dict) -> dict:
    """ECE on the test split without and with the model's temperature. The logits take a second pass:
    recovering them from float32 probabilities loses the saturated ones."""
    t = models.temperature(model)
    logits = np.asarray(models.logits_model(model).predict(test.x, batch_size=64, verbose=0), dtype=np.float64)
    return {**(train_summary.get("calibration") or {}), "temperature": round(t, 6),
            "test_ece_before": round(M.expected_calibration_error(test.y, clinical.calibrated(logits, 1.0), bins), 5),
            "test_ece_after": round(M.expected_calibration_error(test.y, proba, bins), 5)}


def external_sets(model, external_dir: Path | None, classes: list[str], params: Params, thresholds: dict) -> dict:
    """Evaluate every prepared external set (``cxr external``) exactly like the internal test split."""
    out = {}
    if external_dir is None or not external_dir.is_dir():
        return out
    for ext in params.evaluate.external:
        d = external_dir / ext.name
        if not (d / "meta.json").is_file():
            raise DataError(f"external set {ext.name!r} is not prepared under {external_dir}: run `cxr external`")
        meta = shards.read_meta(d)
        if meta.classes != classes or meta.image_size != models.model_image_size(model):
            raise DataError(f"{d} was prepared for {meta.image_size}px {meta.classes}: re-run `cxr external`")
        _, out[ext.name] = evaluate_arrays(model, shards.load_split(d, "test"), classes, params, thresholds)
    return out


def run(params: Params, model_dir: str | Path, shards_dir: str | Path, report_dir: str | Path,
        metrics_path: str | Path = "reports/metrics.json", track: bool = True,
        external_dir: str | Path | None = None) -> dict:
    model_dir, report_dir = Path(model_dir), Path(report_dir)
    meta = shards.read_meta(shards_dir)
    classes = meta.classes
    model = models.load_model(model_dir / "model.keras")
    if models.model_image_size(model) != meta.image_size:
        raise DataError(f"the model takes {models.model_image_size(model)}px images but {shards_dir} holds "
                        f"{meta.image_size}px shards: re-run `cxr preprocess` or retrain")
    test = shards.load_split(shards_dir, "test")
    if len(test.y) == 0:
        raise DataError("the test split is empty: nothing to evaluate")
    train_summary = read_json(model_dir / "train_summary.json") if (model_dir / "train_summary.json").is_file() else {}
    # operating points are chosen on the validation split only, then reported on test and external sets
    val = shards.load_split(shards_dir, "val")
    thresholds = clinical.choose_thresholds(val.y, predict(model, val.x), classes, params.evaluate.target_sensitivity)
    proba, result = evaluate_arrays(model, test, classes, params, thresholds)
    result["calibration"] = calibration_report(model, test, proba, params.evaluate.ece_bins, train_summary)
    result["thresholds"] = {"chosen_on": "val", "val": thresholds}
    result["external"] = external_sets(model, Path(external_dir) if external_dir else None, classes, params,
                                       thresholds)
    result.update({"split": "test", "classes": classes, "model": str(model_dir / "model.keras"),
                   "best_epoch": train_summary.get("best_epoch"), "run_id": train_summary.get("run_id")})
    y = test.y
    with atomic_path(report_dir, directory=True) as tmp:
        figs = tmp / "plots"
        figs.mkdir()
        pred = test.rows[["path"]].copy()
        pred["actual"] = [classes[i] for i in y]
        pred["predicted"] = [classes[i] for i in proba.argmax(axis=1)]
        for i, c in enumerate(classes):
            pred[f"prob_{c}"] = proba[:, i].round(5)
        pred.to_csv(tmp / "predictions.csv", index=False)
        cm = np.array(result["confusion_matrix"]["matrix"])
        plots.confusion_matrix(cm, classes, figs / "confusion.png")
        plots.confusion_matrix(cm, classes, figs / "confusion_normalized.png", normalise=True)
        roc = plots.curves(y, proba, classes, figs / "roc.png", figs / "pr.png")
        pd.DataFrame(roc, columns=["class", "fpr", "tpr"]).to_csv(tmp / "roc.csv", index=False)
        bins = M.reliability_bins(y, proba, params.evaluate.ece_bins)
        plots.reliability(bins, result["ece"], figs / "reliability.png")
        if (model_dir / "history.csv").is_file():
            plots.training_curves(pd.read_csv(model_dir / "history.csv").to_dict("records"),
                                  figs / "training_curves.png")
        write_text(tmp / "classification_report.txt", M.classification_report_text(result))
        order, losses = top_losses(test, y, proba, classes, params.evaluate.top_losses)
        if len(order):
            plots.gallery([test.x[i, ..., 0] for i in order],
                          [f"{r['label']} → {r['predicted']} (p={r['p_label']:.2f})" for r in losses],
                          figs / "top_losses.png", "top losses: label → predicted (p of the label)")
        write_json(tmp / "top_losses.json", losses)
        result["top_losses"] = losses[:10]
        plots.compare_sets({"internal test": result, **result["external"]}, figs / "internal_vs_external.png")
        picks = [i for c in range(len(classes)) for i in np.flatnonzero(y == c)[: params.evaluate.gradcam_per_class]]
        if picks:
            heat = gradcam(model, test.x[picks])
            plots.gallery([overlay(test.x[i, ..., 0], h) for i, h in zip(picks, heat, strict=True)],
                          [f"{classes[y[i]]} → {classes[int(proba[i].argmax())]}" for i in picks],
                          figs / "gradcam.png", "Grad-CAM (predicted class)")
    write_json(metrics_path, result)
    if track and result["run_id"]:
        _log(params, result, report_dir, metrics_path)
    return {k: result[k] for k in ("accuracy", "macro_f1", "macro_roc_auc", "ece", "n", "notes")} | {
        "recall": {c: m["recall"] for c, m in result["per_class"].items()},
        "temperature": result["calibration"]["temperature"],
        "external": {k: {"n": v["n"], "accuracy": v["accuracy"], "macro_roc_auc": v["macro_roc_auc"]}
                     for k, v in result["external"].items()}}


def _log(params: Params, result: dict, report_dir: Path, metrics_path: str | Path) -> None:
    """Add test metrics and report artifacts to the training run."""
    import mlflow

    tracking.setup(params)
    flat = {"test_accuracy": result["accuracy"], "test_macro_f1": result["macro_f1"],
            "test_macro_roc_auc": result["macro_roc_auc"], "test_ece": result["ece"],
            "test_ece_before_calibration": result["calibration"]["test_ece_before"]}
    for name, ext in result["external"].items():
        flat.update({f"external_{name}_accuracy": ext["accuracy"], f"external_{name}_macro_f1": ext["macro_f1"],
                     f"external_{name}_macro_roc_auc": ext["macro_roc_auc"]})
    for c, m in result["per_class"].items():
        for k in ("precision", "recall", "specificity", "f1", "roc_auc"):
            flat[f"test_{k}_{c}"] = m[k]
    with mlflow.start_run(run_id=result["run_id"]):
        mlflow.log_metrics({k: v for k, v in flat.items() if v is not None})
        mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")
        mlflow.log_artifact(str(metrics_path), artifact_path="evaluation")
        mlflow.set_tag("operating_points", json.dumps(
            {c: v["threshold"] for c, v in result["thresholds"]["val"].items()}))
