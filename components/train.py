"""Train: transfer learning in phases (head first, then unfreeze), resumable, tracked in MLflow.

``train.phases`` is a list of ``{epochs, trainable: head|all|last:N, lr, schedule, lr_mult, …}``
(:class:`components.core.contract.params.train.Phase`). Each phase compiles a fresh optimizer
(:func:`components.core.model.training.compile_for_phase`: a constant rate with ReduceLROnPlateau, or a
one-cycle / warm-up + cosine schedule; discriminative rates per layer group); ``lr: auto`` runs the LR
range test first and trains at its suggestion (the plot goes to MLflow). Early stopping
(``train.early_stopping``) ends a phase, whose best epoch (by the monitored metric) is restored before
the next one. Trainable BatchNorm statistics are re-estimated before every validation
(``train.refresh_batchnorm``). The final model has the weights of the best epoch of the whole run, and
the softmax temperature fitted on the validation split; it is saved uncompiled.

A model that predicts one class for every validation image is a failed training, not a model:
``train_summary.json`` says ``status: training_failed`` with the reason (and so does the MLflow run),
and the gate refuses it. ``train.*`` combinations that look wrong are logged as warnings and recorded
(``warnings`` in the summary).

Resume (:mod:`components.core.model.checkpoint`): a killed ``cxr train`` started again with the same
params and data continues after its last finished epoch (the optimizer, its schedule position and
the rate ``lr: auto`` found come back with it).

Several workers (``train.workers``, :mod:`components.core.model.distributed`): with ``TF_CONFIG`` naming N workers
this process is one of them (MultiWorkerMirroredStrategy; each streams its share of the shards; only the
chief writes the checkpoint, the model and the reports, and logs to MLflow). Without it, ``train.workers > 1``
starts N local worker processes on 127.0.0.1 (``python -m cxr train``) and returns the chief's
summary; on the cluster the KFP train task runs them as a Kubeflow Trainer TrainJob instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.core.contract.errors import DataError, ServiceError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="train",
    help="train the classifier in phases (head, then unfreeze); resumable; logged to MLflow",
    params=("data.classes", "preprocess.resize", "train", "mlflow", "monitor.ood_false_alarm"),
    inputs=(Port("shards", "data/shards", "preprocessed shards (`cxr preprocess`)"),),
    outputs=(Port("out", "models", "output folder: model.keras, history.csv, train_summary.json"),),
    options=(
        Option("state", str, ".cxr/train-state", "resume state (per-epoch checkpoints); a killed run restarted "
               "with the same args resumes"),
        Option("track", bool, True, "do not log to MLflow", flag="--no-mlflow"),
    ),
    plots=({"training": {"x": "epoch", "y": {"models/history.csv": ["loss", "val_loss", "accuracy",
                                                                     "val_accuracy"]}}},),
)


def fingerprint(params, shards_dir: Path) -> str:
    """What a resumable state must match: the declared params and the exact shards."""
    from components.core.data import shards
    from components.core.data.manifest import fingerprint as manifest_fp
    from components.core.registry import tracking

    data_fp = manifest_fp([shards_dir / f"{s}.csv" for s in shards.SPLITS] + [shards_dir / "meta.json"])
    return f"{tracking.params_hash(params)}-{data_fp}"


def _check_data(params, meta, train, val) -> None:
    cfg = params.train
    if meta.image_size != cfg.image_size or meta.classes != list(params.data.classes):
        raise DataError(f"the shards hold {meta.image_size}px images of {meta.classes}; params ask for "
                        f"{cfg.image_size}px and {list(params.data.classes)}: re-run `cxr preprocess`")
    missing = [c for i, c in enumerate(meta.classes) if not (train.y == i).any()]
    if missing:
        raise DataError(f"the train split has no images of {missing}: the model cannot learn them. Add data or "
                        "adjust data.classes")
    if len(val.y) == 0:
        raise DataError("the val split is empty: early stopping and best-epoch selection need it")


def _fit_phase(model, phase, state, train, val, datasets, weights, callbacks, strategy, batch_size: int,
               lr: float, prebuild: tuple[int, bool] | None = None) -> dict:
    """Compile (unless resuming mid-phase) and run one phase's remaining epochs (on cached backbone features
    when ``phase.cache_features``). ``prebuild`` (several workers): ``(image_size, weighted)`` of the stream,
    for :func:`_prebuild`. Returns what was compiled."""
    from components.core.model import models, training

    remaining = phase.epochs - state["phase_epoch"]
    steps = -(-len(train.y) // batch_size)
    fit_model, fit_data = model, {"x": datasets[0], "validation_data": datasets[1]}
    info: dict = {}
    if phase.cache_features:  # frozen backbone: compute its features once, fit the head on them
        with strategy.scope():
            feats = models.pooled_features(model, train.x)
            fit_model = models.head_model(model, feats.shape[-1])
            info = training.compile_for_phase(fit_model, phase, lr, steps)
        fit_data = {"x": feats, "y": train.y, "batch_size": batch_size, "shuffle": True,
                    "validation_data": (models.pooled_features(model, val.x), val.y)}
    elif state["phase_epoch"] == 0:
        with strategy.scope():
            info = training.compile_for_phase(model, phase, lr, steps)
    if remaining > 0:
        if prebuild:  # several workers: Keras cannot build from a distributed dataset (see _prebuild)
            _prebuild(fit_model, strategy, *prebuild)
        fit_model.fit(**fit_data, initial_epoch=state["epoch"], epochs=state["epoch"] + remaining,
                      class_weight=weights, callbacks=callbacks, verbose=0)
    return info


def _phase_lr(model, phase, idx: int, ckpt, cfg, train, weights, strategy, track: bool) -> float:
    """The phase's learning rate; ``auto``: the LR range test's suggestion (kept in the resume state, and
    logged to MLflow with its plot); ``previous``: the previous phase's rate times ``lr_scale`` (fastai's
    ``fine_tune`` halves its frozen phase's rate for the unfrozen one)."""
    if not isinstance(phase.lr, str):
        return float(phase.lr)
    found = ckpt.data.setdefault("lr_found", {})
    if phase.lr == "previous":
        before = _phase_lr(model, cfg.phases[idx - 1], idx - 1, ckpt, cfg, train, weights, strategy, track)
        return float(before * phase.lr_scale)
    if str(idx) in found:
        return float(found[str(idx)])
    if ckpt["phase_epoch"] > 0:  # resumed mid-phase: the restored optimizer already trains at the found rate
        return float(_current_lr(model))
    from components.core.data import shards as shard_io
    from components.core.model import training

    f = cfg.lr_find
    ds = shard_io.dataset(train, cfg.batch_size, training=True, augment=cfg.augment, seed=cfg.seed)
    with strategy.scope():
        result = training.lr_range_test(model, ds, min_lr=f.min_lr, max_lr=f.max_lr, steps=f.steps,
                                        class_weight=weights, amsgrad=phase.amsgrad, beta_2=phase.beta_2,
                                        epsilon=phase.epsilon)
    lr = training.pick_lr(result, f.suggestion)
    log.info("phase %d: lr auto -> %.3g (%s of the LR range test over %d steps, %.1e..%.1e)", idx + 1, lr,
             f.suggestion, result["steps"], f.min_lr, f.max_lr)
    found[str(idx)] = lr
    if track:
        _log_lr_find(result, lr, idx)
    return lr


def _current_lr(model) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _log_lr_find(result: dict, lr: float, idx: int) -> None:
    import tempfile

    import mlflow

    from components.core.contract.fsutil import write_json
    from components.core.model import training

    with tempfile.TemporaryDirectory() as tmp:
        training.plot_lr_range(result, Path(tmp) / "lr_find.png", chosen=lr)
        write_json(Path(tmp) / "lr_find.json", {**result, "chosen": lr})
        mlflow.log_artifacts(tmp, artifact_path=f"lr_find/phase{idx + 1}")
    mlflow.log_metric(f"phase{idx + 1}_lr_found", lr)


@dataclass
class Session:
    """One training run between :func:`prepare` and :func:`finalize`: the data, the model, the resume state."""

    params: Any
    me: Any  # this process among the workers (components.core.model.distributed.Worker)
    strategy: Any
    device: dict
    meta: Any
    train: Any
    val: Any
    ckpt: Any
    resumed: bool
    resumed_from: int
    data_version: str
    warnings: list[str]
    model: Any
    weights: dict | None
    datasets: tuple
    fit_weights: dict | None
    frames: dict
    lineage: dict
    track: bool
    phase_info: list[dict] = field(default_factory=list)
    run_id: str | None = None
    started: float = field(default_factory=time.time)


@under_spec(SPEC)
def run(params, shards: str | Path, out: str | Path, state: str | Path = ".cxr/train-state",
        track: bool = True) -> dict:
    """Train on ``shards``; write ``model.keras``, ``history.csv``, ``train_summary.json`` to ``out``:
    :func:`prepare`, then :func:`run_phases` inside the MLflow run, then :func:`finalize`."""
    from components.core.contract.fsutil import remove
    from components.core.model import distributed
    from components.core.registry import tracking

    cfg = params.train
    me = distributed.worker()
    if cfg.workers > 1 and not me.distributed:
        return _launch_local(params, Path(shards), Path(out), Path(state), track)
    if me.distributed and me.count != cfg.workers:
        raise DataError(f"TF_CONFIG names {me.count} workers but train.workers is {cfg.workers}")
    s = prepare(params, Path(shards), Path(state), track and me.chief, me)  # the other workers train, the chief reports
    run_ctx = (tracking.tracked_run(s.ckpt["run_id"], f"train-{cfg.backbone}", _run_params(s), _run_tags(s))
               if s.track else contextlib.nullcontext())
    with run_ctx as mlflow_run:
        s.run_id = mlflow_run.info.run_id if mlflow_run else None
        if s.track and not s.resumed:
            _log_lineage(s.lineage, s.frames)
        s.ckpt["run_id"] = s.run_id
        try:
            run_phases(s)
        finally:
            if me.distributed and not me.chief:  # its scratch folder goes, also when the job failed
                s.ckpt.close()
        if me.distributed and not me.chief:  # trained; the chief finishes and writes
            log.info("worker %d of %d: done after %d epochs", me.index, me.count, len(s.ckpt["history"]))
            return {"worker": me.index, "workers": me.count, "epochs_run": len(s.ckpt["history"])}
        summary = finalize(s, Path(out))
    remove(Path(state))  # done: a later run starts from scratch
    log.info("best epoch %s (%s %.4g) of %d; %.0f s", summary["best_epoch"], summary["monitor"],
             summary["best_value"], summary["epochs_run"], summary["seconds"])
    return summary


def prepare(params, shards_dir: Path, state_dir: Path, track: bool, me) -> Session:
    """Check the data, set the device and seeds, open (or resume) the training state, build (or load) the model
    and its input streams. With ``track``, fail fast when the MLflow server is down, before any training."""
    from components.core.data import manifest
    from components.core.data import shards as shard_io
    from components.core.model import models, training
    from components.core.model.checkpoint import TrainState
    from components.core.registry import tracking

    cfg = params.train
    models.require_tensorflow()
    import keras
    import tensorflow as tf

    # the distribution strategy first: MultiWorkerMirroredStrategy must exist before any other TF op runs
    strategy, device = training.configure_device(cfg.mixed_precision, me)
    meta = shard_io.read_meta(shards_dir)
    train, val = shard_io.load_split(shards_dir, "train"), shard_io.load_split(shards_dir, "val")
    _check_data(params, meta, train, val)
    if track:
        tracking.setup(params)
    keras.utils.set_random_seed(cfg.seed)
    with contextlib.suppress(Exception):
        tf.config.experimental.enable_op_determinism()
    fp = fingerprint(params, shards_dir)
    ckpt, resumed = TrainState.open(state_dir, fp, chief=me.chief)
    if resumed:
        log.info("resuming after epoch %d (phase %d)", ckpt["epoch"], ckpt["phase"] + 1)
    warnings = cfg.warnings()  # with several workers: the BatchNorm refresh is skipped (said there)
    for w in warnings:
        log.warning("%s", w)
    with strategy.scope():  # a checkpoint holds the optimizer and its schedule: registered Keras objects
        model = (keras.models.load_model(ckpt.file(ckpt["last_model"]), safe_mode=True,
                                         custom_objects=training.custom_objects()) if resumed
                 else models.build_model(cfg, len(meta.classes)))
    weights = training.class_weights(train.y, len(meta.classes), cfg.class_weight)
    datasets, fit_weights = _datasets(cfg, train, val, weights, strategy, me)
    data_version = fp.split("-", 1)[1]
    frames = {"train": train.rows, "val": val.rows, "test": manifest.read(shards_dir / "test.csv")}
    return Session(params=params, me=me, strategy=strategy, device=device, meta=meta, train=train, val=val, ckpt=ckpt,
                   resumed=resumed, resumed_from=ckpt["epoch"], data_version=data_version, warnings=warnings,
                   model=model, weights=weights, datasets=datasets, fit_weights=fit_weights, frames=frames,
                   lineage=_lineage(params, frames, data_version), track=track)


def _run_params(s: Session) -> dict:
    from components.core.registry import tracking

    return tracking.flatten(s.params.declared_dump())


def _run_tags(s: Session) -> dict:
    from components.core.registry import tracking

    cfg = s.params.train
    return {"git_commit": tracking.git_commit(), "data_version": s.data_version, "backbone": cfg.backbone,
            "image_size": cfg.image_size, "resize": s.params.preprocess.resize,
            "params_hash": tracking.params_hash(s.params), "train_warnings": len(s.warnings),
            **{f"device.{k}": v for k, v in s.device.items()}}


def run_phases(s: Session) -> None:
    """Every phase not yet finished (a resumed run skips the finished ones and continues mid-phase): set what
    trains, pick the rate, fit with early stopping, restore the phase's best epoch; committed after each phase."""
    from components.core.model import models
    from components.core.model.checkpoint import load_weights
    from components.core.registry import tracking

    cfg, ckpt, model = s.params.train, s.ckpt, s.model
    resumed = s.resumed
    log_epoch = tracking.epoch_logger(s.track)
    for idx, phase in enumerate(cfg.phases):
        if idx < ckpt["phase"]:
            continue
        mid_phase = resumed and ckpt["phase_epoch"] > 0
        with s.strategy.scope():
            counts = models.set_trainable(model, phase.trainable, cfg.freeze_batchnorm, phase.train_bn)
        if resumed and not mid_phase and ckpt["phase_best_weights"]:
            load_weights(model, ckpt.file(ckpt["phase_best_weights"]))  # killed between two phases
        if not mid_phase:
            ckpt["phase_start"], ckpt["phase_best"], ckpt["wait"], ckpt["phase_epoch"] = ckpt["epoch"], None, 0, 0
        lr = _phase_lr(model, phase, idx, ckpt, cfg, s.train, s.weights, s.strategy, s.track)
        log.info("phase %d/%d: trainable %s (%d weights, %d BatchNorm layers training), lr %g%s, %s schedule, "
                 "up to %d epochs", idx + 1, len(cfg.phases), phase.trainable, counts["trainable_weights"],
                 counts["batchnorm_training"], lr, f" / {phase.lr_mult:g} over {phase.lr_groups} groups"
                 if phase.lr_mult > 1 else "", phase.schedule, phase.epochs)
        compiled = {}
        if phase.epochs - ckpt["phase_epoch"] > 0 and ckpt["wait"] < cfg.early_stopping.patience:
            compiled = _fit_phase(model, phase, ckpt, s.train, s.val, s.datasets, s.fit_weights,
                                  _callbacks(s, idx, phase, counts, log_epoch), s.strategy, cfg.batch_size, lr,
                                  prebuild=(cfg.image_size, s.weights is not None) if s.me.distributed else None)
        s.phase_info.append({"phase": idx + 1, "trainable": phase.trainable, "lr": lr, "schedule": phase.schedule,
                             **counts, **{k: v for k, v in compiled.items() if k in ("groups", "total_steps")}})
        if ckpt["phase_best_weights"]:
            load_weights(model, ckpt.file(ckpt["phase_best_weights"]))
        ckpt["phase"], ckpt["phase_epoch"], resumed = idx + 1, 0, False
        ckpt.commit()


def _callbacks(s: Session, idx: int, phase, counts: dict, log_epoch) -> list:
    """The phase's callbacks: the checkpoint/early-stopping tracker, ReduceLROnPlateau for a constant rate, and
    the BatchNorm refresh before every validation when BatchNorm layers train."""
    import keras

    from components.core.model import training
    from components.core.model.checkpoint import make_tracker

    cfg = s.params.train
    callbacks = [make_tracker(s.ckpt, idx, cfg.early_stopping.monitor, cfg.early_stopping.patience, log_epoch,
                              s.model)]
    if phase.schedule == "constant":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=cfg.early_stopping.monitor, factor=cfg.reduce_lr.factor, patience=cfg.reduce_lr.patience,
            min_lr=cfg.reduce_lr.min_lr))
    if cfg.refresh_batchnorm and counts["batchnorm_training"] and not phase.cache_features and not s.me.distributed:
        # before the tracker's checkpoint: validation and the saved weights see the refreshed statistics
        callbacks.insert(0, training.batchnorm_refresher(s.train.x, cfg.batch_size, cfg.refresh_batchnorm))
    return callbacks


def finalize(s: Session, out_dir: Path) -> dict:
    """The best epoch's weights, the constant-predictor check, the temperature on val; then ``out_dir`` written
    at once (model, OOD reference, history, lineage, summary) and the model logged to MLflow."""
    import keras

    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.data import shards as shard_io
    from components.core.model import models, ood, training
    from components.core.model.checkpoint import load_weights
    from components.core.stats import metrics

    cfg, ckpt, val, params = s.params.train, s.ckpt, s.val, s.params
    model = s.model
    if s.me.distributed:  # the chief finishes alone: the same model outside the multi-worker strategy
        model = keras.models.load_model(ckpt.file(ckpt["last_model"]), safe_mode=True,
                                        custom_objects=training.custom_objects())
    load_weights(model, ckpt.file(ckpt["best_weights"]))
    failure = metrics.collapse(val.y, shard_io.predict(model, val.x).argmax(axis=1), s.meta.classes)
    if failure:
        log.error("training failed: %s. Check train.phases (rates, schedule), train.refresh_batchnorm and the "
                  "data; the gate refuses this model", failure)
    collapse_check = ("done" if len(val.y) >= metrics.COLLAPSE_MIN_IMAGES else
                      f"inconclusive: {len(val.y)} validation images (needs {metrics.COLLAPSE_MIN_IMAGES})")
    calibration = training.calibrate(model, val.x, val.y) if cfg.calibrate else {"temperature": 1.0}
    model = (models.with_temperature(model, calibration["temperature"]) if cfg.calibrate
             else models.inference_model(model))  # uncompiled: no optimizer inside the saved model
    history = ckpt["history"]
    seconds = time.time() - s.started
    summary = {
        "run_id": s.run_id, "classes": s.meta.classes, "image_size": cfg.image_size, "backbone": cfg.backbone,
        "resize": params.preprocess.resize,
        "status": "training_failed" if failure else "ok", "failure": failure, "collapse_check": collapse_check,
        "warnings": s.warnings,
        "best_epoch": ckpt["best_epoch"], "best_value": ckpt["best"], "monitor": cfg.early_stopping.monitor,
        "epochs_run": len(history), "phases": s.phase_info, "device": s.device, "data_version": s.data_version,
        "calibration": calibration, "resumed_from_epoch": s.resumed_from, "seconds": round(seconds, 1),
        "images_per_second": round((len(history) - s.resumed_from) * len(s.train.y) / max(1e-9, seconds), 1),
    }
    prep = models.Preprocessing(tuple(s.meta.classes), params.preprocess.resize)
    # the model's content (weights and temperature): the gate knows "the same model" by it, register checks that
    # the folder it registers from still holds what this run logged
    summary["weights_sha256"] = models.weights_digest(model)
    with atomic_path(out_dir, directory=True) as tmp:
        model.save(tmp / "model.keras")
        prep.save(tmp)  # what the model expects, stored once with it
        # the OOD reference: training features, threshold on the validation split
        summary["ood"] = ood.fit_and_save(model, s.train, val, s.meta.classes, params.monitor.ood_false_alarm, tmp,
                                          s.track)
        _write_history(history, tmp / "history.csv")
        write_json(tmp / "lineage.json", s.lineage)
        if s.track:
            try:
                summary["mlflow_model_uri"] = _log_model(model, tmp, summary, prep)
            except Exception as err:
                raise ServiceError(
                    f"logging the trained model to MLflow failed: {type(err).__name__}: {str(err)[:300]}. "
                    "Training is finished and saved: re-run the same command when the server is back.") from None
        write_json(tmp / "train_summary.json", summary)
    return summary


def _datasets(cfg, train, val, weights, strategy, me):
    """(train, val) datasets and the class weights ``fit`` gets. One worker: streams of the whole splits.
    Several: each worker streams its share at the per-replica batch size (``distribute_datasets_from_function``),
    with the class weights as sample weights inside the stream (Keras cannot map a distributed dataset)."""
    from components.core.data import shards as shard_io

    if not me.distributed:
        return (shard_io.dataset(train, cfg.batch_size, training=True, augment=cfg.augment, seed=cfg.seed),
                shard_io.dataset(val, cfg.batch_size)), weights

    def train_fn(ctx):
        return shard_io.dataset(train, ctx.get_per_replica_batch_size(cfg.batch_size), training=True,
                                augment=cfg.augment, seed=cfg.seed, class_weight=weights,
                                shard=(ctx.num_input_pipelines, ctx.input_pipeline_id))

    def val_fn(ctx):
        return shard_io.dataset(val, ctx.get_per_replica_batch_size(cfg.batch_size),
                                shard=(ctx.num_input_pipelines, ctx.input_pipeline_id))

    return (strategy.distribute_datasets_from_function(train_fn),
            strategy.distribute_datasets_from_function(val_fn)), None


def _prebuild(model, strategy, size: int, weighted: bool) -> None:
    """Build the compiled model's state from a local batch of the stream's shapes, and skip Keras' own build.

    Keras 3.15's ``fit`` learns the shapes by all-reducing the first batch of a distributed dataset
    (``_maybe_symbolic_build``), which fails on MultiWorkerMirroredStrategy's per-replica batches ("Attempt to
    convert a value (PerReplica…) to a Tensor"); only the shapes and dtypes matter, so give it those."""
    batch = (np.zeros((1, size, size, 1), np.uint8), np.zeros((1,), np.int64))
    if weighted:
        batch += (np.ones((1,), np.float32),)
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _launch_local(params, shards: Path, out: Path, state: Path, track: bool) -> dict:
    """``train.workers`` local worker processes on 127.0.0.1 (TF_CONFIG each); the chief's summary."""
    import yaml

    from components.core.contract.fsutil import read_json
    from components.core.model import distributed

    state.parent.mkdir(parents=True, exist_ok=True)
    logs = state.with_name(state.name + "-workers")
    logs.mkdir(parents=True, exist_ok=True)
    params_file = logs / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.unwrap().model_dump(mode="json", by_alias=True, exclude_none=True),
                                          sort_keys=False))
    argv = distributed.python_argv("cxr", "train", "--params", str(params_file), "--shards", str(shards),
                                   "--out", str(out), "--state", str(state), *([] if track else ["--no-mlflow"]))
    distributed.launch_local(argv, params.train.workers, logs)
    return read_json(out / "train_summary.json")


def _lineage(params, frames: dict, data_version: str) -> dict:
    """Which patients and images this model trained and validated on (digests), and what data and params made it."""
    from components.core.data import lineage
    from components.core.registry import tracking

    def sha(name: str):
        df = frames[name]
        return df["sha256"].astype(str) if "sha256" in df.columns else ()

    return lineage.lineage(frames["train"]["patient_id"], frames["val"]["patient_id"], data_version=data_version,
                          manifest_digest=lineage.manifest_digest(frames), params_hash=tracking.params_hash(params),
                          git_commit=tracking.git_commit(), train_images=sha("train"), val_images=sha("val"))


def _log_lineage(record: dict, frames: dict) -> None:
    """The lineage record and MLflow dataset inputs (rows with patient digests, never ids) for each split."""
    import mlflow

    from components.core.data import lineage

    mlflow.log_dict(record, "lineage/lineage.json")
    mlflow.set_tags({"manifest_digest": record["manifest_digest"], "lineage.seen_digest": record["seen_digest"],
                     "lineage.train_patients": record["counts"]["train"],
                     "lineage.val_patients": record["counts"]["val"]})
    contexts = {"train": "training", "val": "validation", "test": "testing"}
    for name, df in frames.items():
        dataset = mlflow.data.from_pandas(lineage.digested_rows(df), name=name, targets="label",
                                          digest=record["manifest_digest"][:8] + "-" + name)
        mlflow.log_input(dataset, context=contexts[name])


def _write_history(history: list[dict], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(path, index=False, float_format="%.6g")


def pip_requirements() -> list[str]:
    """What the logged model needs, pinned to what trained it: what MLflow would infer (mlflow, keras, numpy,
    TensorFlow), without the subprocess that re-imports TensorFlow to infer it (6.4 s per logged model)."""
    from importlib import metadata

    found = []
    for dist in ("mlflow", "keras", "numpy", "tensorflow", "tensorflow-cpu"):
        try:
            found.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def _log_model(model, out: Path, summary: dict, prep) -> str:
    """Log the Keras model with a signature and its preprocessing record (MLmodel metadata), plus the history and
    an example input (docs/stack.md: no ``input_example=``)."""
    import json

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from components.core.model import models

    size = summary["image_size"]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, size, size, 1), name=models.INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(summary["classes"])))]),
    )
    # input_example= fails with mlflow 3.17 + Keras 3 (FileNotFoundError on input_example.json):
    # the example goes in as a separate artifact instead.
    np.save(out / "input_example.npy", np.zeros((1, size, size, 1), np.uint8))
    info = mlflow.keras.log_model(model, name="model", signature=signature, metadata=prep.mlflow_metadata(),
                                  pip_requirements=pip_requirements())
    mlflow.log_artifact(str(out / "input_example.npy"), artifact_path="model_extras")
    mlflow.log_artifact(str(out / "history.csv"), artifact_path="training")
    mlflow.log_dict({k: v for k, v in summary.items() if k != "run_id"}, "training/train_summary.json")
    mlflow.set_tags({"training_status": summary["status"], **({"training_failure": summary["failure"]}
                                                               if summary["failure"] else {})})
    if summary["warnings"]:
        mlflow.log_dict({"warnings": summary["warnings"]}, "training/warnings.json")
    mlflow.set_tags({"best_epoch": summary["best_epoch"], "classes": json.dumps(summary["classes"]),
                     "temperature": summary["calibration"]["temperature"]})
    mlflow.log_metrics({k: v for k, v in summary["calibration"].items() if isinstance(v, float)})
    (out / "input_example.npy").unlink()
    return info.model_uri
