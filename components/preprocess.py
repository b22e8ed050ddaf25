"""Preprocess: decode every split's images once into uint8 shards at ``train.image_size``.

Each split becomes ``<split>_x.npy`` (N × S × S, uint8), ``<split>_y.npy`` (class index) and
``<split>.csv`` (the manifest rows, in the same order), plus ``meta.json`` (classes, size, resize
mode). Epochs then read arrays, never full-resolution JPEGs. Decoding runs in parallel processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from components.core.errors import DataError
from components.core.params_view import under_spec
from components.core.spec import Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="preprocess",
    help="decode each split once into uint8 shards at train.image_size",
    params=("data.classes", "train.image_size", "preprocess", "validate.max_pixels"),
    inputs=(Port("splits", "data/splits", "folder with train.csv, val.csv, test.csv"),
            Port("images", "data/raw", "image root the manifests' paths are relative to")),
    outputs=(Port("out", "data/shards", "output folder: uint8 .npy shards per split"),),
    resources=("2", "8", "4G", "16G"),
)


@under_spec(SPEC)
def run(params, splits: str | Path, images: str | Path, out: str | Path) -> dict:
    """Decode every image of ``splits`` (paths under ``images``) once into shards under ``out``."""
    from components.core import manifest
    from components.core.fsutil import atomic_path, write_json
    from components.core.images import decode_files
    from components.core.shards import SPLITS, ShardMeta

    splits_dir, images_dir, out_dir = Path(splits), Path(images), Path(out)
    size, mode = params.train.image_size, params.preprocess.resize
    classes = list(params.data.classes)
    workers = min(params.preprocess.workers, os.cpu_count() or 1)
    summary: dict = {"image_size": size, "resize": mode, "splits": {}}
    with atomic_path(out_dir, directory=True) as tmp:
        for split in SPLITS:
            df = manifest.read(splits_dir / f"{split}.csv").reset_index(drop=True)
            unknown = sorted(set(df["label"]) - set(classes))
            if unknown:
                raise DataError(f"{splits_dir / f'{split}.csv'}: labels {unknown} are not in data.classes {classes}")
            decoded = decode_files([str(images_dir / p) for p in df["path"]], size, mode,
                                  params.validate_.max_pixels, workers, f"preprocess {split}")
            failed = [(p, r) for p, r in zip(df["path"], decoded, strict=True) if isinstance(r, str)]
            if failed:
                listed = "\n".join(f"  {p}: {r}" for p, r in failed[:20])
                raise DataError(f"{len(failed)} images of the {split} split could not be decoded (validate should "
                                f"have quarantined them; re-run `cxr validate`):\n{listed}")
            x = np.stack(decoded) if decoded else np.zeros((0, size, size), np.uint8)
            y = np.array([classes.index(lbl) for lbl in df["label"]], dtype=np.int64)
            np.save(tmp / f"{split}_x.npy", x)
            np.save(tmp / f"{split}_y.npy", y)
            manifest.write(df, tmp / f"{split}.csv", sort=False)
            summary["splits"][split] = {"images": len(df), "bytes": int(x.nbytes)}
            log.info("%s: %d images -> %s %s", split, len(df), x.shape, x.dtype)
        write_json(tmp / "meta.json", ShardMeta(classes=classes, image_size=size, resize=mode).as_dict())
    return summary
