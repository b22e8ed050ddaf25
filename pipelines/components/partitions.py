"""The bookkeeping component of the partitioned steps: the part numbers a ``dsl.ParallelFor`` fans out over."""
# typing.List, as KFP's docs spell it (kfp 2.17 takes list[int] too; the compiled source has List)
# ruff: noqa: UP006, UP035

from typing import List


def partitions(scale: dict) -> List[int]:
    """The part numbers of a partitioned step: 0 … ``scale.partitions`` - 1 (the ParallelFor's items).

    Args:
        scale: the ``scale`` section of params.yaml (reads partitions).

    Returns:
        the part numbers.
    """
    return list(range(int(scale.get("partitions", 1))))
