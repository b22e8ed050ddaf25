"""The per-epoch checkpoint tracker with a real Keras fit: an epoch's metrics are logged before the checkpoint
that marks it done, so a tracking server that dies loses no epoch's metrics (the resumed run redoes that epoch)."""

import json
import tempfile

import keras
import numpy as np
import pytest

from components.core.contract.errors import DataError
from components.core.model.checkpoint import STATE_NAME, TrainState, make_tracker


class ServerDied(Exception):
    pass


def tiny():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_metrics_are_logged_before_the_checkpoint_and_a_failed_log_leaves_the_epoch_unsaved(tmp_path):
    state, resumed = TrainState.open(tmp_path / "state", "fp")
    assert not resumed
    seen = []  # (what was logged, the epoch state.json said was done at that moment)

    def log_metric(row):
        saved = json.loads((tmp_path / "state" / STATE_NAME).read_text())["epoch"] if seen else 0
        seen.append((dict(row), saved))
        if row["epoch"] == 3 and "val_loss" in row:
            raise ServerDied("the tracking server stopped answering")

    model = tiny()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)
    with pytest.raises(ServerDied):
        model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0,
                  callbacks=[make_tracker(state, 0, "val_loss", 10, log_metric, model)])
    metrics = [(row["epoch"], saved) for row, saved in seen if "val_loss" in row]
    assert metrics == [(1, 0), (2, 1), (3, 2)]  # each epoch's metrics logged while the epoch before is the saved one
    timings = [(row["epoch"], saved) for row, saved in seen if "checkpoint_seconds" in row]
    assert timings == [(1, 1), (2, 2)]  # the checkpoint's own time, logged after it
    # the failed log stopped training before epoch 3's checkpoint: a resumed run starts at epoch 3 and logs it
    reopened, resumed = TrainState.open(tmp_path / "state", "fp")
    assert resumed and reopened["epoch"] == 2 and [r["epoch"] for r in reopened["history"]] == [1, 2]


def test_a_resuming_worker_keeps_its_own_copy_of_the_chiefs_files(tmp_path):
    # the chief removes the shared folder when it finishes, maybe before another worker restores its last phase's
    # best epoch from a file written before the resume (CI saw worker 1 fail so): that worker copies them at open
    shared = tmp_path / "state"
    chief, _ = TrainState.open(shared, "fp")
    model = tiny()
    chief["phase_best_weights"] = chief.save_weights(model, "phase-best", 1)
    chief["best_weights"] = chief.save_weights(model, "best", 1)
    chief["last_model"], chief["epoch"] = chief.save_model(model, 1), 1
    chief.commit()
    worker, resumed = TrainState.open(shared, "fp", chief=False)
    assert resumed and worker["epoch"] == 1
    for f in shared.iterdir():
        f.unlink()
    shared.rmdir()
    tiny().load_weights(worker.file(worker["phase_best_weights"]))
    assert worker.file(worker["last_model"]).is_file() and worker.file(worker["best_weights"]).is_file()
    worker.close()
    assert not worker.write_dir.exists()


def test_a_resuming_worker_whose_chief_file_is_gone_says_so_and_leaves_no_scratch_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"  # the workers' scratch folders, here alone (another xdist worker's test makes some)
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    shared = tmp_path / "state"
    chief, _ = TrainState.open(shared, "fp")
    model = tiny()
    chief["best_weights"] = chief.save_weights(model, "best", 1)
    chief["last_model"], chief["epoch"] = chief.save_model(model, 1), 1
    chief.commit()
    (shared / chief["best_weights"]).unlink()  # the chief moved on between the state and the copy
    with pytest.raises(DataError, match=r"best-0001\.weights\.h5 named by .* is gone: .* run the job again"):
        TrainState.open(shared, "fp", chief=False)
    assert not list(scratch.iterdir())
