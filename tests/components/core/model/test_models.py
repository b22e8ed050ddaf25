import h5py
import keras
import numpy as np
import pytest

from components.core.contract.config import BACKBONES, TrainConfig
from components.core.contract.errors import CxrError, ParamsError
from components.core.model import models


def cfg(backbone, **kw):
    return TrainConfig(backbone=backbone, weights="none", image_size=32, **kw)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_builds_takes_uint8_and_outputs_probabilities(backbone):
    model = models.build_model(cfg(backbone), 3)
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape[1:]) == (32, 32, 1)
    out = model.predict(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8), verbose=0)
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    names = [layer.name for layer in model.layers]
    assert models.FEATURES_NAME in names and len(models.backbone_layers(model)) > 3  # flat, not nested


def test_preprocessing_matches_keras_preprocess_input():
    """The in-graph layers equal keras.applications' preprocess_input on a gray image repeated to RGB."""
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    rgb = np.repeat(x, 3, axis=-1)
    for backbone, fn in (("vgg16", keras.applications.vgg16.preprocess_input),
                         ("densenet121", keras.applications.densenet.preprocess_input),
                         ("resnet50v2", keras.applications.resnet_v2.preprocess_input)):
        model = models.build_model(cfg(backbone), 2)
        pre = keras.Model(model.inputs, model.get_layer("cxr_preprocess").output)
        np.testing.assert_allclose(pre.predict(x.astype("uint8"), verbose=0), fn(rgb.copy()), rtol=1e-4, atol=1e-3)


def test_phases_really_unfreeze_layers():
    model = models.build_model(cfg("vgg16"), 3)
    head = models.set_trainable(model, "head")
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable == ["head_dense", "head_logits"]
    last6 = models.set_trainable(model, "last:6")
    unfrozen = [layer.name for layer in models.backbone_layers(model) if layer.trainable]
    assert unfrozen == ["block4_conv3", "block4_pool", "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    everything = models.set_trainable(model, "all")
    assert head["trainable_weights"] < last6["trainable_weights"] < everything["trainable_weights"]
    assert everything["trainable_weights"] == sum(int(np.prod(w.shape)) for w in model.weights
                                                  if "normalization" not in w.path)


def test_batchnorm_stays_frozen_when_asked():
    model = models.build_model(cfg("resnet50"), 2)
    models.set_trainable(model, "all", freeze_batchnorm=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    assert any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


def test_last_n_beyond_backbone_is_an_error():
    with pytest.raises(ParamsError, match="exceeds"):
        models.set_trainable(models.build_model(cfg("small_cnn"), 2), "last:500")


def test_save_and_safe_mode_load_round_trip(tmp_path):
    model = models.build_model(cfg("mobilenetv3small"), 3)
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    x = np.full((1, 32, 32, 1), 90, np.uint8)
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), rtol=1e-5)


def test_local_weights_file_in_keras_download_format_is_loaded(tmp_path):
    """The ImageNet path downloads a legacy .h5 and calls load_weights on it: same code as a local file."""
    from keras.src.legacy.saving import legacy_h5_format

    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    model = models.build_model(TrainConfig(backbone="vgg16", weights=str(path), image_size=32), 3)
    for name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], backbone.get_layer(name).get_weights()[0])


def test_weights_file_of_the_wrong_backbone_is_a_clear_error(tmp_path):
    other = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(ParamsError, match="does not fit backbone vgg16"):
        models.build_model(TrainConfig(backbone="vgg16", weights=str(tmp_path / "mobilenet.weights.h5"),
                                       image_size=32), 3)
    with pytest.raises(ParamsError, match="not found"):
        models.build_model(TrainConfig(backbone="vgg16", weights=str(tmp_path / "nope.h5"), image_size=32), 3)


def test_imagenet_weights_are_requested_and_offline_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    requested = {}
    real = keras.applications.MobileNetV3Small

    def spy(**kwargs):
        requested.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", spy)
    with pytest.raises(CxrError) as exc:  # no internet here: the real download fails
        models.build_model(TrainConfig(backbone="mobilenetv3small", weights="imagenet", image_size=32), 3)
    assert requested["weights"] == "imagenet" and requested["include_top"] is False
    msg = str(exc.value)
    assert "ImageNet weights" in msg and str(tmp_path / "keras" / "models") in msg and "none" in msg
    assert "Traceback" not in msg


def test_train_bn_trains_batchnorm_of_a_frozen_backbone_or_freezes_all():
    model = models.build_model(cfg("resnet50"), 2)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    head = models.set_trainable(model, "head", freeze_batchnorm=True, train_bn=True)  # fastai's frozen phase
    assert all(layer.trainable for layer in bns) and head["batchnorm_training"] == len(bns)
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    everything = models.set_trainable(model, "all", freeze_batchnorm=False, train_bn=False)
    assert not any(layer.trainable for layer in bns) and everything["batchnorm_training"] == 0


def test_layer_groups_cut_the_backbone_in_order_then_the_head():
    model = models.build_model(cfg("vgg16"), 3)
    groups = models.layer_groups(model, 3)
    names = [[layer.name for layer in g] for g in groups]
    assert names[0][0] == "block1_conv1" and names[1][-1] == "block5_conv3"
    assert abs(len(names[0]) - len(names[1])) <= 1 and names[2] == ["head_dense", "head_logits"]
    flat = [n for g in names[:2] for n in g]
    assert flat == [layer.name for layer in models.backbone_layers(model) if layer.weights]


def test_concat_pooling_head_feeds_gradcam_and_cached_features():
    from components.core.eval import gradcam

    model = models.build_model(cfg("small_cnn", head={"pooling": "concat", "dense_units": 8}), 3)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    feats = models.pooled_features(model, x)
    assert feats.shape == (2, 2 * 96)  # average and max of the last 96-channel map
    head = models.head_model(model, feats.shape[-1])
    np.testing.assert_allclose(head.predict(feats, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert gradcam.gradcam(model, x, np.array([0, 1])).shape[0] == 2
