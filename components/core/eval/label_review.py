"""Finding training labels that are wrong: out-of-fold probabilities and confident learning.

Seed 2 trained briefly, looked at its highest-loss images and removed or relabelled the bad ones before the
real training. This is that loop, made repeatable:

1. **Out-of-fold probabilities** (:func:`out_of_fold`): the training and validation splits together, cut
   into ``review.folds`` folds by patient (stratified by label: a patient's films are never on both sides);
   for each fold a fresh model (``review.backbone``, a small CNN from scratch by default) trains briefly on
   the others (one-cycle, balanced class weights, no augmentation unless ``review.augment``) and predicts the
   held-out fold.
   Every image gets probabilities from a model that never saw it or its patient, so its own (possibly wrong)
   label cannot have been memorised.
2. **Confident learning** (Northcutt et al. 2021; cleanlab's ``find_label_issues``): the per-class
   thresholds (mean self-confidence of each class) give the confident joint of given and true labels; the
   images it says are off-diagonal are the suspects, ranked by **self-confidence** (the out-of-fold
   probability of the given label, lowest first).
3. A gallery of the top suspects with the Grad-CAM of the held-out fold's model for the suggested and the
   given class (:func:`gallery_html`), and the same maps for every suspect (:func:`suspect_cams`, for the
   review page), so a person can judge each image before anything changes
   (:mod:`components.core.data.overrides`).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import time
import warnings

import numpy as np
import pandas as pd

from components.core.contract.errors import DataError

log = logging.getLogger(__name__)

SUSPECT_COLUMNS = ["path", "patient_id", "given_label", "suggested_label", "score", "sha256", "rank", "split",
                   "fold", "p_suggested"]


def fold_config(review):
    """The short training each fold gets: ``review.backbone``/``weights`` at ``review.image_size``, one
    one-cycle phase of ``review.epochs`` at ``review.lr`` (all layers from scratch; the head over a frozen
    pretrained backbone), a small head."""
    from components.core.contract.params.train import HeadConfig, Phase, TrainConfig

    pretrained = review.weights != "none"
    phase = Phase(epochs=review.epochs, trainable="head" if pretrained else "all", lr=review.lr,
                  schedule="one_cycle")
    return TrainConfig(backbone=review.backbone, weights=review.weights, image_size=review.image_size,
                       batch_size=review.batch_size, phases=[phase],
                       head=HeadConfig(pooling="max", dense_units=64, dropout=0.3), freeze_batchnorm=pretrained,
                       class_weight="balanced", calibrate=False, seed=review.seed)


def resize(x, size: int, block: int = 1024) -> np.ndarray:
    """uint8 ``N × S × S × 1`` images at ``size`` (area averaging; the same array when ``S == size``)."""
    import tensorflow as tf

    if int(x.shape[1]) == size:
        return np.asarray(x)
    if int(x.shape[1]) < size:
        raise DataError(f"review.image_size {size} is above the shards' {x.shape[1]} px: lower it (images are "
                        "only ever resized down)")
    out = [tf.cast(tf.round(tf.image.resize(np.asarray(x[i:i + block], np.float32), (size, size), method="area")),
                   tf.uint8).numpy() for i in range(0, len(x), block)]
    return np.concatenate(out) if out else np.zeros((0, size, size, 1), np.uint8)


def folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The fold of each image: patient-grouped, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise DataError(f"review.folds {n_folds} needs at least as many patients; the training and validation "
                        f"splits hold {n_groups}")
    out = np.full(len(y), -1)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        for k, (_, held) in enumerate(cv.split(np.zeros(len(y)), y, groups)):
            out[held] = k
    return out


def out_of_fold(x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, n_classes: int, review, augment,
                keep_models: bool = True) -> tuple[np.ndarray, list, list[float]]:
    """Out-of-fold class probabilities (``N × n_classes``), each fold's model (an uncompiled copy;
    ``keep_models``) and each fold's seconds.

    One model is built and compiled once; every fold starts it from the same initial weights and a fresh
    optimizer state (moments and step counter zero, so the one-cycle schedule starts again), which keeps
    Keras' traced training step: on a small data set tracing cost more than the training itself."""
    import keras

    from components.core.data import shards as shard_io
    from components.core.model import models, training

    cfg = fold_config(review)
    phase = cfg.phases[0]
    n_folds = int(fold_of.max()) + 1
    keras.utils.set_random_seed(review.seed)
    model = models.build_model(cfg, n_classes)
    counts = models.set_trainable(model, phase.trainable, cfg.freeze_batchnorm)
    steps = max(math.ceil(int((fold_of != k).sum()) / cfg.batch_size) for k in range(n_folds))
    training.compile_for_phase(model, phase, steps_per_epoch=steps)
    initial = [w.numpy().copy() for w in model.weights]
    probs = np.zeros((len(y), n_classes), np.float32)
    kept, seconds = [], []
    for k in range(n_folds):
        started = time.perf_counter()
        train_idx, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        for w, v in zip(model.weights, initial, strict=True):
            w.assign(v)
        for v in model.optimizer.variables:  # Adam's moments and its step counter (the schedule's position)
            v.assign(np.zeros(v.shape, v.dtype))
        fold_train = shard_io.Split(x=x[train_idx], y=y[train_idx], rows=pd.DataFrame())
        ds = shard_io.dataset(fold_train, cfg.batch_size, training=True, augment=augment, seed=review.seed + k)
        weights = training.class_weights(y[train_idx], n_classes, cfg.class_weight)
        model.fit(ds, epochs=phase.epochs, class_weight=weights, verbose=0)
        if counts["batchnorm_training"]:  # few steps: the moving averages lag (components/core/model/training.py)
            training.refresh_batchnorm(model, fold_train.x, cfg.batch_size)
        probs[held] = shard_io.predict(model, x[held])
        seconds.append(time.perf_counter() - started)
        acc = float((probs[held].argmax(axis=1) == y[held]).mean()) if len(held) else float("nan")
        log.info("review fold %d/%d: trained on %d images, %d held out (agreement with the given labels %.3f), "
                 "%.1f s", k + 1, n_folds, len(train_idx), len(held), acc, seconds[-1])
        if keep_models:
            copy = keras.models.clone_model(models.inference_model(model))
            copy.set_weights(model.get_weights())
            kept.append(copy)
        else:
            kept.append(None)
    return probs, kept, seconds


def find_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's label issues (indices), ranked by self-confidence (lowest probability of the given label
    first)."""
    from cleanlab.filter import find_label_issues

    if len(np.unique(y)) < 2:
        raise DataError("the label review needs at least two classes in the training and validation splits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with few examples
        return np.asarray(find_label_issues(labels=y, pred_probs=probs, return_indices_ranked_by="self_confidence"),
                          dtype=int)


def suggested(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The most probable class other than the given one."""
    masked = probs.copy()
    masked[np.arange(len(y)), y] = -1.0
    return masked.argmax(axis=1)


def suspects_table(rows: pd.DataFrame, y: np.ndarray, probs: np.ndarray, fold_of: np.ndarray, issues: np.ndarray,
                   classes: list[str]) -> pd.DataFrame:
    """One row per suspect, in rank order (columns :data:`SUSPECT_COLUMNS`)."""
    sug = suggested(probs, y)
    r = rows.iloc[issues]
    return pd.DataFrame({
        "path": r["path"].to_numpy(), "patient_id": r["patient_id"].to_numpy(),
        "given_label": [classes[i] for i in y[issues]], "suggested_label": [classes[i] for i in sug[issues]],
        "score": np.round(probs[issues, y[issues]], 6),
        "sha256": r["sha256"].to_numpy() if "sha256" in r.columns else "",
        "rank": np.arange(1, len(issues) + 1), "split": r["split"].to_numpy() if "split" in r.columns else "",
        "fold": fold_of[issues], "p_suggested": np.round(probs[issues, sug[issues]], 6),
    }, columns=SUSPECT_COLUMNS)


CAM_SIZE = 64  # side of the stored Grad-CAM maps (upsampled on the page; a map's own resolution is coarser)


def empty_cams() -> dict[str, np.ndarray]:
    return {"path": np.array([], dtype=str), "maps": np.zeros((0, 2, CAM_SIZE, CAM_SIZE), np.uint8)}


def suspect_cams(suspects: pd.DataFrame, x: np.ndarray, index: np.ndarray, models_by_fold: list, classes: list[str],
                 block: int = 64) -> dict[str, np.ndarray]:
    """Every suspect's Grad-CAM from its held-out fold's model: ``maps[i, 0]`` for the suggested class,
    ``maps[i, 1]`` for the given one (uint8 0..255 at :data:`CAM_SIZE`, or the image size when smaller), in the
    rows' order; ``path`` says whose."""
    import tensorflow as tf

    from components.core.eval import gradcam

    size = min(CAM_SIZE, int(x.shape[1]))
    maps = np.zeros((len(suspects), 2, size, size), np.uint8)
    folds_of = suspects["fold"].to_numpy().astype(int)
    sug = np.array([classes.index(c) for c in suspects["suggested_label"]], dtype=int)
    given = np.array([classes.index(c) for c in suspects["given_label"]], dtype=int)
    for k in np.unique(folds_of):
        rows = np.flatnonzero(folds_of == k)
        for start in range(0, len(rows), block):
            part = rows[start:start + block]
            films = np.asarray(x[index[part]])
            both = gradcam.gradcam(models_by_fold[int(k)], np.concatenate([films, films]),
                                   np.concatenate([sug[part], given[part]]))
            small = tf.image.resize(both[..., None], (size, size), method="area")[..., 0].numpy()
            small = np.round(np.clip(small, 0, 1) * 255).astype(np.uint8)
            maps[part, 0], maps[part, 1] = small[:len(part)], small[len(part):]
    return {"path": np.asarray(suspects["path"].astype(str).tolist(), dtype=str), "maps": maps}


def _png_uri(rgb: np.ndarray, scale: int) -> str:
    from components.core.eval.gradcam import to_png

    big = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return "data:image/png;base64," + base64.b64encode(to_png(big)).decode()


def gallery_html(suspects: pd.DataFrame, x: np.ndarray, index: np.ndarray, models_by_fold: list,
                 classes: list[str], title: str, note: str) -> str:
    """A self-contained page (images inline): per suspect, the film, the Grad-CAM of its held-out fold's model
    for the suggested class and for the given class, and the numbers."""
    from components.core.eval import gradcam

    cells = []
    size = int(x.shape[1])
    scale = max(1, 192 // size)
    for s, i in zip(suspects.itertuples(), index, strict=True):
        film = np.asarray(x[i:i + 1])
        model = models_by_fold[int(s.fold)]
        sug, given = classes.index(s.suggested_label), classes.index(s.given_label)
        maps = gradcam.gradcam(model, np.repeat(film, 2, axis=0), np.array([sug, given]))
        gray = film[0, ..., 0]
        imgs = [np.repeat(gray[..., None], 3, axis=2), gradcam.overlay(gray, maps[0]), gradcam.overlay(gray, maps[1])]
        pics = "".join(f'<figure><img src="{_png_uri(im, scale)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'
                       for im, cap in zip(imgs, ("film", f"Grad-CAM {html.escape(s.suggested_label)}",
                                                 f"Grad-CAM {html.escape(s.given_label)}"), strict=True))
        cells.append(
            f'<section><h2>#{int(s.rank)} <code>{html.escape(str(s.path))}</code></h2>'
            f'<p>given <b>{html.escape(s.given_label)}</b> (p = {float(s.score):.3f} out of fold) → suggested '
            f'<b>{html.escape(s.suggested_label)}</b> (p = {float(s.p_suggested):.3f}); patient '
            f'<code>{html.escape(str(s.patient_id))}</code>, {html.escape(str(s.split))} split, fold {int(s.fold) + 1}'
            f'</p><div class="row">{pics}</div></section>')
    body = "".join(cells) or "<p>No suspects.</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:70em}.row{display:flex;gap:1em}"
            "figure{margin:0}figcaption{font-size:.8em;color:#555}img{image-rendering:pixelated}"
            "section{border-top:1px solid #ccc;padding:.5em 0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>{body}</body></html>")
