import numpy as np
import tensorflow as tf

from components.core.config import AugmentConfig
from components.core.shards import Split, augment_batch, dataset

OFF = {"rotation": 0, "zoom": 0, "translate": 0, "brightness": 0, "contrast": 0}


def bars(n=6):
    x = np.zeros((n, 32, 32, 1), np.uint8)
    x[:, 8:24, 4:10] = 255  # an off-centre bar: a flip moves it to the other side
    return x


def run(x, seed, **cfg):
    return augment_batch(tf.constant(x), tf.constant(seed, tf.int64), AugmentConfig(**{**OFF, **cfg})).numpy()


def test_no_augmentation_is_the_identity():
    x = bars()
    assert (run(x, 1) == x).all()


def test_flip_only_mirrors_or_keeps_each_image():
    x = bars(16)
    out = run(x, 3, horizontal_flip=True)
    flipped = [(o == xi[:, ::-1]).all() for o, xi in zip(out, x, strict=True)]
    kept = [(o == xi).all() for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_geometry_moves_pixels_and_keeps_dtype_shape_and_mass_roughly():
    x = bars()
    out = run(x, 7, rotation=0.05, zoom=0.1, translate=0.1)
    assert out.shape == x.shape and out.dtype == np.uint8 and not (out == x).all()
    assert 0.5 < out.astype(float).sum() / x.astype(float).sum() < 1.6


def test_seeded_and_varied():
    x = bars()
    assert (run(x, 5, rotation=0.1, brightness=0.2) == run(x, 5, rotation=0.1, brightness=0.2)).all()
    assert not (run(x, 5, rotation=0.1) == run(x, 6, rotation=0.1)).all()


def test_only_the_training_split_is_augmented_and_epochs_differ():
    x = bars(8)
    split = Split(x, np.arange(8), None)
    plain = np.concatenate([b[0].numpy() for b in dataset(split, 4)])
    assert (plain == x).all()  # evaluation order and pixels untouched
    ds = dataset(split, 8, training=True, augment=AugmentConfig(), seed=0)
    e1 = next(iter(ds))[0].numpy()
    e2 = next(iter(ds))[0].numpy()
    assert not (e1 == e2).all()
