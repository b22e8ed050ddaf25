"""Evaluate the best checkpoint on the test split: honest, per-class, per-source numbers.

Writes ``metrics.json`` (accuracy, macro F1, per-class precision/recall/specificity/F1/support/
ROC-AUC, confusion matrix with its label order, ECE, per-source metrics, CIs, operating points,
external sets), and under the report folder: ``predictions.csv`` and ``roc.csv`` (DVC plots),
``classification_report.txt``, and figures (confusion raw/normalised, ROC, PR, reliability,
training curves, top-losses gallery, Grad-CAM overlays per class, correct next to wrong, with the central
field outlined). The shortcut stress tests (:mod:`components.core.eval.shortcut`: central field blanked,
border-only probe, Grad-CAM outside the central field, source predictability) run on the test split and every
external set and land in the ``shortcut`` block of ``metrics.json`` (``shortcut_risk`` blocks the gate
unless a written acceptance is given). Everything is also logged to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from components.core.contract.errors import DataError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="evaluate",
    help="evaluate the best checkpoint on the test split: metrics, plots, top losses, Grad-CAM",
    params=("data.source", "evaluate", "mlflow"),
    inputs=(
        Port("model_dir", "models", "folder with model.keras (+ history, train summary)"),
        Port("shards", "data/shards", "preprocessed shards (the test and val splits)"),
        Port("external", "data/external", "prepared external sets (`cxr external`)", optional=True),
    ),
    outputs=(
        Port("out", "reports/eval", "report folder: predictions, plots, galleries"),
        Port("metrics", "reports/metrics.json", "the test metrics (the gate reads them)", kind="file",
             dvc=((".", "metric"),)),
    ),
    options=(Option("track", bool, True, "do not log to MLflow", flag="--no-mlflow"),),
    plots=(
        {"confusion": {"template": "confusion", "x": "predicted", "y": {"reports/eval/predictions.csv": "actual"}}},
        {"roc": {"template": "simple", "x": "fpr", "y": {"reports/eval/roc.csv": "tpr"}}},
        "reports/eval/plots/confusion_normalized.png",
        "reports/eval/plots/roc.png",
        "reports/eval/plots/reliability.png",
        "reports/eval/plots/training_curves.png",
        "reports/eval/plots/internal_vs_external.png",
    ),
)


@under_spec(SPEC)
def run(params, model_dir: str | Path, shards: str | Path, out: str | Path,
        metrics: str | Path = "reports/metrics.json", external: str | Path | None = None, track: bool = True) -> dict:
    """Evaluate ``model_dir/model.keras`` on the test split of ``shards`` (and the external sets)."""
    import pandas as pd

    from components.core.contract.fsutil import atomic_path, read_json, write_json, write_text
    from components.core.contract.params.evaluate import applicable_external
    from components.core.data import manifest
    from components.core.data import shards as shard_io
    from components.core.eval import ood
    from components.core.eval.evaluation import (
        calibration_report,
        evaluate_arrays,
        external_sets,
        image_refs,
        load_external,
        predict,
        shortcut_tests,
        top_losses,
    )
    from components.core.model import models
    from components.core.stats import clinical, plots
    from components.core.stats import metrics as M

    model_dir, report_dir, shards_dir, metrics_path = Path(model_dir), Path(out), Path(shards), Path(metrics)
    external_dir = external
    meta = shard_io.read_meta(shards_dir)
    classes = meta.classes
    model = models.load_model(model_dir / "model.keras")
    if models.model_image_size(model) != meta.image_size:
        raise DataError(f"the model takes {models.model_image_size(model)}px images but {shards_dir} holds "
                        f"{meta.image_size}px shards: re-run `cxr preprocess` or retrain")
    test = shard_io.load_split(shards_dir, "test")
    if len(test.y) == 0:
        raise DataError("the test split is empty: nothing to evaluate")
    train_summary = read_json(model_dir / "train_summary.json") if (model_dir / "train_summary.json").is_file() else {}
    # operating points are chosen on the validation split only, then reported on test and external sets
    val = shard_io.load_split(shards_dir, "val")
    thresholds = clinical.choose_thresholds(val.y, predict(model, val.x), classes, params.evaluate.target_sensitivity,
                                            val.rows["patient_id"].astype(str).to_numpy(),
                                            params.evaluate.bootstrap.level)
    proba, result = evaluate_arrays(model, test, classes, params, thresholds)
    result["calibration"] = calibration_report(model, test, proba, params.evaluate.ece_bins, train_summary)
    result["thresholds"] = {"chosen_on": "val", "val": thresholds}
    loaded = load_external(model, Path(external_dir) if external_dir else None, classes, params)
    result["external"] = external_sets(model, loaded, classes, params, thresholds)
    train_csv = shards_dir / "train.csv"
    train_rows = manifest.read(train_csv) if train_csv.is_file() else None
    result["shortcut"] = shortcut_tests(model, test, meta.resize, loaded, classes, params, train_rows)
    # does the OOD score tell each external set from the test split?
    result["ood"] = ood.evaluate_dir(model, model_dir, test.x, external_dir,
                                     [e.name for e in applicable_external(params)])
    result.update({"split": "test", "classes": classes, "model": str(model_dir / "model.keras"),
                   "best_epoch": train_summary.get("best_epoch"), "run_id": train_summary.get("run_id")})
    y = test.y
    with atomic_path(report_dir, directory=True) as tmp:
        figs = tmp / "plots"
        figs.mkdir()
        pred = pd.DataFrame({"image": image_refs(test.rows)})  # no file names: they can carry patient ids
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
        if params.evaluate.gradcam_per_class:
            _gradcam_gallery(model, test, proba, classes, meta.resize, params, figs / "gradcam.png")
    write_json(metrics_path, result)
    log.info("test (%d images): accuracy %s, macro F1 %s, macro ROC-AUC %s, recall %s", result["n"],
             result["accuracy"], result["macro_f1"], result["macro_roc_auc"],
             {c: m["recall"] for c, m in result["per_class"].items()})
    for name, ext in result["external"].items():
        log.info("external %s (%d images): accuracy %s, macro ROC-AUC %s", name, ext["n"], ext["accuracy"],
                 ext["macro_roc_auc"])
    if track and result["run_id"]:
        _log(params, result, report_dir, metrics_path)
    if result["shortcut"].get("shortcut_risk"):
        log.warning("%s", result["shortcut"]["summary"])
    return {k: result[k] for k in ("accuracy", "macro_f1", "macro_roc_auc", "ece", "n", "notes")} | {
        "shortcut_risk": result["shortcut"].get("shortcut_risk", False),
        "recall": {c: m["recall"] for c, m in result["per_class"].items()},
        "temperature": result["calibration"]["temperature"],
        "external": {k: {"n": v["n"], "accuracy": v["accuracy"], "macro_roc_auc": v["macro_roc_auc"]}
                     for k, v in result["external"].items()}}


def _gradcam_gallery(model, test, proba: np.ndarray, classes: list[str], resize: str, params, path: Path) -> None:
    """Grad-CAM of the predicted class, one row per true class: correct cases, then wrong ones, each with
    the central field of the shortcut tests outlined."""
    from components.core.eval import shortcut
    from components.core.eval.gradcam import gradcam, overlay
    from components.core.stats import plots

    k, y, pred = params.evaluate.gradcam_per_class, test.y, proba.argmax(axis=1)
    grid = [[*np.flatnonzero((y == c) & (pred == c))[:k], *([None] * k)][:k]
            + [*np.flatnonzero((y == c) & (pred != c))[:k], *([None] * k)][:k] for c in range(len(classes))]
    picks = sorted({int(i) for row in grid for i in row if i is not None})
    if not picks:
        return
    heat = dict(zip(picks, gradcam(model, test.x[picks]), strict=True))
    boxes, _ = shortcut.film_boxes(test.x[picks], test.rows.iloc[picks].reset_index(drop=True), resize)
    size = test.x.shape[1]
    rects = {i: shortcut.central_rect(b, size, params.evaluate.shortcut.central_field)
             for i, b in zip(picks, boxes, strict=True)}
    cells = [[None if i is None else {"image": overlay(test.x[i, ..., 0], heat[i]), "rect": rects[i],
                                      "caption": f"{classes[y[i]]} → {classes[pred[i]]} (p={proba[i, pred[i]]:.2f})"}
              for i in row] for row in grid]
    plots.gradcam_grid(cells, [f"{c}\n(true class)" for c in classes], ["correct"] * k + ["wrong"] * k, path,
                       "Grad-CAM of the predicted class; dashed: the central field of the shortcut tests")


def _shortcut_metrics(block: dict) -> dict:
    """The shortcut block as flat MLflow metrics."""
    flat = {"shortcut_risk": float(bool(block.get("shortcut_risk"))), "shortcut_seconds": block.get("seconds")}
    for name, res in (block.get("sets") or {}).items():
        for test in ("centre_masked", "border_probe", "attention_outside"):
            flat[f"shortcut_{name}_{test}"] = (res.get(test) or {}).get("value")
        for c, v in ((res.get("attention_outside") or {}).get("per_class") or {}).items():
            flat[f"shortcut_{name}_attention_outside_share_{c}"] = v.get("share_outside")
    for c, v in ((block.get("source_probe") or {}).get("per_class") or {}).items():
        flat[f"shortcut_source_probe_{c}"] = v.get("value")
    return flat


def _log(params, result: dict, report_dir: Path, metrics_path: str | Path) -> None:
    """Add test metrics and report artifacts to the training run."""
    import mlflow

    from components.core.registry import tracking

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
    flat.update(_shortcut_metrics(result.get("shortcut") or {}))
    with mlflow.start_run(run_id=result["run_id"]):
        mlflow.log_metrics({k: v for k, v in flat.items() if v is not None})
        mlflow.set_tag("shortcut_risk", str(bool((result.get("shortcut") or {}).get("shortcut_risk"))).lower())
        mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")
        mlflow.log_artifact(str(metrics_path), artifact_path="evaluation")
        mlflow.set_tag("operating_points", json.dumps(
            {c: v["threshold"] for c, v in result["thresholds"]["val"].items()}))
