"""Training building blocks shared by train and lr-find: class weights, devices, optimizers, calibration."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """``balanced``: n / (k · count_c), scikit-learn's ``compute_class_weight``; absent classes get 0."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y) * len(present) / n_classes
    out = {i: 0.0 for i in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return out


def configure_device(mode: str, worker=None):
    """MirroredStrategy and mixed_float16 when GPUs are present (``train.mixed_precision: auto``).

    ``worker`` (:class:`components.core.distributed.Worker`) with several workers: MultiWorkerMirroredStrategy
    (which mirrors over this worker's GPUs too); create it before any other TensorFlow op runs."""
    import keras
    import tensorflow as tf

    from components.core import distributed

    multi = worker is not None and worker.distributed
    strategy = distributed.strategy(worker) if multi else None
    gpus = tf.config.list_physical_devices("GPU")
    use_mp = mode == "on" or (mode == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    device = {"gpus": len(gpus), "mixed_precision": use_mp, "replicas": strategy.num_replicas_in_sync}
    if multi:
        device.update({"workers": worker.count, "worker": worker.index})
    log.info("device: %s", device)
    return strategy, device


def compile_for_phase(model, phase) -> None:
    """A fresh Adam optimizer for the phase; sparse categorical cross-entropy; accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(phase.lr, amsgrad=phase.amsgrad),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def calibrate(model, x_val: np.ndarray, y_val: np.ndarray, bins: int = 10) -> dict:
    """Fit the softmax temperature on the validation split (Guo et al. 2017); ECE before and after."""
    from components.core import clinical, models
    from components.core.metrics import expected_calibration_error
    from components.core.shards import predict

    logits = np.asarray(predict(models.logits_model(model), x_val), dtype=np.float64)  # block-wise: any split size
    t = clinical.fit_temperature(logits, y_val)
    before, after = clinical.calibrated(logits, 1.0), clinical.calibrated(logits, t)
    result = {"temperature": round(t, 6), "fitted_on": "val",
              "val_nll_before": round(clinical.nll(logits, y_val, 1.0), 5),
              "val_nll_after": round(clinical.nll(logits, y_val, t), 5),
              "val_ece_before": round(expected_calibration_error(y_val, before, bins), 5),
              "val_ece_after": round(expected_calibration_error(y_val, after, bins), 5)}
    log.info("calibration: T=%.3f, val ECE %.4f -> %.4f", t, result["val_ece_before"], result["val_ece_after"])
    return result
