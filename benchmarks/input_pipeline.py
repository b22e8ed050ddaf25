"""Input pipeline: images/s delivered to the model at N px from full-resolution X-rays.

(a) Keras ImageDataGenerator.flow_from_directory (seed 1), (b) keras.utils.image_dataset_from_directory,
(c) our tf.data pipeline over the preprocessed uint8 shards (epochs after the first), plus the
one-time cost of `cxr preprocess`. Ratios are against (a), measured in the same run.

    python -m benchmarks.input_pipeline --files 2000 --size 224 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.common import CLASSES, machine, repeated_sample, table, timed


def consume_keras_iterator(it) -> int:
    n = 0
    for i in range(len(it)):
        x, _ = it[i]
        n += len(x)
    return n


def consume_dataset(ds) -> int:
    return sum(int(x.shape[0]) for x, _ in ds)


def run(files: int, size: int, epochs: int, batch: int, workdir: Path) -> list[list]:
    import keras
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from components import preprocess
    from components.core.contract.params.schema import parse_params
    from components.core.data import shards

    tree = repeated_sample(workdir / "tree", files)
    rows = []

    # (a) seed 1: ImageDataGenerator (rescale + the seed's augmentation), RGB 224, decoded every epoch
    gen = ImageDataGenerator(rescale=1 / 255, rotation_range=10, zoom_range=0.1)
    it = gen.flow_from_directory(str(tree), target_size=(size, size), batch_size=batch, class_mode="sparse", seed=0)
    times = [timed(lambda: consume_keras_iterator(it))[0] for _ in range(epochs)]
    base = files / min(times)
    rows.append(["(a) ImageDataGenerator.flow_from_directory", files / times[0], base, 1.0])

    # (b) image_dataset_from_directory (decodes every epoch, parallel map, no augmentation)
    ds = keras.utils.image_dataset_from_directory(str(tree), image_size=(size, size), batch_size=batch, seed=0,
                                                  color_mode="grayscale")
    ds = ds.prefetch(8)
    times = [timed(lambda: consume_dataset(ds))[0] for _ in range(epochs)]
    rows.append(["(b) image_dataset_from_directory", files / times[0], files / min(times[1:] or times),
                 files / min(times[1:] or times) / base])

    # (c) ours: decode once (`cxr preprocess`), then tf.data over uint8 shards
    splits = workdir / "splits"
    splits.mkdir()
    paths = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    df = pd.DataFrame({"path": paths, "label": [p.split("/")[0] for p in paths],
                       "patient_id": [f"p{i}" for i in range(len(paths))]})
    for name in ("train", "val", "test"):
        (df if name == "train" else df.head(1)).to_csv(splits / f"{name}.csv", index=False)
    p = parse_params({"data": {"classes": CLASSES}, "train": {"image_size": size, "backbone": "small_cnn",
                                                             "weights": "none"},
                      "preprocess": {"workers": os.cpu_count() or 1}})
    prep_s, _ = timed(lambda: preprocess.run(p, splits, tree, workdir / "shards"))
    rows.append(["`cxr preprocess` (one time, all cores)", files / prep_s, "", ""])
    train = shards.load_split(workdir / "shards", "train")
    for label, aug in (("(c) ours: shards + tf.data, augmentation on", p.train.augment),
                       ("(c) ours: shards + tf.data, no augmentation", None)):
        ds = shards.dataset(train, batch, training=True, augment=aug, seed=0)
        times = [timed(lambda ds=ds: consume_dataset(ds))[0] for _ in range(epochs)]
        rows.append([label, files / times[0], files / min(times[1:] or times), files / min(times[1:] or times) / base])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.files, args.size, args.epochs, args.batch, Path(tmp))
    print(f"input pipeline, {args.files} files of ../shared/data/cxr-sample, {args.size}px, batch {args.batch}; "
          f"{machine()}")
    print(table(["pipeline", "img/s epoch 1", "img/s later epochs", "ratio vs (a)"], rows))


if __name__ == "__main__":
    main()
