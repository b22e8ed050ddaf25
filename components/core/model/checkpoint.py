"""Resumable training state: after every epoch the full model (weights + optimizer state), the best
weights and a small JSON state (phase, epoch, best value, early-stopping counter, history, MLflow
run id) are written atomically under one folder, the JSON last.

A killed ``cxr train`` started again with the same params and data continues after its last
finished epoch (at most one epoch is lost). Keras' ``BackupAndRestore`` resumes one ``fit`` call;
this keeps the phase index, early-stopping counter and best epoch of a multi-phase schedule too.
An epoch's metrics are logged before its checkpoint: a saved epoch always has its metrics in MLflow (one
killed between the two is logged twice at its step).

**Several workers** (``train.workers``): every worker keeps the same state in memory (the epoch logs are
all-reduced, so every worker takes the same decisions), but only the chief (``chief=True``) writes the
folder; every worker opens it to resume (it must be shared: a ReadWriteMany volume on the cluster). The
other workers still save each checkpoint — saving may read variables through collective ops, so all
workers must take part — into a scratch folder of their own, which is thrown away; they read back their
own copies during the run (the chief may still be writing the shared one); a resuming worker first copies the
chief's into its own folder (the chief deletes them as it goes on, and the folder when it finishes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from components.core.contract.errors import DataError
from components.core.contract.fsutil import read_json, remove, write_json

STATE_NAME = "state.json"
KEPT = ("last_model", "best_weights", "phase_best_weights")  # the files a state names
log = logging.getLogger(__name__)


class TrainState:
    """The resumable state on disk; every write is atomic and the JSON is written last."""

    def __init__(self, directory: Path, fingerprint: str, chief: bool = True) -> None:
        self.dir = directory
        self.fingerprint = fingerprint
        self.chief = chief
        # where this worker writes: the shared folder (the chief) or a scratch folder (the other workers)
        self.write_dir = directory if chief else Path(tempfile.mkdtemp(prefix="cxr-train-worker-"))
        self.data: dict = {"fingerprint": fingerprint, "phase": 0, "phase_epoch": 0, "epoch": 0,
                           "phase_start": 0, "best": None, "best_epoch": None, "best_weights": None,
                           "phase_best": None, "phase_best_weights": None, "wait": 0, "last_model": None,
                           "history": [], "run_id": None}

    @classmethod
    def open(cls, directory: Path, fingerprint: str, chief: bool = True) -> tuple[TrainState, bool]:
        """Load the state for ``fingerprint``; a state for other params/data is discarded (by the chief)."""
        state = cls(directory, fingerprint, chief)
        path = directory / STATE_NAME
        if path.is_file():
            try:
                saved = read_json(path)
            except (OSError, json.JSONDecodeError):
                saved = {}
            if saved.get("fingerprint") == fingerprint and saved.get("last_model") and \
                    (directory / saved["last_model"]).is_file():
                state.data.update(saved)
                if not chief:
                    state._copy_shared()
                return state, True
        if chief:
            remove(directory)
            directory.mkdir(parents=True, exist_ok=True)
        return state, False

    def _copy_shared(self) -> None:
        """A resuming worker copies the chief's files it may read into its scratch folder at once: the chief
        deletes them as it moves on, and removes the whole folder when it finishes, maybe while this worker
        still restores its last phase's best epoch (seen in CI)."""
        for key in KEPT:
            name = self.data.get(key)
            if name:
                try:
                    shutil.copyfile(self.dir / name, self.write_dir / f".tmp-{name}")
                except FileNotFoundError as e:
                    remove(self.write_dir)
                    raise DataError(f"{self.dir / name} named by {self.dir / STATE_NAME} is gone: the chief "
                                    f"finished or restarted from scratch while this worker resumed; run the job "
                                    f"again") from e
                os.replace(self.write_dir / f".tmp-{name}", self.write_dir / name)

    def file(self, name: str) -> Path:
        """A checkpoint file to read: this worker's own copy when it wrote one, else the shared folder's."""
        own = self.write_dir / name
        return own if own.is_file() else self.dir / name

    def close(self) -> None:
        """Done: a worker's scratch folder goes (the chief's folder is removed by the caller)."""
        if not self.chief:
            remove(self.write_dir)

    def __getitem__(self, k):
        return self.data[k]

    def __setitem__(self, k, v):
        self.data[k] = v

    def save_weights(self, model, kind: str, epoch: int) -> str:
        name = f"{kind}-{epoch:04d}.weights.h5"
        tmp = self.write_dir / f".tmp-{name}"
        model.save_weights(tmp)
        os.replace(tmp, self.write_dir / name)
        return name

    def save_model(self, model, epoch: int) -> str:
        name = f"last-{epoch:04d}.keras"
        tmp = self.write_dir / f".tmp-{name}"
        model.save(tmp)
        os.replace(tmp, self.write_dir / name)
        return name

    def commit(self) -> None:
        if self.chief:
            write_json(self.dir / STATE_NAME, self.data)
        keep = {self.data.get(k) for k in KEPT}
        for f in self.write_dir.iterdir():
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
            log.info("epoch %d (phase %d): %s", epoch + 1, phase_idx + 1,
                     " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
            # the metrics before the checkpoint that marks the epoch done: when logging fails (a dead tracking
            # server), the epoch is not saved and the resumed run trains and logs it again; never a saved epoch
            # whose metrics were not logged
            log_metric(dict(row))
            saving = time.perf_counter()
            state["last_model"] = state.save_model(target, epoch + 1)
            state.commit()
            row["checkpoint_seconds"] = round(time.perf_counter() - saving, 3)  # in the history of the next commit
            log_metric({"epoch": row["epoch"], "checkpoint_seconds": row["checkpoint_seconds"]})
            if state["wait"] >= patience:
                self.model.stop_training = True

    return Tracker()


def load_weights(model, path: Path) -> None:
    """Load model weights; the saved optimizer slots of another phase are deliberately skipped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)
