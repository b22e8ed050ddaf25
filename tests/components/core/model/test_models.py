import h5py
import keras
import numpy as np
import pytest

from components.core.contract.errors import CxrError, ParamsError
from components.core.contract.params.train import BACKBONES, TrainConfig
from components.core.model import discriminative, models


def cfg(backbone, **kw):
    return TrainConfig(backbone=backbone, weights="none", image_size=32, **kw)


def run(model, x):
    """The model on ``x`` in inference mode, eagerly: ``predict`` would trace a graph per model (seconds for the
    large backbones), and a functional model of Keras layers computes the same either way."""
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def built():
    """``built(backbone)``: the plain ``cfg(backbone)`` model with 3 classes, built once per module (the large
    backbones take seconds). Tests that change which layers train set every layer (``set_trainable`` is total),
    so what an earlier test set does not leak into their assertions."""
    cache: dict = {}

    def get(backbone):
        if backbone not in cache:
            cache[backbone] = models.build_model(cfg(backbone), 3)
        return cache[backbone]

    yield get
    cache.clear()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_builds_takes_uint8_and_outputs_probabilities(backbone, built):
    model = built(backbone)
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape[1:]) == (32, 32, 1)
    out = run(model, np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8))
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    names = [layer.name for layer in model.layers]
    assert models.FEATURES_NAME in names and len(models.backbone_layers(model)) > 3  # flat, not nested


def test_preprocessing_matches_keras_preprocess_input(built):
    """The in-graph layers equal keras.applications' preprocess_input on a gray image repeated to RGB."""
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    rgb = np.repeat(x, 3, axis=-1)
    for backbone, fn in (("vgg16", keras.applications.vgg16.preprocess_input),
                         ("densenet121", keras.applications.densenet.preprocess_input),
                         ("resnet50v2", keras.applications.resnet_v2.preprocess_input)):
        model = built(backbone)
        pre = keras.Model(model.input, model.get_layer("cxr_preprocess").output)
        np.testing.assert_allclose(run(pre, x.astype("uint8")), fn(rgb.copy()), rtol=1e-4, atol=1e-3)


def test_phases_really_unfreeze_layers(built):
    model = built("vgg16")
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


def test_batchnorm_stays_frozen_when_asked(built):
    model = built("resnet50")
    models.set_trainable(model, "all", freeze_batchnorm=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    assert any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


def test_last_n_beyond_backbone_is_an_error(built):
    with pytest.raises(ParamsError, match="exceeds"):
        models.set_trainable(built("small_cnn"), "last:500")


def test_save_and_safe_mode_load_round_trip(tmp_path, built):
    model = built("mobilenetv3small")
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    x = np.full((1, 32, 32, 1), 90, np.uint8)
    np.testing.assert_allclose(run(model, x), run(loaded, x), rtol=1e-5)


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


def test_train_bn_trains_batchnorm_of_a_frozen_backbone_or_freezes_all(built):
    model = built("resnet50")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    head = models.set_trainable(model, "head", freeze_batchnorm=True, train_bn=True)  # fastai's frozen phase
    assert all(layer.trainable for layer in bns) and head["batchnorm_training"] == len(bns)
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    everything = models.set_trainable(model, "all", freeze_batchnorm=False, train_bn=False)
    assert not any(layer.trainable for layer in bns) and everything["batchnorm_training"] == 0


def test_layer_groups_cut_the_backbone_in_order_then_the_head(built):
    model = built("vgg16")
    groups = discriminative.layer_groups(model, 3)
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


def test_ood_features_of_a_concat_head_are_both_halves():
    from components.core.model import ood

    model = models.build_model(cfg("small_cnn", head={"pooling": "concat", "dense_units": 8}), 3)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
    probs, feats = ood.probs_and_features(model, x)
    np.testing.assert_allclose(feats, models.pooled_features(model, x), rtol=1e-5)  # what the head reads
    assert feats.shape == (4, 2 * 96) and probs.shape == (4, 3)
    assert not np.allclose(feats[:, 96:], feats[:, :96])  # the max half is not a copy of the average half
    # a reference fitted on the average half (before this fix) is still scored on that half
    assert ood.probs_and_features(model, x, dims=96)[1].shape == (4, 96)
def test_fastai_head_is_create_heads_linbndrop_twice():
    """concat pool → BN → Dropout(p/2) → Dense(relu) → BN → Dropout(p) → Dense; dense layers without bias (LinBnDrop),
    BatchNorm with PyTorch's epsilon; cached features and Grad-CAM still work."""
    from components.core.eval import gradcam

    head = {"pooling": "concat", "dense_units": 8, "dropout": 0.5, "batchnorm": True, "input_dropout": 0.25}
    model = models.build_model(cfg("small_cnn", head=head), 3)
    names = [layer.name for layer in models.head_layers(model)]
    assert names == ["head_bn0", "head_dropout0", "head_dense", "head_bn1", "head_dropout", "head_logits",
                     "head_softmax"]
    assert model.get_layer("head_dropout0").rate == 0.25 and model.get_layer("head_dropout").rate == 0.5
    assert not model.get_layer("head_dense").use_bias and not model.get_layer(models.LOGITS_NAME).use_bias
    assert model.get_layer("head_bn0").epsilon == 1e-5 and model.get_layer("head_bn0").momentum == 0.9
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    feats = models.pooled_features(model, x)
    np.testing.assert_allclose(models.head_model(model, feats.shape[-1]).predict(feats, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert gradcam.gradcam(model, x).shape == (2, 32, 32)
    plain = models.build_model(cfg("small_cnn"), 3)  # the default head is unchanged
    assert [layer.name for layer in models.head_layers(plain)] == ["head_dense", "head_dropout", "head_logits",
                                                                  "head_softmax"]


def test_the_backbone_table_is_the_one_source():
    """Schema, builder, BatchNorm warnings and baked weights all read components/core/contract/backbones.py."""
    from components.core.contract import backbones
    from components.core.contract.params import train as config

    assert config.BACKBONES == backbones.NAMES and set(models.PREPROCESSING) == set(backbones.NAMES)
    assert {b.name for b in backbones.TABLE if not b.batchnorm} == config.NO_BATCHNORM
    for b in backbones.TABLE:
        assert config.MIN_IMAGE_SIZE[b.name] == b.min_size
        assert (b.keras_app is None) == (b.name in ("resnet34", "small_cnn"))
        assert not b.bake or b.imagenet == "keras"
    with pytest.raises(ValueError, match="no ImageNet weights"):
        TrainConfig(backbone="small_cnn", weights="imagenet")


@pytest.mark.parametrize("backbone", ["resnet50", "densenet121"])
def test_layer_groups_cut_where_fastai_cuts(backbone, built):
    from components.core.contract import backbones

    model = built(backbone)
    body, upper, _ = discriminative.layer_groups(model, 3)
    assert upper[0].name == backbones.info(backbone).split and body[0].name != upper[0].name
    assert len(discriminative.layer_groups(model, 4)) == 4  # other counts: even parts
