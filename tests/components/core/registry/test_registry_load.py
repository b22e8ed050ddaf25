"""registry.load(): a model knows the preprocessing it was trained with (``resize``), whether it is served
from a local folder (train_summary.json) or from the MLflow registry (the version's tag, else its run's)."""

from __future__ import annotations

import json

import pytest

from components.core.contract.config import TrainConfig
from components.core.contract.errors import CxrError
from components.core.model import models
from components.core.registry import registry

CLASSES = ["NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def model():
    cfg = TrainConfig(backbone="small_cnn", weights="none", image_size=32, head={"dense_units": 4})
    return models.build_model(cfg, len(CLASSES))


def folder(tmp_path, model, **summary):
    model.save(tmp_path / "model.keras")
    (tmp_path / "train_summary.json").write_text(json.dumps({"classes": CLASSES, "image_size": 32, **summary}))
    return tmp_path


def test_local_folder_reads_resize_from_its_train_summary(tmp_path, model):
    bundle = registry.load(str(folder(tmp_path, model, resize="crop")))
    assert bundle.resize == "crop" and bundle.classes == CLASSES and bundle.describe()["resize"] == "crop"
    older = folder(tmp_path, model)  # a summary written before train saved resize
    assert registry.load(str(older / "model.keras")).resize == "pad"


def test_local_folder_with_a_wrong_summary_is_refused(tmp_path, model):
    with pytest.raises(CxrError, match="'resize' is 'stretch'"):
        registry.load(str(folder(tmp_path, model, resize="stretch")))
    with pytest.raises(CxrError, match="image_size 64 but the model next to it takes 32"):
        registry.load(str(folder(tmp_path, model, resize="pad", image_size=64)))


def test_registered_version_uses_its_resize_tag_else_its_runs(mlflow_store, model):
    import mlflow

    with mlflow.start_run() as run:
        mlflow.set_tags({"resize": "crop", "classes": json.dumps(CLASSES)})
        info = mlflow.keras.log_model(model, name="model")
    tagged = mlflow.register_model(info.model_uri, "m", tags={"resize": "crop", "classes": json.dumps(CLASSES)})
    untagged = mlflow.register_model(info.model_uri, "m", tags={"classes": json.dumps(CLASSES)})
    assert registry.load(f"models:/m/{tagged.version}").resize == "crop"
    assert registry.load(f"models:/m/{untagged.version}").resize == "crop"  # from the run's tag
    assert registry.load(f"runs:/{run.info.run_id}/model").resize == "crop"
    registry.client().set_model_version_tag("m", untagged.version, "resize", "pad")
    assert registry.load(f"models:/m/{untagged.version}").resize == "pad"  # the version's own tag wins
