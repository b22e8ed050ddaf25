"""Preprocessed shards on disk and the ``tf.data`` pipelines that feed training and evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.core import manifest
from components.core.config import AugmentConfig
from components.core.errors import DataError
from components.core.fsutil import read_json

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShardMeta:
    classes: list[str]
    image_size: int
    resize: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Split:
    """One split in memory: pixels (N × S × S × 1 uint8), labels, and its manifest rows."""

    x: np.ndarray
    y: np.ndarray
    rows: pd.DataFrame


def read_meta(shards_dir: str | Path) -> ShardMeta:
    path = Path(shards_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path} not found: run `cxr preprocess` first")
    return ShardMeta(**read_json(path))


def load_split(shards_dir: str | Path, split: str) -> Split:
    d = Path(shards_dir)
    try:
        x = np.load(d / f"{split}_x.npy")
        y = np.load(d / f"{split}_y.npy")
    except FileNotFoundError as err:
        raise DataError(f"{err.filename} not found: run `cxr preprocess` first") from None
    rows = manifest.read(d / f"{split}.csv")
    if len(x) != len(y) or len(y) != len(rows):
        raise DataError(f"{d}: {split} shards disagree in length ({len(x)}, {len(y)}, {len(rows)}); re-run preprocess")
    return Split(x=x[..., None], y=y, rows=rows)


def augment_batch(x, seed, cfg: AugmentConfig):
    """Augment a uint8 batch (B × H × W × 1) in one resampling pass.

    Rotation, zoom, translation and the optional horizontal flip are composed into a single affine
    transform per image (one bilinear resample instead of one per Keras layer), then brightness and
    contrast are applied. Random draws are stateless, keyed by ``seed`` (an int64 per batch).
    """
    import math

    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

    def uniform(i: int, lo: float, hi: float):
        return tf.random.stateless_uniform([b], seed=tf.stack([seed, tf.constant(i, tf.int64)]), minval=lo,
                                           maxval=hi)

    angle = uniform(1, -cfg.rotation * 2 * math.pi, cfg.rotation * 2 * math.pi)
    scale = uniform(2, 1 - cfg.zoom, 1 + cfg.zoom)
    tx, ty = uniform(3, -cfg.translate, cfg.translate) * w, uniform(4, -cfg.translate, cfg.translate) * h
    flip = tf.where(uniform(5, 0, 1) < 0.5, -1.0, 1.0) if cfg.horizontal_flip else tf.ones([b])
    # output pixel (u, v) reads input (x_in, y_in); c = centre:
    #   x_in = flip * (a (u - cx - tx) + s (v - cy - ty)) + cx,   y_in = -s (u - cx - tx) + a (v - cy - ty) + cy
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a, s_ = tf.cos(angle) / scale, tf.sin(angle) / scale
    transforms = tf.stack([
        flip * a, flip * s_, flip * (-a * (cx + tx) - s_ * (cy + ty)) + cx,
        -s_, a, s_ * (cx + tx) - a * (cy + ty) + cy,
        tf.zeros([b]), tf.zeros([b])], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(x, tf.float32), transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if cfg.contrast:
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * tf.reshape(uniform(6, 1 - cfg.contrast, 1 + cfg.contrast), [-1, 1, 1, 1]) + mean
    if cfg.brightness:
        out = out + tf.reshape(uniform(7, -cfg.brightness, cfg.brightness) * 255.0, [-1, 1, 1, 1])
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def dataset(split: Split, batch_size: int, *, training: bool = False, augment: AugmentConfig | None = None,
            seed: int = 0):
    """A ``tf.data`` pipeline: (shuffle) → batch → (augment, parallel) → prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if training:
        ds = ds.shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        # one int64 seed per batch, fresh every epoch, reproducible from `seed`
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: (augment_batch(xy[0], s, augment), xy[1]),
                                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
