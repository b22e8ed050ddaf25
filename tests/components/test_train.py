import json
import socket
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components import train
from components.core.contract.errors import DataError, ServiceError
from components.core.data import shards
from components.core.model import models, training
from components.core.stats import metrics
from tests.support import replace_split, train_params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_class_weights_balanced():
    w = training.class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w == {0: 4 / (2 * 3), 1: 4 / (2 * 1)}
    assert training.class_weights(np.array([0, 1]), 2, "none") is None


@pytest.mark.slow
def test_train_two_phases_logs_to_mlflow(tiny_shards, tmp_path, mlflow_store):
    p = train_params()
    summary = train.run(p, tiny_shards, tmp_path / "models", tmp_path / "state")
    out = tmp_path / "models"
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3, 4] and list(hist["phase"]) == [1, 1, 2, 2]
    assert summary["phases"][0]["trainable_weights"] < summary["phases"][1]["trainable_weights"]
    assert summary["best_epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    assert not (tmp_path / "state").exists()  # finished: the resume state is cleaned up
    model = models.load_model(out / "model.keras")
    # the saved model holds the best epoch's weights, not the last epoch's
    val = shards.load_split(tiny_shards, "val")
    loss = float(np.mean(-np.log(model.predict(val.x, verbose=0)[np.arange(len(val.y)), val.y] + 1e-12)))
    assert loss == pytest.approx(hist["val_loss"].min(), rel=2e-2)

    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(summary["run_id"])
    assert run.data.params["train.backbone"] == "small_cnn" and run.data.params["train.image_size"] == "32"
    assert run.data.tags["data_version"] == summary["data_version"] and run.data.tags["git_commit"]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 4
    logged = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(logged.predict(val.x[:2], verbose=0), model.predict(val.x[:2], verbose=0), rtol=1e-5)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model_extras")}
    assert "model_extras/input_example.npy" in artifacts
    # the requirements are stated, not inferred (no subprocess re-importing TensorFlow), and pin what trained it
    reqs = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model/requirements.txt", dst_path=tmp_path)
    lines = Path(reqs).read_text().split()
    assert lines == train.pip_requirements() and any(x.startswith(("tensorflow==", "tensorflow-cpu==")) for x in lines)


def test_unreachable_tracking_server_fails_before_training(tiny_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceError, match="unreachable"):
        train.run(train_params(), tiny_shards, tmp_path / "models", tmp_path / "state")
    assert not (tmp_path / "models").exists() and not (tmp_path / "state").exists()


def test_class_missing_from_train_is_an_error(tiny_shards, tmp_path):
    import shutil

    broken = tmp_path / "shards"
    shutil.copytree(tiny_shards, broken)
    y = np.load(broken / "train_y.npy")
    np.save(broken / "train_y.npy", np.where(y == 2, 1, y))
    with pytest.raises(DataError, match=r"no images of \['PNEUMONIA'\]"):
        train.run(train_params(), broken, tmp_path / "models", tmp_path / "state", track=False)


def test_shards_of_another_size_are_refused(tiny_shards, tmp_path):
    with pytest.raises(DataError, match="re-run `cxr preprocess`"):
        train.run(train_params(image_size=48), tiny_shards, tmp_path / "models", tmp_path / "state", track=False)


@pytest.mark.slow
def test_head_phase_on_cached_features_trains_the_full_models_head(tiny_shards, tmp_path):
    p = train_params(phases=[{"epochs": 3, "trainable": "head", "lr": 0.01, "cache_features": True},
                             {"epochs": 1, "trainable": "all", "lr": 0.001}])
    summary = train.run(p, tiny_shards, tmp_path / "models", tmp_path / "state", track=False)
    hist = pd.read_csv(tmp_path / "models" / "history.csv")
    assert list(hist["phase"]) == [1, 1, 1, 2] and hist["val_loss"].notna().all()
    assert summary["phases"][0]["trainable_weights"] < summary["phases"][1]["trainable_weights"]
    import keras

    keras.utils.set_random_seed(p.train.seed)  # the same initial weights train.run started from
    fresh = models.build_model(p.train, 3)
    trained = models.load_model(tmp_path / "models" / "model.keras")
    assert not np.allclose(fresh.get_layer("head_dense").get_weights()[0],
                           trained.get_layer("head_dense").get_weights()[0])


def test_cache_features_needs_a_frozen_backbone():
    from components.core.contract.errors import ParamsError

    with pytest.raises(ParamsError, match="cache_features needs trainable: head"):
        train_params(phases=[{"epochs": 1, "trainable": "all", "lr": 0.01, "cache_features": True}])


@pytest.mark.slow
def test_resume_continues_the_schedule_and_the_discriminative_optimizer(tiny_shards, tmp_path, monkeypatch):
    """Killed mid-phase (after epoch 3), the rerun continues the one-cycle curve where it was: the optimizer,
    its step counter and its per-layer rates come back from the checkpoint."""
    from components.core.model.checkpoint import TrainState

    p = train_params(phases=[{"epochs": 1, "trainable": "head", "lr": 0.003},
                             {"epochs": 3, "trainable": "all", "lr": [1e-4, 1e-2], "schedule": "one_cycle",
                              "weight_decay": 0.01}],
                     early_stopping={"patience": 10})
    real_commit = TrainState.commit

    def commit_then_die(self):
        real_commit(self)
        if self["epoch"] == 3:
            raise RuntimeError("killed")

    monkeypatch.setattr(TrainState, "commit", commit_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        train.run(p, tiny_shards, tmp_path / "models", tmp_path / "state", track=False)
    monkeypatch.setattr(TrainState, "commit", real_commit)
    summary = train.run(p, tiny_shards, tmp_path / "models", tmp_path / "state", track=False)
    assert summary["resumed_from_epoch"] == 3
    hist = pd.read_csv(tmp_path / "models" / "history.csv")
    steps = -(-len(shards.load_split(tiny_shards, "train").y) // p.train.batch_size)
    expected = [training.schedule_value("one_cycle", k * steps, 3 * steps, 1e-2, 0.25, 25.0, 1e5) for k in (1, 2, 3)]
    np.testing.assert_allclose(hist.loc[hist["phase"] == 2, "lr"], expected, rtol=1e-4)  # epoch 4: step 3·steps


@pytest.mark.slow
def test_lr_auto_trains_at_the_range_tests_suggestion_and_logs_it(tiny_shards, tmp_path, mlflow_store):
    """...and a next phase with lr: previous trains at that rate times lr_scale (fastai's fine_tune halves it)."""
    p = train_params(phases=[{"epochs": 1, "trainable": "all", "lr": "auto"},
                             {"epochs": 1, "trainable": "all", "lr": "previous", "lr_scale": 0.5}],
                     lr_find={"min_lr": 1e-5, "max_lr": 0.5, "steps": 12})
    summary = train.run(p, tiny_shards, tmp_path / "models", tmp_path / "state")
    lr = summary["phases"][0]["lr"]
    assert 1e-5 <= lr <= 0.5 and summary["phases"][1]["lr"] == pytest.approx(lr / 2)
    hist = pd.read_csv(tmp_path / "models" / "history.csv")
    assert hist["lr"].iloc[0] == pytest.approx(lr, rel=1e-5)  # the phase trained at it
    assert hist["lr"].iloc[1] == pytest.approx(lr / 2, rel=1e-5)
    client = mlflow.MlflowClient(mlflow_store)
    run_id = summary["run_id"]
    assert {a.path for a in client.list_artifacts(run_id, "lr_find/phase1")} == {
        "lr_find/phase1/lr_find.png", "lr_find/phase1/lr_find.json"}
    assert client.get_run(run_id).data.metrics["phase1_lr_found"] == pytest.approx(lr)
    found = mlflow.artifacts.load_dict(f"runs:/{run_id}/lr_find/phase1/lr_find.json")
    assert min(found["curve"]["lr"]) <= lr <= max(found["curve"]["lr"]) and found["chosen"] == lr


def test_a_constant_predictor_is_a_failed_training_the_gate_refuses(tiny_shards, tmp_path, monkeypatch):
    import shutil

    from components.core.stats import gating

    data = tmp_path / "shards"  # val and test tiled to 24+ images: enough to call one class for all a failure
    shutil.copytree(tiny_shards, data)
    for split in ("val", "test"):
        s = shards.load_split(data, split)
        reps = -(-metrics.COLLAPSE_MIN_IMAGES // len(s.y))
        replace_split(data, split, np.concatenate([np.asarray(s.x)] * reps), np.concatenate([s.y] * reps),
                      pd.concat([s.rows] * reps))
    real_build = models.build_model

    def biased(cfg, n_classes):  # logits dominated by class 0, and a rate too small to undo it
        model = real_build(cfg, n_classes)
        model.get_layer(models.LOGITS_NAME).bias.assign(np.array([50.0, 0.0, 0.0], "float32"))
        return model

    monkeypatch.setattr(models, "build_model", biased)
    p = train_params(phases=[{"epochs": 1, "trainable": "head", "lr": 1e-7}], calibrate=False)
    summary = train.run(p, data, tmp_path / "models", tmp_path / "state", track=False)
    assert summary["status"] == "training_failed" and "constant predictor" in summary["failure"]
    assert summary["collapse_check"] == "done"
    saved = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert saved["status"] == "training_failed"
    test = shards.load_split(data, "test")
    proba = models.load_model(tmp_path / "models" / "model.keras").predict(test.x, verbose=0)
    check = gating.training_check(saved, test.y, proba)
    assert not check["passed"] and "constant predictor" in check["note"]
    # and a model that never said so, but predicts one class for every test image, is refused too
    assert not gating.training_check({"status": "ok"}, test.y, proba)["passed"]
    assert gating.training_check({"status": "ok"}, test.y, np.eye(3)[test.y])["passed"]
