# typing.List, as KFP's docs spell an artifact list (kfp 2.17 takes list[...] too; the compiled source has List)
# ruff: noqa: UP006, UP035
"""The KFP components of the ``preprocess`` step, a partitioned one:
``preprocess_partition`` (one part, under a ``dsl.ParallelFor``) and ``preprocess`` (the merge).

Its contract is ``SPEC`` in ``components/preprocess.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from typing import List

from kfp.dsl import Dataset, Input, Output


def preprocess_partition(
    data: dict,
    validate: dict,
    preprocess: dict,
    train: dict,
    scale: dict,
    splits: Input[Dataset],
    images: Input[Dataset],
    part: int,
    partial: Output[Dataset],
) -> str:
    """One part of preprocess (``scale.partitions``): decode one run of the shard files.

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        validate: the ``validate`` section of params.yaml (reads max_pixels).
        preprocess: the ``preprocess`` section of params.yaml (the whole section).
        train: the ``train`` section of params.yaml (reads image_size).
        scale: the ``scale`` section of params.yaml (reads partitions).
        splits: input from split.out: folder with train.csv, val.csv, test.csv (``data/splits`` under DVC).
        images: input from ingest.out: image root the manifests' paths are relative to (``data/raw`` under DVC).
        part: which part of ``scale.partitions`` this task does (0-based): decode one run of the shard files.
        partial: output, this part's results (read by the merge).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('preprocess', locals(), phase='partition')


def preprocess(
    data: dict,
    validate: dict,
    preprocess: dict,
    train: dict,
    scale: dict,
    splits: Input[Dataset],
    partials: Input[List[Dataset]],
    out: Output[Dataset],
) -> str:
    """Decode each split once into uint8 shards at train.image_size. Merges the parts.

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        validate: the ``validate`` section of params.yaml (reads max_pixels).
        preprocess: the ``preprocess`` section of params.yaml (the whole section).
        train: the ``train`` section of params.yaml (reads image_size).
        scale: the ``scale`` section of params.yaml (reads partitions).
        splits: input from split.out: folder with train.csv, val.csv, test.csv (``data/splits`` under DVC).
        partials: every part's results, in part order (the ParallelFor's outputs, collected).
        out: output, output folder: uint8 .npy shards per split (``data/shards`` under DVC).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('preprocess', locals(), phase='merge')
