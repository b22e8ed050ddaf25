"""The bookkeeping component of the partitioned steps: the part numbers a ``dsl.ParallelFor`` fans out over."""
# KFP reads this function's return annotation: List[int], not list[int], keeps the compiled source as it was
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
