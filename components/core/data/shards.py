"""Preprocessed shards on disk and the ``tf.data`` pipelines that feed training and evaluation.

Layout (``format: 2``, written by ``cxr preprocess`` and ``cxr external``)::

    meta.json                    classes, image_size, resize, shard_images, per split: images and shards
    <split>.csv                  the manifest rows, in array order
    <split>_y.npy                class indices (int64, whole split: 8 bytes per image)
    <split>/x-00000.npy …        uint8 pixels, N × S × S, ``shard_images`` images per file (the last one fewer)

Shards are **fixed-size** ``.npy`` files (``preprocess.shard_mb``, 64 MiB by default: ~1,300 images at
224 px): shard *i* of a split always holds rows ``i·shard_images …`` of ``<split>.csv``, whoever writes
it, so partitions of preprocess write disjoint shard files in parallel and the result is byte-identical
to one process writing them all. Why ``.npy`` and not TFRecord: evaluation, the gate and the shortcut
tests index images at random (``split.x[idx]``), which a TFRecord cannot do without reading it through;
a ``.npy`` is memory-mapped (page cache, not process memory) and read by ``tf.data`` a shard at a time,
and stays readable by numpy anywhere. A shard's path may be an ``s3://`` URI (``meta.json``
``locations``; :mod:`components.core.data.storage`).

:func:`load_split` returns ``x`` memory-mapped (one shard) or as a :class:`ChunkedArray` (several),
which indexes like a numpy array and loads only the shards an index touches; :func:`predict` runs a
model over any of them in bounded batches. :func:`dataset` streams shards through ``tf.data``
(interleaved, shard order shuffled per epoch, a bounded shuffle buffer), so memory does not grow with
the data set, and nothing is embedded in the graph (``from_tensor_slices`` of a whole split hit
TensorFlow's 2 GB graph-constant limit at about 40,000 images of 224 px).

Older shard folders (``<split>_x.npy`` whole, no ``format`` in ``meta.json``) are still read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.core.data import manifest, storage
from components.core.contract.errors import DataError
from components.core.contract.fsutil import read_json

if TYPE_CHECKING:  # annotations only: the stages that read shards do not depend on the train schema
    from components.core.contract.params.train import AugmentConfig

SPLITS = ("train", "val", "test")
FORMAT = 2
# shuffle buffer of the training stream: this many bytes of images (at least 1,024 images, at most the split)
SHUFFLE_BUFFER_BYTES = 256 * 2**20
# images per model.predict call in :func:`predict` (bounds the memory of a prediction pass)
PREDICT_BLOCK = 4096


@dataclass(frozen=True)
class ShardMeta:
    classes: list[str]
    image_size: int
    resize: str
    format: int = 1
    shard_images: int = 0
    # split -> {"images": n, "shards": k[, "locations": [uri, ...]]} (format 2)
    splits: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def shard_images(image_size: int, shard_mb: float) -> int:
    """Images per shard file for a target size in MiB (at least 1)."""
    return max(1, int(shard_mb * 2**20 // (image_size * image_size)))


def shard_ranges(n: int, per: int) -> list[tuple[int, int]]:
    """``[(start, stop), …]`` of the shards of an ``n``-image split (none for an empty split)."""
    return [(i, min(i + per, n)) for i in range(0, n, per)]


def shard_name(split: str, index: int) -> str:
    return f"{split}/x-{index:05d}.npy"


class ChunkedArray:
    """The images of a split stored in several shard files, indexed like one ``N × S × S × 1`` array.

    ``x[i]``, ``x[a:b]``, ``x[[i, j, …]]``, ``x[mask]`` (and a trailing index, ``x[i, ..., 0]``) load
    only the shards they touch (memory-mapped when local); ``np.asarray(x)`` loads everything.
    """

    def __init__(self, loaders: list[Callable[[], np.ndarray]], counts: list[int], image_size: int) -> None:
        self._loaders = loaders
        self._counts = list(counts)
        self.offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), image_size, image_size, 1)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def shards(self) -> int:
        return len(self._loaders)

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` as ``n × S × S`` (memory-mapped when local; remote shards are kept once read)."""
        if i not in self._cache:
            arr = self._loaders[i]()
            if arr.shape[1:] != self.shape[1:3] or len(arr) != self._counts[i]:
                raise DataError(f"shard {i} holds {arr.shape}, expected {self._counts[i]} images of "
                                f"{self.shape[1]}px: re-run `cxr preprocess`")
            if not isinstance(arr, np.memmap):  # a remote shard: keep it, reading it again costs a GET
                self._cache.clear()
            self._cache[i] = arr
        return self._cache[i]

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:3]), np.uint8)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for c in np.unique(which):
            sel = which == c
            out[sel] = self.shard(int(c))[idx[sel] - self.offsets[c]]
        return out[..., None]

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = len(self)
        if key is Ellipsis:
            return np.asarray(self)[(key, *rest)]
        if isinstance(key, int | np.integer):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of bounds for {n} images")
            out = self._rows(np.array([i]))[0]
        elif isinstance(key, slice):
            out = self._rows(np.arange(n)[key])
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if len(idx) != n:
                    raise IndexError(f"boolean index of length {len(idx)} for {n} images")
                idx = np.flatnonzero(idx)
            idx = idx.astype(np.int64)
            idx = np.where(idx < 0, idx + n, idx)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"index out of bounds for {n} images")
            out = self._rows(idx)
        if not rest:
            return out
        return out[rest] if isinstance(key, int | np.integer) else out[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        out = self._rows(np.arange(len(self)))
        return out.astype(dtype) if dtype is not None else out

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), size):
            yield self[start:start + size]


@dataclass
class Split:
    """One split: pixels (N × S × S × 1 uint8: an array, a memory map or a :class:`ChunkedArray`), labels,
    and its manifest rows."""

    x: np.ndarray | ChunkedArray
    y: np.ndarray
    rows: pd.DataFrame


def read_meta(shards_dir: str | Path) -> ShardMeta:
    path = Path(shards_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path} not found: run `cxr preprocess` first")
    return ShardMeta(**read_json(path))


def shard_locations(shards_dir: str | Path, meta: ShardMeta, split: str) -> list[str]:
    """The shard files of ``split``: ``meta.json``'s ``locations`` when given (URIs, or paths relative to the
    folder), else the standard names under it."""
    info = meta.splits.get(split) or {}
    names = info.get("locations") or [shard_name(split, i) for i in range(int(info.get("shards", 0)))]
    return [storage.join(shards_dir, n) for n in names]


def load_split(shards_dir: str | Path, split: str) -> Split:
    d = Path(shards_dir)
    meta = read_meta(d) if (d / "meta.json").is_file() else None
    try:
        y = np.load(d / f"{split}_y.npy")
        if meta is not None and meta.format >= 2:
            info = meta.splits.get(split)
            if info is None:
                raise DataError(f"{d / 'meta.json'} lists no {split} split: re-run `cxr preprocess`")
            ranges = shard_ranges(int(info["images"]), meta.shard_images)
            locations = shard_locations(d, meta, split)
            if len(locations) != len(ranges):
                raise DataError(f"{d}: {split} has {len(locations)} shard files for {len(ranges)} shards; re-run "
                                "preprocess")
            if len(locations) == 1 and not storage.is_remote(locations[0]):
                x = storage.load_array(locations[0])[..., None]  # one shard: a plain memory map
            else:
                x = ChunkedArray([lambda u=u: storage.load_array(u) for u in locations],
                                 [b - a for a, b in ranges], meta.image_size)
                if not len(locations):
                    x = np.zeros((0, meta.image_size, meta.image_size, 1), np.uint8)
        else:  # format 1: one array per split
            x = np.load(d / f"{split}_x.npy", mmap_mode="r")[..., None]
    except FileNotFoundError as err:
        raise DataError(f"{err.filename} not found: run `cxr preprocess` first") from None
    rows = manifest.read(d / f"{split}.csv")
    if len(x) != len(y) or len(y) != len(rows):
        raise DataError(f"{d}: {split} shards disagree in length ({len(x)}, {len(y)}, {len(rows)}); re-run preprocess")
    return Split(x=x, y=y, rows=rows)


def blocks(x, size: int = PREDICT_BLOCK) -> Iterator[np.ndarray]:
    """``x`` (array, memory map or :class:`ChunkedArray`) in consecutive in-memory blocks of ``size`` rows."""
    for start in range(0, len(x), size):
        yield np.asarray(x[start:start + size])


def predict(fn, x, batch_size: int = 64, block: int = PREDICT_BLOCK):
    """``fn.predict`` (a Keras model) over ``x`` a block at a time: memory bounded by the block, whatever
    the split's size. Returns what ``fn.predict(x)`` would (an array, or a list for several outputs)."""
    parts = [fn.predict(b, batch_size=batch_size, verbose=0) for b in blocks(x, block)]
    if not parts:
        return fn.predict(np.zeros((0, *x.shape[1:]), np.uint8), batch_size=batch_size, verbose=0)
    if isinstance(parts[0], list | tuple):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    return np.concatenate(parts)


def augment_batch(x, seed, cfg: AugmentConfig):
    """Augment a uint8 batch (B × H × W × 1) in one resampling pass.

    Rotation, zoom, translation and the optional horizontal flip are composed into a single affine
    transform per image (one bilinear resample instead of one per Keras layer; outside the film the
    ``fill``), then brightness and contrast are applied (``lighting``: additive, or fastai's in logit space).
    Each affine part and the lighting apply to an image with probability ``p_affine`` / ``p_lighting``
    (fastai's 0.75; 1 by default). Random draws are stateless, keyed by ``seed`` (an int64 per batch).
    """
    import math

    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

    def uniform(i: int, lo: float, hi: float):
        return tf.random.stateless_uniform([b], seed=tf.stack([seed, tf.constant(i, tf.int64)]), minval=lo,
                                           maxval=hi)

    def gate(i: int, p: float, value, neutral: float):
        """``value`` where an image is picked (probability ``p``), ``neutral`` elsewhere."""
        if p >= 1:
            return value
        return tf.where(uniform(i, 0, 1) < p, value, neutral)

    angle = gate(11, cfg.p_affine, uniform(1, -cfg.rotation * 2 * math.pi, cfg.rotation * 2 * math.pi), 0.0)
    if cfg.zoom_in_only:
        scale = gate(12, cfg.p_affine, uniform(2, 1.0, 1.0 + cfg.zoom), 1.0)
    else:
        scale = gate(12, cfg.p_affine, uniform(2, 1 - cfg.zoom, 1 + cfg.zoom), 1.0)
    moved = gate(13, cfg.p_affine, tf.ones([b]), 0.0)
    tx, ty = moved * uniform(3, -cfg.translate, cfg.translate) * w, moved * uniform(4, -cfg.translate, cfg.translate) * h
    if cfg.zoom_in_only:  # fastai's Zoom: the view's centre anywhere that keeps it inside the film
        tx += -scale * (1 - 1 / scale) * uniform(8, -1.0, 1.0) * (w - 1) / 2
        ty += -scale * (1 - 1 / scale) * uniform(9, -1.0, 1.0) * (h - 1) / 2
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
        fill_value=0.0, interpolation="BILINEAR", fill_mode=cfg.fill.upper())
    if cfg.lighting == "logit":
        out = _logit_lighting(out, uniform, gate, cfg)
    else:
        if cfg.contrast:
            mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
            factor = gate(14, cfg.p_lighting, uniform(6, 1 - cfg.contrast, 1 + cfg.contrast), 1.0)
            out = (out - mean) * tf.reshape(factor, [-1, 1, 1, 1]) + mean
        if cfg.brightness:
            shift = gate(15, cfg.p_lighting, uniform(7, -cfg.brightness, cfg.brightness), 0.0)
            out = out + tf.reshape(shift * 255.0, [-1, 1, 1, 1])
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _logit_lighting(out, uniform, gate, cfg: AugmentConfig):
    """fastai's ``Brightness`` then ``Contrast`` (``max_lighting`` = ``cfg.brightness`` / ``cfg.contrast``), in
    logit space as fastai composes them: ``sigmoid((logit(x) + logit(change)) · scale)``, ``change`` ~
    U(0.5(1 - b), 0.5(1 + b)), ``scale`` = exp(U(log(1 - c), -log(1 - c))), each on an image with probability
    ``p_lighting`` (else 0.5 and 1: no change)."""
    import math

    import tensorflow as tf

    eps = 1e-7
    v = tf.clip_by_value(out / 255.0, eps, 1 - eps)
    z = tf.math.log(v / (1 - v))
    if cfg.brightness:
        change = gate(15, cfg.p_lighting, uniform(7, 0.5 * (1 - cfg.brightness), 0.5 * (1 + cfg.brightness)), 0.5)
        z = z + tf.reshape(tf.math.log(change / (1 - change)), [-1, 1, 1, 1])
    if cfg.contrast:
        top = -math.log(1 - min(cfg.contrast, 0.999))
        scale = gate(14, cfg.p_lighting, tf.exp(uniform(6, -top, top)), 1.0)
        z = z * tf.reshape(scale, [-1, 1, 1, 1])
    return tf.sigmoid(z) * 255.0


def _stream_parts(x, part_rows: int) -> tuple[list[Callable[[], np.ndarray]], list[int]]:
    """Loaders of consecutive parts of ``x`` (its shard files, or slices of an in-memory array)."""
    if isinstance(x, ChunkedArray):
        return [lambda i=i: x.shard(i) for i in range(x.shards)], [int(c) for c in np.diff(x.offsets)]
    arr = x[..., 0] if np.ndim(x) == 4 else x
    ranges = shard_ranges(len(arr), part_rows) or [(0, 0)]
    return [lambda a=a, b=b: arr[a:b] for a, b in ranges], [b - a for a, b in ranges]


def dataset(split: Split, batch_size: int, *, training: bool = False, augment: AugmentConfig | None = None,
            seed: int = 0, class_weight: dict[int, float] | None = None, shard: tuple[int, int] = (1, 0),
            shuffle_buffer: int | None = None):
    """A streaming ``tf.data`` pipeline over the split's shard files: (shard order shuffled) → interleave →
    (bounded shuffle) → batch → (augment, parallel) → prefetch.

    Memory is bounded by the shards being read and the shuffle buffer (``SHUFFLE_BUFFER_BYTES``, the whole
    split when it is smaller), not by the split. ``class_weight``: yield ``(x, y, sample_weight)``
    (what Keras does for ``fit(class_weight=…)``, here so that a distributed dataset can carry it).
    ``shard=(n, i)``: keep every n-th image from the i-th (a worker's share in multi-worker training), the
    same number on every worker.
    """
    import tensorflow as tf

    size = int(split.x.shape[1])
    loaders, counts = _stream_parts(split.x, max(1, SHUFFLE_BUFFER_BYTES // 4 // (size * size)))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    y_all = np.asarray(split.y, dtype=np.int64)

    def load(i):
        i = int(i)
        return np.ascontiguousarray(loaders[i](), dtype=np.uint8), y_all[offsets[i]:offsets[i + 1]]

    def part(i):
        x, y = tf.numpy_function(load, [i], (tf.uint8, tf.int64), stateful=False)
        x.set_shape((None, size, size))
        y.set_shape((None,))
        return tf.data.Dataset.from_tensor_slices((x[..., None], y))

    ids = tf.data.Dataset.range(len(loaders))
    if training and len(loaders) > 1:
        ids = ids.shuffle(len(loaders), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(loaders), 4)
    if training and cycle > 1:
        ds = ids.interleave(part, cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True)
    else:
        ds = ids.flat_map(part)
    count = len(y_all)
    if shard[0] > 1:
        # every worker the same number of images (the first len % n of the split's order are left out of
        # this pass): the workers' steps, and so their collectives, must line up
        count = len(y_all) // shard[0]
        ds = ds.shard(shard[0], shard[1]).take(count)
    # a known length: Keras then runs exactly the steps there are (with an unknown one, it counted an extra
    # optimizer step per epoch, which moved one-cycle schedules ahead of their formula)
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if training:
        n = len(y_all)
        buffer = shuffle_buffer or max(1024, SHUFFLE_BUFFER_BYTES // (size * size))
        ds = ds.shuffle(max(1, min(n, buffer)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        # one int64 seed per batch, fresh every epoch, reproducible from `seed`
        # (each worker its own stream of seeds: the same seed would give every worker's k-th batch the same warp)
        seeds = tf.data.Dataset.random(seed=seed + 7919 * shard[1], rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: (augment_batch(xy[0], s, augment), xy[1]),
                                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if class_weight:
        table = tf.constant([float(class_weight.get(i, 0.0)) for i in range(max(class_weight) + 1)], tf.float32)
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
