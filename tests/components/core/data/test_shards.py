import numpy as np
import pytest
import tensorflow as tf

from components.core.contract.params.train import AugmentConfig
from components.core.data.shards import Split, augment_batch, dataset

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


def chunked(n=10, per=3, size=8):
    """A ChunkedArray over in-memory shards of ``per`` images (image i is filled with the value i)."""
    from components.core.data.shards import ChunkedArray, shard_ranges

    full = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], size, 1).repeat(size, 2)
    ranges = shard_ranges(n, per)
    return ChunkedArray([lambda a=a, b=b: full[a:b] for a, b in ranges], [b - a for a, b in ranges], size), full


def test_a_chunked_array_indexes_like_one_array():
    x, full = chunked()
    ref = full[..., None]
    assert x.shape == (10, 8, 8, 1) and len(x) == 10 and x.ndim == 4 and x.shards == 4
    assert (x[4] == ref[4]).all() and (x[-1] == ref[-1]).all()
    assert (x[2:8] == ref[2:8]).all() and (x[::3] == ref[::3]).all()
    idx = [9, 0, 4, 4, 7]
    assert (x[idx] == ref[idx]).all() and (x[np.array(idx)] == ref[idx]).all()
    mask = np.arange(10) % 4 == 1
    assert (x[mask] == ref[mask]).all()
    assert (x[5, ..., 0] == ref[5, ..., 0]).all() and (x[[1, 2], ..., 0] == ref[[1, 2], ..., 0]).all()
    assert (np.asarray(x) == ref).all()
    with pytest.raises(IndexError):
        x[10]


def test_predict_runs_in_bounded_blocks():
    from components.core.data.shards import predict

    class Model:  # records the size of every call
        def __init__(self):
            self.calls = []

        def predict(self, b, batch_size, verbose):
            self.calls.append(len(b))
            return b.reshape(len(b), -1)[:, :1].astype(float)

    x, _ = chunked(n=11, per=4)
    m = Model()
    out = predict(m, x, block=5)
    assert m.calls == [5, 5, 1] and (out[:, 0] == np.arange(11)).all()


def test_the_stream_reads_every_image_once_with_its_label():
    x, _ = chunked(n=23, per=5)
    split = Split(x, np.arange(23) % 3, None)
    plain = [(int(a[0, 0, 0]), int(b)) for xb, yb in dataset(split, 4)
             for a, b in zip(xb.numpy(), yb.numpy(), strict=True)]
    assert plain == [(i, i % 3) for i in range(23)]  # evaluation: in order
    seen = []
    for xb, yb in dataset(split, 4, training=True, seed=1):
        seen += [(int(a[0, 0, 0]), int(b)) for a, b in zip(xb.numpy(), yb.numpy(), strict=True)]
    assert sorted(seen) == plain and seen != plain  # training: all of them, shuffled
    shares = [sorted(int(a[0, 0, 0]) for xb, _ in dataset(split, 4, training=True, shard=(2, i)) for a in xb.numpy())
              for i in (0, 1)]
    # disjoint and the same size (the workers' steps must line up): 11 each, one image of 23 left out of the pass
    assert len(shares[0]) == len(shares[1]) == 11 and not set(shares[0]) & set(shares[1])
    weighted = next(iter(dataset(split, 23, class_weight={0: 1.0, 1: 2.0, 2: 0.5})))
    assert list(weighted[2].numpy()) == [(1.0, 2.0, 0.5)[int(c)] for c in weighted[1].numpy()]


def test_fastai_zoom_is_in_only_and_reflection_fills_what_the_warp_uncovers():
    x = np.full((16, 32, 32, 1), 200, np.uint8)
    zoomed = run(x, 3, zoom=0.1, zoom_in_only=True)  # zooming in never shows the outside of the film
    assert (zoomed == 200).all()
    out = run(x, 3, zoom=0.3)  # ours zooms out too: black corners
    assert (out == 0).any()
    assert (run(x, 3, rotation=0.1, fill="reflect") > 150).all()  # rotated, corners reflected, not black
    assert (run(x, 3, rotation=0.1) == 0).any()


def test_logit_lighting_is_fastais_formula_and_p_gates_each_image():
    x = np.repeat(np.linspace(10, 245, 16, dtype=np.uint8)[:, None, None, None], 8, axis=1).repeat(8, axis=2)
    out = run(x, 9, brightness=0.2, lighting="logit").astype(float)
    v = x[:, 0, 0, 0] / 255.0
    change = np.log(out[:, 0, 0, 0] / (255 - out[:, 0, 0, 0])) - np.log(v / (1 - v))  # logit shift per image
    bound = np.log(0.6 / 0.4)  # logit(0.5 (1 + 0.2))
    assert (np.abs(change) <= bound + 0.05).all() and np.abs(change).max() > bound / 3
    mid = np.full((64, 4, 4, 1), 128, np.uint8)  # at mid grey fastai's 0.2 moves a pixel by at most 0.1 * 255
    assert np.abs(run(mid, 1, brightness=0.2, lighting="logit").astype(int) - 128).max() <= 26
    gated = run(mid, 1, brightness=0.2, contrast=0.2, p_lighting=0.75)
    unchanged = (gated == 128).reshape(64, -1).all(axis=1).mean()
    assert 0.1 < unchanged < 0.45  # about a quarter of the images keep their pixels
    assert (run(mid, 1, brightness=0.2, rotation=0.1, p_lighting=0.0, p_affine=0.0) == mid).all()
