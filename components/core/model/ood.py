"""Out-of-distribution (OOD) score: how unlike the training data an image is, in the model's own feature space.

**Method.** Lee, Lee, Lee & Shin (2018), *A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks*, NeurIPS 2018 (the "Mahalanobis" detector): one Gaussian per class
fitted to the training images' features, with a single covariance shared by the classes (tied), and
an image scored by its Mahalanobis distance to the closest class mean. The features are the pooled
backbone features the head reads (the input of its first dense layer: ``head_pool``, or with
``head.pooling: concat`` the average and max halves side by side), so one forward pass gives the
probabilities and the score. Neither the paper's input perturbation
(a gradient per request) nor its ensemble over layers is used. The tied covariance is shrunk with
Ledoit & Wolf (2004, *A well-conditioned estimator for large-dimensional covariance matrices*) so it
can be inverted when there are fewer training images than feature dimensions (2048 for ResNet50).

**Threshold.** Chosen on the scores of the *validation* split — images of the training distribution the
network never fitted (training images score lower, which is why the threshold is not taken on them) —
as the split-conformal quantile (Vovk, Gammerman & Shafer 2005; Angelopoulos & Bates 2021, *A Gentle
Introduction to Conformal Prediction*): the ``ceil((n + 1)(1 - a))``-th smallest of the ``n`` validation
scores for ``a = monitor.ood_false_alarm``. An exchangeable in-distribution image then exceeds it with
probability at most ``a`` (on average over validation sets; a small split makes the realised rate vary
around it, by about ``sqrt(a(1 - a)/n)``). The sorted validation scores are kept, so a score can also be
shown as a percentile ("more unusual than 99% of validation images").

**Drift reference.** The same file carries what ``cxr monitor`` compares a prediction log with:
per-image statistics of the training split (pixel mean and standard deviation at the model's input,
original width and height where the manifest has them) and the predicted-class counts and OOD flag
rate of the validation split.

Stored as ``ood_reference.npz`` next to ``model.keras`` (arrays and a JSON header; loaded with
``allow_pickle=False``) and logged to the training run as ``model_extras/ood_reference.npz``, where
:func:`components.core.registry.registry.load` finds it for a registered version or a run. How well the score
separates test and external sets: :mod:`components.core.eval.ood`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.core.contract.errors import CxrError, ServiceError

log = logging.getLogger(__name__)

REFERENCE_FILE = "ood_reference.npz"
ARTIFACT_DIR = "model_extras"  # in the training run, next to input_example.npy
METHOD = "mahalanobis-tied-ledoit-wolf (Lee et al. 2018)"
FORMAT_VERSION = 1
STAT_KEYS = ("mean", "std", "width", "height")
MAX_STAT_ROWS = 5000  # the drift reference keeps at most this many training images' statistics
# class means and the tied covariance are fitted on at most this many training images (class-stratified, seeded):
# the estimates settle long before, while a feature pass and the covariance of every image grow with the split
MAX_FIT_ROWS = 20_000


def stratified_rows(y: np.ndarray, cap: int, seed: int = 0) -> np.ndarray | None:
    """Sorted row indices of a class-stratified random subset of about ``cap`` rows (every class keeps at
    least one); None when ``y`` has no more than ``cap`` rows (use them all)."""
    y = np.asarray(y)
    if len(y) <= cap:
        return None
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(y == c), max(1, round(cap * np.mean(y == c))), replace=False)
            for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


@dataclass
class OodReference:
    """Class means and tied precision of the training features, the threshold, and the drift reference."""

    classes: list[str]
    means: np.ndarray          # (classes, dims)
    precision: np.ndarray      # (dims, dims), inverse of the shrunk tied covariance
    threshold: float
    false_alarm: float         # the target share of validation images above the threshold
    val_scores: np.ndarray     # sorted scores of the validation split
    n_train: int = 0
    feature_layer: str = "head_dense input"
    method: str = METHOD
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # per training image: mean, std, width, height
    val_pred_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # predicted class counts on val
    created: str = ""

    # ------------------------------------------------------------------ scoring
    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature row to its closest class mean (tied covariance)."""
        f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        fp = f @ self.precision
        d2 = (np.einsum("nd,nd->n", fp, f)[:, None] - 2 * fp @ self.means.T
              + np.einsum("cd,dk,ck->c", self.means, self.precision, self.means)[None, :])
        return np.sqrt(np.clip(d2.min(axis=1), 0, None))

    def flag(self, scores: np.ndarray | float) -> np.ndarray | bool:
        out = np.asarray(scores) > self.threshold
        return bool(out) if out.ndim == 0 else out

    def percentile(self, score: float) -> float:
        """Share of validation images that score lower (1.0: more unusual than all of them)."""
        if not len(self.val_scores):
            return float("nan")
        return float(np.searchsorted(self.val_scores, score, side="left") / len(self.val_scores))

    def threshold_for(self, false_alarm: float) -> float:
        """The split-conformal threshold for ``false_alarm`` (the largest validation score when the split is
        too small to reach it: fewer than ``1/false_alarm - 1`` images)."""
        n = len(self.val_scores)
        k = min(n, int(np.ceil((n + 1) * (1 - false_alarm))))
        return float(np.sort(self.val_scores)[k - 1])

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": round(self.threshold, 6), "false_alarm": self.false_alarm,
                "feature_layer": self.feature_layer, "dims": int(self.means.shape[1]), "n_train": self.n_train,
                "n_val": len(self.val_scores), "created": self.created}

    # ------------------------------------------------------------------ drift reference
    def expected_class_share(self) -> dict[str, float]:
        total = float(self.val_pred_counts.sum())
        counts = zip(self.classes, self.val_pred_counts, strict=True)
        return {c: (float(n) / total if total else 0.0) for c, n in counts}

    def class_counts(self) -> dict[str, float]:
        """Predicted-class counts on the validation split (the drift test weighs their sampling error)."""
        return {c: float(n) for c, n in zip(self.classes, self.val_pred_counts, strict=True)}

    def val_flag_rate(self) -> float:
        return float((self.val_scores > self.threshold).mean()) if len(self.val_scores) else float("nan")

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        header = {"format": FORMAT_VERSION, "classes": self.classes, "threshold": self.threshold,
                  "false_alarm": self.false_alarm, "n_train": self.n_train, "feature_layer": self.feature_layer,
                  "method": self.method, "created": self.created}
        arrays = {"means": self.means.astype(np.float64), "precision": self.precision.astype(np.float64),
                  "val_scores": self.val_scores.astype(np.float64), "val_pred_counts": self.val_pred_counts,
                  **{f"stat_{k}": v.astype(np.float64) for k, v in self.stats.items()}}
        with path.open("wb") as fh:
            np.savez_compressed(fh, header=np.array(json.dumps(header)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OodReference:
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if header.get("format") != FORMAT_VERSION:
                    raise CxrError(f"{path}: OOD reference format {header.get('format')} is not {FORMAT_VERSION}")
                stats = {k.removeprefix("stat_"): np.asarray(z[k]) for k in z.files if k.startswith("stat_")}
                return cls(classes=list(header["classes"]), means=np.asarray(z["means"]),
                           precision=np.asarray(z["precision"]), threshold=float(header["threshold"]),
                           false_alarm=float(header["false_alarm"]), val_scores=np.asarray(z["val_scores"]),
                           n_train=int(header.get("n_train", 0)), feature_layer=header.get("feature_layer", ""),
                           method=header.get("method", METHOD), stats=stats,
                           val_pred_counts=np.asarray(z["val_pred_counts"]), created=header.get("created", ""))
        except CxrError:
            raise
        except Exception as err:  # a damaged or foreign file
            raise CxrError(f"cannot read the OOD reference {path}: {type(err).__name__}: {err}") from None


# ---------------------------------------------------------------------- fitting
def fit(train_features: np.ndarray, train_y: np.ndarray, val_features: np.ndarray, val_probs: np.ndarray,
        classes: list[str], false_alarm: float, stats: dict[str, np.ndarray] | None = None) -> OodReference:
    """Class means and Ledoit-Wolf-shrunk tied covariance on ``train``; threshold on ``val``."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(train_features, dtype=np.float64).reshape(len(train_features), -1)
    y = np.asarray(train_y).astype(int)
    if len(val_features) == 0:
        raise CxrError("the OOD threshold needs a non-empty validation split")
    missing = [c for i, c in enumerate(classes) if not (y == i).any()]
    if missing:
        raise CxrError(f"the OOD reference needs training images of every class; none of {missing}")
    means = np.stack([f[y == i].mean(axis=0) for i in range(len(classes))])
    centred = f - means[y]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    ref = OodReference(classes=list(classes), means=means, precision=precision, threshold=0.0,
                       false_alarm=float(false_alarm), val_scores=np.zeros(0), n_train=len(f),
                       stats={k: np.asarray(v, dtype=np.float64) for k, v in (stats or {}).items()},
                       val_pred_counts=np.bincount(np.asarray(val_probs).argmax(axis=1), minlength=len(classes)),
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    ref.val_scores = np.sort(ref.score(val_features))
    ref.threshold = ref.threshold_for(false_alarm)
    return ref


def image_stats(x: np.ndarray, rows=None) -> dict[str, np.ndarray]:
    """Per-image statistics the prediction log also records: pixel mean and std at the model's input
    (uint8, 0..255), and the original width and height when ``rows`` (a manifest) has them."""
    flat = np.asarray(x).reshape(len(x), -1).astype(np.float64)
    out = {"mean": flat.mean(axis=1), "std": flat.std(axis=1)}
    if rows is not None:
        for key in ("width", "height"):
            if key in getattr(rows, "columns", ()):
                values = np.asarray(rows[key], dtype=np.float64)
                if len(values) == len(flat) and np.isfinite(values).all():
                    out[key] = values
    return out


def scoring_model(model, dims: int | None = None):
    """The model with two outputs, probabilities and the pooled features the head reads: the input of its first
    dense layer, so with ``head.pooling: concat`` both halves (average and max); None without a head.
    ``dims``: the reference's feature size; a reference fitted before both halves were read (the average half
    only, ``head_pool``) keeps being scored on that half."""
    import keras

    from components.core.model import models

    try:
        first_half = model.get_layer(models.FEATURES_NAME).output
        pooled = models.head_layers(model)[0].input
    except (ValueError, IndexError):
        return None
    if dims is not None and int(pooled.shape[-1]) != dims and int(first_half.shape[-1]) == dims:
        pooled = first_half
    return keras.Model(model.inputs, [model.output, pooled])


def probs_and_features(model, x: np.ndarray, batch_size: int = 64,
                       dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    both = scoring_model(model, dims)
    if both is None:
        raise CxrError(f"model {model.name} has no layer {'head_pool'!r}: no OOD reference can be fitted")
    from components.core.data.shards import predict

    probs, feats = predict(both, x, batch_size)  # a block at a time: the training split can be any size
    return np.asarray(probs, dtype=np.float64), np.asarray(feats, dtype=np.float64)


def fit_and_save(model, train, val, classes: list[str], false_alarm: float, out_dir: str | Path,
                 track: bool = False) -> dict:
    """The train step's hook: fit on ``train`` (a shards Split), threshold on ``val``, write
    ``out_dir/ood_reference.npz``, log it to the active MLflow run when ``track``; return a summary."""
    fit_rows = stratified_rows(train.y, MAX_FIT_ROWS)  # a class-stratified subset of a large training split
    _, train_feats = probs_and_features(model, train.x if fit_rows is None else train.x[fit_rows])
    train_y = train.y if fit_rows is None else train.y[fit_rows]
    val_probs, val_feats = probs_and_features(model, val.x)
    if len(train.x) > MAX_STAT_ROWS:  # the same rows as before, without a float64 copy of the whole split
        keep = np.random.default_rng(0).choice(len(train.x), MAX_STAT_ROWS, replace=False)
        stats = image_stats(train.x[np.sort(keep)], train.rows.iloc[np.sort(keep)])
        order = np.argsort(np.argsort(keep))  # back to the order of `keep`
        stats = {k: v[order] for k, v in stats.items()}
    else:
        stats = image_stats(train.x, train.rows)
    ref = fit(train_feats, train_y, val_feats, val_probs, classes, false_alarm, stats)
    path = ref.save(Path(out_dir) / REFERENCE_FILE)
    if track:
        import mlflow

        try:
            mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
        except Exception as err:
            raise ServiceError(f"logging the OOD reference to MLflow failed: {type(err).__name__}: {str(err)[:300]}. "
                               "Training is finished and resumable: re-run the same command when the server is "
                               "back.") from None
    summary = {**ref.describe(), "val_flag_rate": round(ref.val_flag_rate(), 4), "file": REFERENCE_FILE}
    if len(ref.val_scores) < 4 / false_alarm:
        summary["note"] = (f"only {len(ref.val_scores)} validation images: the threshold for a {false_alarm:.0%} "
                           "false-alarm rate is coarse")
        log.warning("OOD reference: %s", summary["note"])
    log.info("OOD reference: %s dims, %d training images, threshold %.4g (%.0f%% of validation above it)",
             summary["dims"], ref.n_train, ref.threshold, 100 * summary["val_flag_rate"])
    return summary
