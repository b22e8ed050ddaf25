"""The KFP component of the ``split`` step.

Its contract is ``SPEC`` in ``components/split.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Input, Output


def split(
    data: dict,
    split: dict,
    manifest: Input[Dataset],
    out: Output[Dataset],
    reports: Output[Dataset],
) -> str:
    """Split the validated manifest into train/val/test by patient, stratified by label.

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        split: the ``split`` section of params.yaml (the whole section).
        manifest: input from validate.out: the validated manifest (``data/validated/manifest.csv`` under DVC).
        out: output, output folder: train.csv, val.csv, test.csv (``data/splits`` under DVC).
        reports: output, summary.json (``reports/split`` under DVC).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('split', locals())
