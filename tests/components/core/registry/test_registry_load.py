"""registry.load(): a model knows its classes and the preprocessing it was trained with (``resize``) from the
record stored with it (``preprocessing.json`` in a folder, the MLmodel metadata in MLflow), never from a default."""

from __future__ import annotations

import json

import pytest

from components import train
from components.core.contract.errors import CxrError
from components.core.contract.params.train import TrainConfig
from components.core.model import models
from components.core.registry import registry

CLASSES = ["NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def model():
    cfg = TrainConfig(backbone="small_cnn", weights="none", image_size=32, head={"dense_units": 4})
    return models.build_model(cfg, len(CLASSES))


def folder(tmp_path, model, record: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    model.save(tmp_path / "model.keras")
    if record is not None:
        (tmp_path / models.PREPROCESSING_FILE).write_text(json.dumps(record))
    return tmp_path


def test_local_folder_reads_its_preprocessing_record(tmp_path, model):
    bundle = registry.load(str(folder(tmp_path, model, {"classes": CLASSES, "resize": "crop"})))
    assert bundle.resize == "crop" and bundle.classes == CLASSES and bundle.describe()["resize"] == "crop"
    assert bundle.image_size == 32  # the model's own input


def test_a_folder_without_or_with_a_wrong_record_is_refused(tmp_path, model):
    with pytest.raises(CxrError, match=r"preprocessing\.json not found"):
        registry.load(str(folder(tmp_path / "a", model) / "model.keras"))
    with pytest.raises(CxrError, match="resize in"):
        registry.load(str(folder(tmp_path / "b", model, {"classes": CLASSES, "resize": "stretch"})))
    with pytest.raises(CxrError, match="2 outputs but its preprocessing record lists"):
        registry.load(str(folder(tmp_path / "c", model, {"classes": ["A", "B", "C"], "resize": "pad"})))


def test_registered_version_and_run_read_the_mlmodel_metadata(mlflow_store, model):
    import mlflow

    prep = models.Preprocessing(tuple(CLASSES), "crop")
    with mlflow.start_run() as run:
        info = mlflow.keras.log_model(model, name="model", metadata=prep.mlflow_metadata(),
                                      pip_requirements=train.pip_requirements())
    version = mlflow.register_model(info.model_uri, "m")
    assert registry.load(f"models:/m/{version.version}").resize == "crop"
    assert registry.load(f"runs:/{run.info.run_id}/model").classes == CLASSES
    registry.client().set_model_version_tag("m", version.version, "resize", "pad")  # a tag is not the record
    assert registry.load(f"models:/m/{version.version}").resize == "crop"
    with mlflow.start_run():
        # logged without the record: refused, not guessed
        bare = mlflow.keras.log_model(model, name="model", pip_requirements=train.pip_requirements())
    old = mlflow.register_model(bare.model_uri, "m")
    with pytest.raises(CxrError, match="no 'cxr_preprocessing' metadata"):
        registry.load(f"models:/m/{old.version}")
