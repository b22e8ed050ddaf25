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


def load_split(shards_dir: str | Path, split: str, mmap: bool = False) -> Split:
    d = Path(shards_dir)
    try:
        x = np.load(d / f"{split}_x.npy", mmap_mode="r" if mmap else None)
        y = np.load(d / f"{split}_y.npy")
    except FileNotFoundError as err:
        raise DataError(f"{err.filename} not found: run `cxr preprocess` first") from None
    rows = manifest.read(d / f"{split}.csv")
    if len(x) != len(y) or len(y) != len(rows):
        raise DataError(f"{d}: {split} shards disagree in length ({len(x)}, {len(y)}, {len(rows)}); re-run preprocess")
    return Split(x=x[..., None], y=y, rows=rows)


def augmenter(cfg: AugmentConfig, seed: int):
    """Keras preprocessing layers for on-the-fly augmentation (training split only)."""
    import keras

    layers = keras.layers
    steps = []
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 1))
    if cfg.translate:
        steps.append(layers.RandomTranslation(cfg.translate, cfg.translate, fill_mode="constant", seed=seed + 2))
    if cfg.brightness:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, seed=seed + 4))
    if cfg.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(steps, name="augment") if steps else None


def dataset(split: Split, batch_size: int, *, training: bool = False, augment: AugmentConfig | None = None,
            seed: int = 0):
    """A ``tf.data`` pipeline: (shuffle) → batch → (augment, parallel) → prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if training:
        ds = ds.shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    aug = augmenter(augment, seed) if (training and augment is not None) else None
    if aug is not None:
        def apply(x, y):
            x = aug(tf.cast(x, tf.float32), training=True)
            return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y

        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
