"""Grad-CAM (Selvaraju et al. 2017) of the class logit on the backbone's last convolutional feature
map, and colour overlays.

- **Score = the class logit** (``models.LOGITS_NAME``, before temperature and softmax), as in the
  paper. The gradient of a softmax probability is ``p(1-p)`` times smaller: for a confident model it
  underflows (float32) and the map became noise or all zero.
- **Feature map = the last one at full resolution.** ``models.FEATURES_NAME`` (the head's global
  pooling) reads the backbone output; when that output comes from a trailing pooling layer (VGG16:
  ``block5_pool``, 7×7 at 224 px), Grad-CAM steps back through it to the convolution it pools
  (``block5_conv3``, 14×14). Other backbones end in an activation and are used as they are.
  :func:`feature_layer` names the layer used.
"""

from __future__ import annotations

import io

import numpy as np

from components.core.model.models import FEATURES_NAME, LOGITS_NAME

_POOLING = ("MaxPooling2D", "AveragePooling2D")


def _producer(tensor):
    """The layer that produced a symbolic Keras tensor."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else None


def feature_layer(model):
    """The layer whose output Grad-CAM reads: the input of the head's pooling, stepped back
    through trailing pooling layers."""
    layer = _producer(model.get_layer(FEATURES_NAME).input)
    while layer is not None and layer.__class__.__name__ in _POOLING:
        layer = _producer(layer.input)
    if layer is None:
        raise ValueError(f"cannot find the feature map feeding {FEATURES_NAME!r}")
    return layer


def gradcam(model, x: np.ndarray, class_index: np.ndarray | None = None) -> np.ndarray:
    """Heat maps in 0..1, one per image (N × S × S), for ``class_index`` (default: predicted class).

    A map is all zero only when no feature location raises the class logit (ReLU of the weighted
    sum); the maximum of every other map is 1.
    """
    import keras
    import tensorflow as tf

    feature_tensor = feature_layer(model).output
    grad_model = keras.Model(model.inputs, [feature_tensor, model.get_layer(LOGITS_NAME).output])
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        features, logits = grad_model(x, training=False)
        logits = tf.cast(logits, tf.float32)
        # argmax of the logits = argmax of the probabilities (temperature > 0)
        idx = tf.argmax(logits, axis=1) if class_index is None else tf.convert_to_tensor(class_index, tf.int64)
        score = tf.gather(logits, idx, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * weights, axis=-1))
    size = x.shape[1]
    cam = tf.image.resize(cam[..., None], (size, size), method="bilinear")[..., 0].numpy()
    cam = np.nan_to_num(cam, nan=0.0)
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    cam = np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0)
    return cam.astype(np.float32)


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
