"""Training speed: `cxr train` (tf.data over shards, augmentation, per-epoch checkpoints) vs the
compute bound on this machine (model.fit on in-memory arrays, same model, same batch).

Images come from ../shared/data/cxr-sample, preprocessed once. Steady-state img/s excludes the first
epoch (graph tracing). Also: the head-only phase on cached backbone features.

    python -m benchmarks.train_step --configs vgg16@128 mobilenetv3small@224 --images 256 --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import CLASSES, machine, repeated_sample, table


def prepare(workdir: Path, n: int, size: int) -> Path:
    from components import preprocess
    from components.core.contract.params.schema import parse_params

    tree = repeated_sample(workdir / f"tree{size}", n)
    splits = workdir / f"splits{size}"
    splits.mkdir(exist_ok=True)
    paths = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    df = pd.DataFrame({"path": paths, "label": [p.split("/")[0] for p in paths],
                       "patient_id": [f"p{i}" for i in range(len(paths))]})
    df.to_csv(splits / "train.csv", index=False)
    df.head(32).to_csv(splits / "val.csv", index=False)
    df.head(8).to_csv(splits / "test.csv", index=False)
    p = parse_params({"data": {"classes": CLASSES}, "train": {"image_size": size, "backbone": "small_cnn",
                                                             "weights": "none"}})
    out = workdir / f"shards{size}"
    if not out.exists():
        preprocess.run(p, splits, tree, out)
    return out


def train_params(backbone: str, size: int, epochs: int, batch: int, trainable: str):
    from components.core.contract.params.schema import parse_params

    return parse_params({"data": {"classes": CLASSES}, "train": {
        "backbone": backbone, "weights": "none", "image_size": size, "batch_size": batch,
        "phases": [{"epochs": epochs, "trainable": trainable, "lr": 1e-4}],
        "early_stopping": {"patience": 100}}})


class EpochTimer:
    def __init__(self):
        import keras

        outer = self
        self.times: list[float] = []

        class _CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.times.append(time.perf_counter() - outer._t)

        self.callback = _CB()


def bound(params, shards_dir: Path, trainable: str) -> float:
    """model.fit on in-memory numpy arrays: no input pipeline, no checkpoints, no validation."""
    import keras

    from components.core.data import shards
    from components.core.model import models

    train = shards.load_split(shards_dir, "train")
    keras.utils.set_random_seed(0)
    model = models.build_model(params.train, len(CLASSES))
    models.set_trainable(model, trainable, params.train.freeze_batchnorm)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    timer = EpochTimer()
    model.fit(train.x, train.y, batch_size=params.train.batch_size, epochs=params.train.phases[0].epochs,
              verbose=0, callbacks=[timer.callback], shuffle=True)
    return len(train.y) / float(np.median(timer.times[1:]))


def ours(params, shards_dir: Path, workdir: Path) -> tuple[float, float, float]:
    """`cxr train` as users run it (minus MLflow): steady-state img/s, with and without checkpoint time."""
    from components import train

    out = workdir / f"models-{params.train.backbone}"
    train.run(params, shards_dir, out, workdir / "state", track=False)
    hist = pd.read_csv(out / "history.csv").iloc[1:]
    n = len(np.load(shards_dir / "train_y.npy"))
    fit_only = n / hist["seconds"].median()
    with_ckpt = n / (hist["seconds"] + hist["checkpoint_seconds"]).median()
    return fit_only, with_ckpt, float(hist["checkpoint_seconds"].median())


def head_on_cached_features(params, shards_dir: Path) -> tuple[float, float, float]:
    """Head-only phase: full model with a frozen backbone vs a head trained on cached features."""
    import keras

    from components.core.data import shards
    from components.core.model import models

    train = shards.load_split(shards_dir, "train")
    epochs, batch = params.train.phases[0].epochs, params.train.batch_size
    keras.utils.set_random_seed(0)
    model = models.build_model(params.train, len(CLASSES))
    models.set_trainable(model, "head")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    timer = EpochTimer()
    model.fit(train.x, train.y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer.callback])
    full = len(train.y) / float(np.median(timer.times[1:]))
    extractor = keras.Model(model.inputs, model.get_layer(models.FEATURES_NAME).output)
    t = time.perf_counter()
    feats = extractor.predict(train.x, batch_size=batch, verbose=0)
    extract_s = time.perf_counter() - t
    head_in = keras.Input(feats.shape[1:])
    x = head_in
    for name in ("head_dense", "head_dropout", models.LOGITS_NAME, models.OUTPUT_NAME):
        x = model.get_layer(name)(x)
    head = keras.Model(head_in, x)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    timer = EpochTimer()
    head.fit(feats, train.y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer.callback])
    cached = len(train.y) / float(np.median(timer.times[1:]))
    return full, cached, extract_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["vgg16@128", "mobilenetv3small@224"])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--trainable", default="last:6", help="fine-tuning phase measured (seed 1: last:6)")
    args = ap.parse_args(argv)
    rows, head_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for cfg in args.configs:
            backbone, size = cfg.split("@")
            shards_dir = prepare(work, args.images, int(size))
            p = train_params(backbone, int(size), args.epochs, args.batch, args.trainable)
            b = bound(p, shards_dir, args.trainable)
            fit_only, with_ckpt, ckpt_s = ours(p, shards_dir, work)
            rows.append([cfg, args.trainable, b, fit_only, fit_only / b, with_ckpt, with_ckpt / b, ckpt_s])
            full, cached, extract_s = head_on_cached_features(p, shards_dir)
            head_rows.append([cfg, full, cached, cached / full, extract_s])
    print(f"training speed, {args.images} images, batch {args.batch}, {args.epochs} epochs (first excluded); "
          f"{machine()}")
    print(table(["config", "trainable", "bound img/s (fit on arrays)", "cxr train img/s (fit+val)",
                 "ratio", "cxr train img/s incl. checkpoint", "ratio", "checkpoint s/epoch"], rows))
    print()
    print(table(["config", "head-only, full model img/s", "head on cached features img/s", "speed-up",
                 "feature extraction s (once)"], head_rows))


if __name__ == "__main__":
    main()
