"""Preprocess: decode every split's images once into fixed-size uint8 shard files at ``train.image_size``.

Output (:mod:`components.core.data.shards`, format 2): ``<split>/x-NNNNN.npy`` (``shard_images`` × S × S
uint8, from ``preprocess.shard_mb``), ``<split>_y.npy`` (class index), ``<split>.csv`` (the manifest rows, in
the same order) and ``meta.json`` (classes, size, resize mode, shards per split). Epochs then read
arrays, never full-resolution JPEGs. Decoding runs in ``preprocess.workers`` processes, one shard at a
time, so memory holds one shard, not a split.

**Partitions** (``scale.partitions``): the shard files of all splits, in order, are cut into that many
contiguous runs; part *p* decodes and writes only its run (:func:`run_partition`) and :func:`merge`
gathers the files and writes the index. Shard *i* always holds the same rows, so the shards do not depend
on the number of parts. ``cxr preprocess`` / ``dvc repro`` run the parts one after the other; the KFP
pipeline runs them as parallel tasks (``dsl.ParallelFor``) and the merge as the ``preprocess`` task.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from components.core.contract.errors import DataError
from components.core.contract.params_view import under_spec
from components.core.contract.spec import Partitioned, Port, StepSpec

log = logging.getLogger(__name__)

SPEC = StepSpec(
    name="preprocess",
    help="decode each split once into uint8 shards at train.image_size",
    params=("data.classes", "train.image_size", "preprocess", "validate.max_pixels", "scale.partitions"),
    inputs=(Port("splits", "data/splits", "folder with train.csv, val.csv, test.csv"),
            Port("images", "data/raw", "image root the manifests' paths are relative to")),
    outputs=(Port("out", "data/shards", "output folder: uint8 .npy shards per split"),),
    partitioned=Partitioned("decode one run of the shard files", merge_inputs=("splits",)),
)

PART_FILE = "part.json"
DECODE_BATCH = 1024  # images decoded before they are written into their shard file


def _frames(params, splits_dir: Path) -> dict:
    """Every split's paths and labels (row order = array order), labels checked against ``data.classes``. Only
    those two columns: the whole manifest of 100,000 images is ~170 MB in pandas, its paths and labels ~15 MB."""
    from components.core.data import manifest
    from components.core.data.shards import SPLITS

    classes = list(params.data.classes)
    frames = {}
    for split in SPLITS:
        df = manifest.read(splits_dir / f"{split}.csv", columns=("path", "label")).reset_index(drop=True)
        unknown = sorted(set(df["label"]) - set(classes))
        if unknown:
            raise DataError(f"{splits_dir / f'{split}.csv'}: labels {unknown} are not in data.classes {classes}")
        frames[split] = df
    return frames


def plan(frames: dict, per: int, parts: int) -> list[list[tuple[str, int, int, int]]]:
    """The shard files ``(split, index, start, stop)`` of every split in order, cut into ``parts`` contiguous
    runs of nearly equal length (a run may be empty when there are fewer shards than parts)."""
    from components.core.data.shards import shard_ranges

    units = [(split, i, a, b) for split, df in frames.items() for i, (a, b) in enumerate(shard_ranges(len(df), per))]
    bounds = np.linspace(0, len(units), parts + 1).round().astype(int)
    return [units[bounds[p]:bounds[p + 1]] for p in range(parts)]


def _failure_message(failed: list[tuple[str, str, str]]) -> str:
    split = failed[0][0]
    mine = [(p, r) for s, p, r in failed if s == split]
    listed = "\n".join(f"  {p}: {r}" for p, r in mine[:20])
    return (f"{len(mine)} images of the {split} split could not be decoded (validate should have quarantined them; "
            f"re-run `cxr validate`):\n{listed}")


def _decode_units(units, frames: dict, images_dir: Path, out_dir: Path, size: int, mode: str, max_pixels: int,
                  workers: int) -> list[tuple[str, str, str]]:
    """Decode and write the shard files ``units`` into ``out_dir``; return the failures (split, path, reason)."""
    from concurrent.futures import ProcessPoolExecutor

    from components.core.data import storage
    from components.core.data.images import decode_files
    from components.core.data.shards import shard_name

    failed: list[tuple[str, str, str]] = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for split, index, start, stop in units:
            dest = out_dir / shard_name(split, index)
            dest.parent.mkdir(parents=True, exist_ok=True)
            # the shard file is filled a batch at a time through a memory map: memory holds one batch, not a shard
            shard = np.lib.format.open_memmap(dest.with_name(f".{dest.name}.tmp"), mode="w+", dtype=np.uint8,
                                              shape=(stop - start, size, size))
            for a in range(start, stop, DECODE_BATCH):
                b = min(a + DECODE_BATCH, stop)
                paths = list(frames[split]["path"].iloc[a:b])
                decoded = decode_files([storage.join(images_dir, p) for p in paths], size, mode, max_pixels,
                                       workers, f"preprocess {split} shard {index}", pool=pool)
                bad = [(split, p, r) for p, r in zip(paths, decoded, strict=True) if isinstance(r, str)]
                failed += bad
                if not failed:
                    shard[a - start:b - start] = np.stack(decoded)
            shard.flush()
            del shard
            os.replace(dest.with_name(f".{dest.name}.tmp"), dest)
    finally:
        if pool is not None:
            pool.shutdown()
    return failed


@under_spec(SPEC)
def run_partition(params, part: int, splits: str | Path, images: str | Path, partial: str | Path) -> dict:
    """Decode part ``part`` of ``scale.partitions`` (its run of shard files) into the folder ``partial``."""
    from components.core.contract.fsutil import atomic_path, write_json
    from components.core.data.shards import shard_images

    parts, size = params.scale.partitions, params.train.image_size
    if not 0 <= part < parts:
        raise DataError(f"part {part} is outside 0..{parts - 1} (scale.partitions {parts})")
    frames = _frames(params, Path(splits))
    per = shard_images(size, params.preprocess.shard_mb)
    units = plan(frames, per, parts)[part]
    workers = min(params.preprocess.workers, os.cpu_count() or 1)
    with atomic_path(Path(partial), directory=True) as tmp:
        failed = _decode_units(units, frames, Path(images), tmp, size, params.preprocess.resize,
                               params.validate_.max_pixels, workers)
        if failed:
            raise DataError(_failure_message(failed))
        summary = {"part": part, "parts": parts, "shards": [[s, i] for s, i, _, _ in units],
                   "images": sum(b - a for _, _, a, b in units)}
        write_json(tmp / PART_FILE, summary)
    log.info("part %d/%d: %d shard files, %d images", part + 1, parts, len(units), summary["images"])
    return summary


def _place(src: Path, dest: Path) -> None:
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # same file system (local runs, kfp.local): no copy
    except OSError:
        shutil.copyfile(src, dest)


@under_spec(SPEC)
def merge(params, partials: list[str | Path], splits: str | Path, out: str | Path) -> dict:
    """Gather every part's shard files into ``out`` and write the index (csv, labels, meta.json)."""
    import shutil

    from components.core.contract.fsutil import atomic_path, read_json, write_json
    from components.core.data.shards import FORMAT, ShardMeta, shard_images, shard_name, shard_ranges

    size, mode, classes = params.train.image_size, params.preprocess.resize, list(params.data.classes)
    frames = _frames(params, Path(splits))
    per = shard_images(size, params.preprocess.shard_mb)
    want = {(s, i) for s, df in frames.items() for i in range(len(shard_ranges(len(df), per)))}
    got: dict[tuple[str, int], Path] = {}
    for d in map(Path, partials):
        info = read_json(d / PART_FILE)
        for s, i in info["shards"]:
            if (s, i) in got:
                raise DataError(f"shard {s} {i} was written by two parts ({got[(s, i)].parent} and {d})")
            got[(s, i)] = d / shard_name(s, i)
    if set(got) != want:
        missing = sorted(want - set(got))[:5]
        raise DataError(f"the parts do not cover the shards (missing {missing}, unexpected "
                        f"{sorted(set(got) - want)[:5]}): were they made with the same scale.partitions and "
                        "preprocess.shard_mb?")
    summary: dict = {"image_size": size, "resize": mode, "shard_images": per, "parts": len(partials), "splits": {}}
    splits_meta = {}
    with atomic_path(Path(out), directory=True) as tmp:
        for split, df in frames.items():
            n_shards = len(shard_ranges(len(df), per))
            for i in range(n_shards):
                _place(got[(split, i)], tmp / shard_name(split, i))
            y = np.array([classes.index(lbl) for lbl in df["label"]], dtype=np.int64)
            np.save(tmp / f"{split}_y.npy", y)
            # the split's manifest as split wrote it: its row order is the arrays' order
            shutil.copyfile(Path(splits) / f"{split}.csv", tmp / f"{split}.csv")
            splits_meta[split] = {"images": len(df), "shards": n_shards}
            summary["splits"][split] = {"images": len(df), "bytes": len(df) * size * size, "shards": n_shards}
            log.info("%s: %d images in %d shard files of up to %d", split, len(df), n_shards, per)
        write_json(tmp / "meta.json", ShardMeta(classes=classes, image_size=size, resize=mode, format=FORMAT,
                                                shard_images=per, splits=splits_meta).as_dict())
    return summary


@under_spec(SPEC)
def run(params, splits: str | Path, images: str | Path, out: str | Path) -> dict:
    """Decode every image of ``splits`` (paths under ``images``) once into shards under ``out``: every part of
    ``scale.partitions`` in turn, then the merge."""
    from components.core.contract.fsutil import partition_folders

    with partition_folders(out, params.scale.partitions) as partials:
        for i, folder in enumerate(partials):
            run_partition(params, i, splits, images, folder)
        return merge(params, partials, splits, out)
