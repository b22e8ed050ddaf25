"""Grad-CAM follows the evidence: a tiny CNN learns "a bright blob somewhere = positive", and the heat
peak must lie on the blob, also when the model is so confident that its softmax saturates."""

import numpy as np
import pytest

from components.core.contract.params.train import TrainConfig
from components.core.eval import gradcam
from components.core.model import models

SIZE = 48


def blobs(n: int, seed: int):
    """Noise images; class 1 carries a bright Gaussian blob (σ 3 px) at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    x = rng.normal(70, 12, (n, SIZE, SIZE))
    y = np.arange(n) % 2
    centres = np.full((n, 2), np.nan)
    for i in np.flatnonzero(y):
        cy, cx = rng.uniform(8, SIZE - 8, 2)
        centres[i] = cy, cx
        x[i] += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0 ** 2))
    return np.clip(x, 0, 255).astype(np.uint8)[..., None], y, centres


@pytest.fixture(scope="module")
def blob_model():
    import keras

    keras.utils.set_random_seed(0)
    x, y, _ = blobs(256, seed=0)
    cfg = TrainConfig(backbone="small_cnn", weights="none", image_size=SIZE, head={"dense_units": 16, "dropout": 0.0})
    model = models.build_model(cfg, 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    # 64 small steps: enough for the BatchNormalization moving statistics to settle (with fewer,
    # inference-mode predictions stay constant although the training loss is ~0)
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    return model


def peak_hits(heat: np.ndarray, centres: np.ndarray, radius: float = 8.0) -> np.ndarray:
    peaks = np.array([np.unravel_index(h.argmax(), h.shape) for h in heat], float)
    return np.hypot(*(peaks - centres).T) <= radius


@pytest.mark.parametrize("temperature", [1.0, 0.001])
def test_heat_peak_lies_on_the_planted_lesion(blob_model, temperature):
    x, y, centres = blobs(40, seed=1)
    pos = np.flatnonzero(y == 1)
    model = models.with_temperature(blob_model, temperature) if temperature != 1.0 else blob_model
    assert (model.predict(x, verbose=0).argmax(1) == y).mean() >= 0.85  # it learned the task
    if temperature < 1:  # softmax saturated: the gradient of the probability is exactly zero here
        assert (model.predict(x[pos], verbose=0)[:, 1] == 1.0).mean() >= 0.5
    heat = gradcam.gradcam(model, x[pos], np.ones(len(pos), int))
    peaks = heat.reshape(len(heat), -1).max(axis=1)
    assert (peaks == 1.0).all(), f"{(peaks == 0).sum()} all-zero maps"  # an all-zero map is a failure
    hits = peak_hits(heat, centres[pos])
    assert hits.mean() >= 0.8, f"peak on the blob for {hits.mean():.0%} of images (chance ≈ 9%)"


def test_default_class_is_the_predicted_one(blob_model):
    x, _, _ = blobs(6, seed=2)
    predicted = blob_model.predict(x, verbose=0).argmax(1)
    assert np.allclose(gradcam.gradcam(blob_model, x), gradcam.gradcam(blob_model, x, predicted), atol=1e-5)


def test_feature_layer_steps_back_through_a_trailing_pool():
    """VGG16 ends conv (block5_conv3, 14×14 at 224 px) → pool (block5_pool, 7×7) → the head's global pool:
    Grad-CAM must read the convolution, not the pooled map."""
    import keras

    layers = keras.layers
    inp = keras.Input((32, 32, 1), dtype="uint8", name=models.INPUT_NAME)
    x = layers.Rescaling(1.0, name="cxr_to_float")(inp)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="block5_conv3")(x)
    x = layers.MaxPooling2D(2, name="block5_pool")(x)
    x = layers.GlobalMaxPooling2D(name=models.FEATURES_NAME)(x)
    x = layers.Dense(2, name=models.LOGITS_NAME)(x)
    model = keras.Model(inp, layers.Activation("softmax", name=models.OUTPUT_NAME)(x))
    assert gradcam.feature_layer(model).name == "block5_conv3"
    assert gradcam.feature_layer(models.with_temperature(model, 2.0)).name == "block5_conv3"
    heat = gradcam.gradcam(model, np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1), dtype=np.uint8))
    assert heat.shape == (2, 32, 32)


def test_feature_layer_of_the_small_cnn_is_its_last_activation(blob_model):
    assert gradcam.feature_layer(blob_model).name == "cnn4_relu"
