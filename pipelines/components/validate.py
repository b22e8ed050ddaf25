# typing.List, as KFP's docs spell an artifact list (kfp 2.17 takes list[...] too; the compiled source has List)
# ruff: noqa: UP006, UP035
"""The KFP components of the ``validate`` step, a partitioned one:
``validate_partition`` (one part, under a ``dsl.ParallelFor``) and ``validate`` (the merge).

Its contract is ``SPEC`` in ``components/validate.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from typing import List

from kfp.dsl import HTML, Dataset, Input, Metrics, Output


def validate_partition(
    data: dict,
    validate: dict,
    scale: dict,
    raw: Input[Dataset],
    part: int,
    partial: Output[Dataset],
) -> str:
    """One part of validate (``scale.partitions``): read one run of the manifest's files (sha256, header,
    decode).

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        validate: the ``validate`` section of params.yaml (the whole section).
        scale: the ``scale`` section of params.yaml (reads partitions).
        raw: input from ingest.out: ingested folder (with manifest.csv) (``data/raw`` under DVC).
        part: which part of ``scale.partitions`` this task does (0-based): read one run of the manifest's files
            (sha256, header, decode).
        partial: output, this part's results (read by the merge).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('validate', locals(), phase='partition')


def validate(
    data: dict,
    validate: dict,
    scale: dict,
    raw: Input[Dataset],
    partials: Input[List[Dataset]],
    out: Output[Dataset],
    reports: Output[Dataset],
    data_docs: Output[HTML],
    summary: Output[Metrics],
) -> str:
    """Check images and manifest with Great Expectations; quarantine bad files; bias audit. Merges the parts.

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        validate: the ``validate`` section of params.yaml (the whole section).
        scale: the ``scale`` section of params.yaml (reads partitions).
        raw: input from ingest.out: ingested folder (with manifest.csv) (``data/raw`` under DVC).
        partials: every part's results, in part order (the ParallelFor's outputs, collected).
        out: output, output folder: manifest.csv + quarantine.csv (``data/validated`` under DVC).
        reports: output, summary.json and the GX Data Docs (``reports/validation`` under DVC).
        data_docs: for the KFP UI, the Great Expectations validation page.
        summary: for the KFP UI, counts and the source-bias audit.

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('validate', locals(), phase='merge')
