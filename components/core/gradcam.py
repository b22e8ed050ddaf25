"""Grad-CAM (Selvaraju et al. 2017) on the backbone's last feature map, and colour overlays."""

from __future__ import annotations

import io

import numpy as np

from components.core.models import FEATURES_NAME


def gradcam(model, x: np.ndarray, class_index: np.ndarray | None = None) -> np.ndarray:
    """Heat maps in 0..1, one per image (N × S × S), for ``class_index`` (default: predicted class)."""
    import keras
    import tensorflow as tf

    feature_tensor = model.get_layer(FEATURES_NAME).input
    grad_model = keras.Model(model.inputs, [feature_tensor, model.output])
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        features, probs = grad_model(x, training=False)
        tape.watch(features)
        idx = tf.argmax(probs, axis=1) if class_index is None else tf.convert_to_tensor(class_index)
        score = tf.gather(probs, idx, axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * tf.cast(weights, tf.float32), axis=-1))
    size = x.shape[1]
    cam = tf.image.resize(cam[..., None], (size, size), method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    cam = np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0)
    return np.nan_to_num(cam, nan=0.0).astype(np.float32)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a 0..1 heat map (jet colours) over a uint8 grayscale image → uint8 RGB."""
    from matplotlib import colormaps

    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8)


def to_png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
