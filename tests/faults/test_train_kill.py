"""kill -9 of `cxr train` mid-run: the same command again resumes and loses at most one epoch."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks.processes import env
from components import evaluate
from tests.support import train_params, write_params

pytestmark = pytest.mark.slow

EPOCHS = 6  # 2 head + 4 whole-model epochs; the kill comes inside phase 2
HEAD = 2


def train_cmd(params_file, shards, out, state):
    return [sys.executable, "-m", "cxr", "train", "--params", str(params_file), "--shards", str(shards),
            "--out", str(out), "--state", str(state), "--no-mlflow"]


def params():
    return train_params(phases=[{"epochs": HEAD, "trainable": "head", "lr": 0.003},
                                {"epochs": EPOCHS - HEAD, "trainable": "all", "lr": 0.003}],
                        early_stopping={"patience": 50})


def accuracy_on_all(model_dir, shards_dir) -> float:
    import numpy as np

    from components.core.data import shards
    from components.core.model import models

    model = models.load_model(model_dir / "model.keras")
    splits = [shards.load_split(shards_dir, s) for s in shards.SPLITS]
    x, y = np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits])
    return float((model.predict(x, verbose=0).argmax(axis=1) == y).mean())


def test_kill_during_training_then_resume(tiny_shards, tmp_path):
    p = params()
    pf = write_params(tmp_path / "params.yaml", p)
    state = tmp_path / "state"
    # an uninterrupted run of the same command, to compare with, runs alongside (each process spends seconds
    # importing TensorFlow; they share nothing but the shards, and the runs are seeded and deterministic)
    full_log = tmp_path / "full.log"
    with full_log.open("w") as log:
        full = subprocess.Popen(train_cmd(pf, tiny_shards, tmp_path / "full", tmp_path / "state2"), env=env(),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        killed_after, hist = kill_and_resume(pf, tiny_shards, tmp_path, state)
        evaluate.run(p, tmp_path / "models", tiny_shards, tmp_path / "r1", tmp_path / "m1.json", track=False)
        # the uninterrupted run: the resumed model is as good within tolerance
        assert full.wait(timeout=600) == 0, full_log.read_text()[-3000:]
    finally:
        if full.poll() is None:
            full.kill()
            full.wait()
    # compared on every image of the tiny set: its 5-image test split moves by 0.2 per image, and the two runs
    # draw different augmentations after the kill (both used to be constant predictors, which hid that)
    assert abs(accuracy_on_all(tmp_path / "models", tiny_shards) - accuracy_on_all(tmp_path / "full", tiny_shards)) \
        <= 0.25
    hist_full = pd.read_csv(tmp_path / "full" / "history.csv")
    # epochs before the kill were computed identically (seeded, deterministic ops)
    pd.testing.assert_frame_equal(hist.iloc[:killed_after][["loss", "val_loss"]],
                                  hist_full.iloc[:killed_after][["loss", "val_loss"]], rtol=1e-4)


def kill_and_resume(pf, shards, tmp_path, state):
    """``cxr train`` killed (-9) inside phase 2, then the same command again: the epoch killed after and the
    resumed run's history."""
    proc = subprocess.Popen(train_cmd(pf, shards, tmp_path / "models", state), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        try:
            done = json.loads((state / "state.json").read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= HEAD + 1:  # inside phase 2
            proc.send_signal(signal.SIGKILL)
            killed_after = done
            break
        time.sleep(0.02)
    if killed_after is None:
        proc.kill()
    proc.wait(timeout=30)
    assert killed_after is not None, "training finished or stalled before it could be killed"
    assert not (tmp_path / "models").exists()  # nothing half-written where DVC would look

    rerun = subprocess.run(train_cmd(pf, shards, tmp_path / "models", state), env=env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["resumed_from_epoch"] >= killed_after  # at most the epoch in progress was lost
    hist = pd.read_csv(tmp_path / "models" / "history.csv")
    assert list(hist["epoch"]) == list(range(1, EPOCHS + 1))
    assert list(hist["phase"]) == [1] * HEAD + [2] * (EPOCHS - HEAD)
    return killed_after, hist
