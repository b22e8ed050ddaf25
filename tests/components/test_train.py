import socket

import mlflow
import numpy as np
import pandas as pd
import pytest

from components import train
from components.core import models, shards, training
from components.core.errors import DataError, ServiceError
from tests.conftest import train_params


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
    from components.core.errors import ParamsError

    with pytest.raises(ParamsError, match="cache_features needs trainable: head"):
        train_params(phases=[{"epochs": 1, "trainable": "all", "lr": 0.01, "cache_features": True}])
