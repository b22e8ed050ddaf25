"""Train: transfer learning in phases (head first, then unfreeze), resumable, tracked in MLflow.

``train.phases`` is a list of ``{epochs, trainable: head|all|last:N, lr, amsgrad}``. Each phase
compiles a fresh Adam optimizer; early stopping (``train.early_stopping``) ends a phase, whose
best epoch (by the monitored metric) is restored before the next one. The final model has the
weights of the best epoch of the whole run.

Resume: after every epoch the full model (weights + optimizer state), the best weights and a
small JSON state (phase, epoch, best value, early-stopping counter, history, MLflow run id) are
written atomically under ``state_dir``. A killed ``cxr train`` started again with the same
params and data continues after its last finished epoch (at most one epoch is lost). Keras'
``BackupAndRestore`` does the same for one ``fit`` call; this keeps the phase and early-stopping
state as well, which a multi-phase schedule needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from components.core import models, shards, tracking
from components.core.config import Params
from components.core.errors import DataError, ServiceError
from components.core.fsutil import atomic_path, read_json, remove, write_json

STATE_NAME = "state.json"


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """``balanced``: n / (k · count_c), as scikit-learn computes it."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=n_classes)
    return {i: float(len(y) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def configure_device(mode: str):
    """MirroredStrategy and mixed_float16 when GPUs are present (``train.mixed_precision: auto``)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    use_mp = mode == "on" or (mode == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    return strategy, {"gpus": len(gpus), "mixed_precision": use_mp, "replicas": strategy.num_replicas_in_sync}


class TrainState:
    """The resumable state on disk; every write is atomic and the JSON is written last."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.dir = directory
        self.fingerprint = fingerprint
        self.data: dict = {"fingerprint": fingerprint, "phase": 0, "phase_epoch": 0, "epoch": 0,
                           "phase_start": 0, "best": None, "best_epoch": None, "best_weights": None,
                           "phase_best": None, "phase_best_weights": None, "wait": 0, "last_model": None,
                           "history": [], "run_id": None}

    @classmethod
    def open(cls, directory: Path, fingerprint: str) -> tuple[TrainState, bool]:
        """Load the state for ``fingerprint``; a state for other params/data is discarded."""
        state = cls(directory, fingerprint)
        path = directory / STATE_NAME
        if path.is_file():
            try:
                saved = read_json(path)
            except (OSError, json.JSONDecodeError):
                saved = {}
            if saved.get("fingerprint") == fingerprint and saved.get("last_model") and \
                    (directory / saved["last_model"]).is_file():
                state.data.update(saved)
                return state, True
        remove(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return state, False

    def __getitem__(self, k):
        return self.data[k]

    def __setitem__(self, k, v):
        self.data[k] = v

    def save_weights(self, model, kind: str, epoch: int) -> str:
        name = f"{kind}-{epoch:04d}.weights.h5"
        tmp = self.dir / f".tmp-{name}"
        model.save_weights(tmp)
        os.replace(tmp, self.dir / name)
        return name

    def save_model(self, model, epoch: int) -> str:
        name = f"last-{epoch:04d}.keras"
        tmp = self.dir / f".tmp-{name}"
        model.save(tmp)
        os.replace(tmp, self.dir / name)
        return name

    def commit(self) -> None:
        write_json(self.dir / STATE_NAME, self.data)
        keep = {self.data.get(k) for k in ("last_model", "best_weights", "phase_best_weights")}
        for f in self.dir.iterdir():
            if f.name != STATE_NAME and f.name not in keep and not f.name.startswith(".tmp-"):
                f.unlink(missing_ok=True)


def make_tracker(state: TrainState, phase_idx: int, monitor: str, patience: int, log_metric, target):
    """``target`` is the full model: checkpoints always hold it, even when a phase fits the head alone."""
    import keras

    lower_is_better = "loss" in monitor

    def better(value, ref):
        return ref is None or (value < ref if lower_is_better else value > ref)

    class Tracker(keras.callbacks.Callback):
        """Best/early-stopping bookkeeping and the per-epoch checkpoint that makes resume work."""

        started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if monitor not in logs:
                raise DataError(f"train.early_stopping.monitor {monitor!r} is not a logged metric: {sorted(logs)}")
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, "phase": phase_idx + 1, **{k: float(v) for k, v in logs.items()}, "lr": lr,
                   "seconds": round(time.perf_counter() - self.started, 3)}  # fit + validation, before saving
            state["history"].append(row)
            value = float(logs[monitor])
            if better(value, state["best"]):
                state["best"], state["best_epoch"] = value, epoch + 1
                state["best_weights"] = state.save_weights(target, "best", epoch + 1)
            if better(value, state["phase_best"]):
                state["phase_best"], state["wait"] = value, 0
                state["phase_best_weights"] = state.save_weights(target, "phase-best", epoch + 1)
            else:
                state["wait"] += 1
            state["epoch"] = epoch + 1
            state["phase_epoch"] = epoch + 1 - state["phase_start"]
            saving = time.perf_counter()
            state["last_model"] = state.save_model(target, epoch + 1)
            state.commit()
            row["checkpoint_seconds"] = round(time.perf_counter() - saving, 3)
            log_metric(row)
            if state["wait"] >= patience:
                self.model.stop_training = True

    return Tracker()


def fingerprint(params: Params, shards_dir: Path) -> str:
    """What a resumable state must match: the train params and the exact shards."""
    from components.core.manifest import fingerprint as manifest_fp

    data_fp = manifest_fp([shards_dir / f"{s}.csv" for s in shards.SPLITS] + [shards_dir / "meta.json"])
    return f"{tracking.params_hash(params, ('train', 'data'))}-{data_fp}"


def _log_mlflow(params: Params, run_id: str | None, data_version: str, device: dict):
    """Start (or resume) the MLflow run; return (run_id, per-epoch logger)."""
    import mlflow

    run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"train-{params.train.backbone}")
    if not run_id:
        flat = {}
        for section in ("data", "split", "preprocess", "train"):
            flat.update(tracking.flatten(params.section(section), f"{section}."))
        mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})
        mlflow.set_tags({"git_commit": tracking.git_commit(), "data_version": data_version,
                         "backbone": params.train.backbone, "image_size": params.train.image_size,
                         "resize": params.preprocess.resize,
                         "params_hash": tracking.params_hash(params, ("data", "split", "preprocess", "train")),
                         **{f"device.{k}": v for k, v in device.items()}})

    def log_metric(row: dict) -> None:
        try:
            mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch",)}, step=row["epoch"])
        except Exception as err:
            raise ServiceError(
                f"MLflow stopped answering during training (epoch {row['epoch']}): {type(err).__name__}: "
                f"{str(err)[:300]}. The epoch is saved: start the tracking server again and re-run the same "
                "command to resume.") from None

    return run.info.run_id, log_metric


def run(params: Params, shards_dir: str | Path, out_dir: str | Path, state_dir: str | Path = ".cxr/train-state",
        track: bool = True) -> dict:
    """Train on ``shards_dir``; write ``model.keras``, ``history.csv``, ``train_summary.json``."""
    models.require_tensorflow()
    import keras
    import tensorflow as tf

    cfg = params.train
    shards_dir, out_dir, state_dir = Path(shards_dir), Path(out_dir), Path(state_dir)
    meta = shards.read_meta(shards_dir)
    if meta.image_size != cfg.image_size or meta.classes != list(params.data.classes):
        raise DataError(f"{shards_dir} holds {meta.image_size}px shards for {meta.classes}; params ask for "
                        f"{cfg.image_size}px and {list(params.data.classes)}: re-run `cxr preprocess`")
    train, val = shards.load_split(shards_dir, "train"), shards.load_split(shards_dir, "val")
    n_classes = len(meta.classes)
    missing = [c for i, c in enumerate(meta.classes) if not (train.y == i).any()]
    if missing:
        raise DataError(f"the train split has no images of {missing}: the model cannot learn them. Add data or "
                        "adjust data.classes")
    if len(val.y) == 0:
        raise DataError("the val split is empty: early stopping and best-epoch selection need it")
    if track:
        tracking.setup(params)  # fails fast when the server is down, before any training
    keras.utils.set_random_seed(cfg.seed)
    with contextlib.suppress(Exception):
        tf.config.experimental.enable_op_determinism()
    strategy, device = configure_device(cfg.mixed_precision)
    fp = fingerprint(params, shards_dir)
    state, resumed = TrainState.open(state_dir, fp)
    resumed_from = state["epoch"]
    data_version = fp.split("-", 1)[1]

    with strategy.scope():
        if resumed:
            model = keras.models.load_model(state.dir / state["last_model"], safe_mode=True)
        else:
            model = models.build_model(cfg, n_classes)
    run_id, log_metric = None, (lambda row: None)
    if track:
        run_id, log_metric = _log_mlflow(params, state["run_id"], data_version, device)
        state["run_id"] = run_id
    train_ds = shards.dataset(train, cfg.batch_size, training=True, augment=cfg.augment, seed=cfg.seed)
    val_ds = shards.dataset(val, cfg.batch_size)
    weights = class_weights(train.y, n_classes, cfg.class_weight)
    phase_info = []
    started = time.time()
    try:
        for idx, phase in enumerate(cfg.phases):
            if idx < state["phase"]:
                continue
            mid_phase = resumed and state["phase_epoch"] > 0
            with strategy.scope():
                counts = models.set_trainable(model, phase.trainable, cfg.freeze_batchnorm)
                if not mid_phase:
                    model.compile(optimizer=keras.optimizers.Adam(phase.lr, amsgrad=phase.amsgrad),
                                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            phase_info.append({"phase": idx + 1, "trainable": phase.trainable, **counts})
            if resumed and not mid_phase and state["phase_best_weights"]:
                _load_weights(model, state.dir / state["phase_best_weights"])  # killed between two phases
            if not mid_phase:
                state["phase_start"], state["phase_best"], state["wait"] = state["epoch"], None, 0
            callbacks = [
                make_tracker(state, idx, cfg.early_stopping.monitor, cfg.early_stopping.patience, log_metric, model),
                keras.callbacks.ReduceLROnPlateau(monitor=cfg.early_stopping.monitor, factor=cfg.reduce_lr.factor,
                                                  patience=cfg.reduce_lr.patience, min_lr=cfg.reduce_lr.min_lr),
            ]
            remaining = phase.epochs - (state["phase_epoch"] if mid_phase else 0)
            if remaining > 0 and state["wait"] < cfg.early_stopping.patience:
                fit_model, fit_data = model, {"x": train_ds, "validation_data": val_ds}
                if phase.cache_features:  # frozen backbone: compute its features once, fit the head on them
                    with strategy.scope():
                        feats = models.pooled_features(model, train.x)
                        fit_model = models.head_model(model, feats.shape[-1])
                        fit_model.compile(optimizer=keras.optimizers.Adam(phase.lr, amsgrad=phase.amsgrad),
                                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                    fit_data = {"x": feats, "y": train.y, "batch_size": cfg.batch_size, "shuffle": True,
                                "validation_data": (models.pooled_features(model, val.x), val.y)}
                fit_model.fit(**fit_data, initial_epoch=state["epoch"], epochs=state["epoch"] + remaining,
                              class_weight=weights, callbacks=callbacks, verbose=2)
            if state["phase_best_weights"]:
                _load_weights(model, state.dir / state["phase_best_weights"])
            state["phase"], state["phase_epoch"], resumed = idx + 1, 0, False
            state.commit()
        _load_weights(model, state.dir / state["best_weights"])
        calibration = calibrate(model, val) if cfg.calibrate else {"temperature": 1.0}
        if cfg.calibrate:
            model = models.with_temperature(model, calibration["temperature"])
        history = state["history"]
        summary = {
            "run_id": run_id, "classes": meta.classes, "image_size": cfg.image_size, "backbone": cfg.backbone,
            "best_epoch": state["best_epoch"], "best_value": state["best"], "monitor": cfg.early_stopping.monitor,
            "epochs_run": len(history), "phases": phase_info, "device": device, "data_version": data_version,
            "calibration": calibration,
            "resumed_from_epoch": resumed_from,
            "seconds": round(time.time() - started, 1),
            "images_per_second": round((len(history) - resumed_from) * len(train.y)
                                       / max(1e-9, time.time() - started), 1),
        }
        with atomic_path(out_dir, directory=True) as tmp:
            model.save(tmp / "model.keras")
            _write_history(history, tmp / "history.csv")
            if track:
                try:
                    summary["mlflow_model_uri"] = _log_model(model, tmp, summary)
                except Exception as err:
                    raise ServiceError(
                        f"logging the trained model to MLflow failed: {type(err).__name__}: {str(err)[:300]}. "
                        "Training is finished and saved: re-run the same command when the server is back.") from None
            write_json(tmp / "train_summary.json", summary)
    except BaseException:
        if track:
            import mlflow

            with contextlib.suppress(Exception):  # the server may be the reason we are here
                mlflow.end_run("FAILED")
        raise
    if track:
        import mlflow

        mlflow.end_run()
    remove(state_dir)  # done: a later run starts from scratch
    return summary


def calibrate(model, val: shards.Split, bins: int = 10) -> dict:
    """Fit the softmax temperature on the validation split (Guo et al. 2017); ECE before and after."""
    from components.core import clinical
    from components.core.metrics import expected_calibration_error

    logits = np.asarray(models.logits_model(model).predict(val.x, batch_size=64, verbose=0), dtype=np.float64)
    t = clinical.fit_temperature(logits, val.y)
    before, after = clinical.calibrated(logits, 1.0), clinical.calibrated(logits, t)
    return {"temperature": round(t, 6), "fitted_on": "val",
            "val_nll_before": round(clinical.nll(logits, val.y, 1.0), 5),
            "val_nll_after": round(clinical.nll(logits, val.y, t), 5),
            "val_ece_before": round(expected_calibration_error(val.y, before, bins), 5),
            "val_ece_after": round(expected_calibration_error(val.y, after, bins), 5)}


def _load_weights(model, path: Path) -> None:
    """Load model weights; the saved optimizer slots of another phase are deliberately skipped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _write_history(history: list[dict], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(path, index=False, float_format="%.6g")


def _log_model(model, out: Path, summary: dict) -> str:
    """Log the Keras model with a signature, plus the history and an example input (see DESIGN §4)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    size = summary["image_size"]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 1), name=models.INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(summary["classes"])))]),
    )
    # input_example= fails with mlflow 3.17 + Keras 3 (FileNotFoundError on input_example.json):
    # the example goes in as a separate artifact instead.
    np.save(out / "input_example.npy", np.zeros((1, size, size, 1), np.uint8))
    info = mlflow.keras.log_model(model, name="model", signature=signature)
    mlflow.log_artifact(str(out / "input_example.npy"), artifact_path="model_extras")
    mlflow.log_artifact(str(out / "history.csv"), artifact_path="training")
    mlflow.log_dict({k: v for k, v in summary.items() if k != "run_id"}, "training/train_summary.json")
    mlflow.set_tags({"best_epoch": summary["best_epoch"], "classes": json.dumps(summary["classes"]),
                     "temperature": summary["calibration"]["temperature"]})
    mlflow.log_metrics({k: v for k, v in summary["calibration"].items() if isinstance(v, float)})
    (out / "input_example.npy").unlink()
    return info.model_uri
