"""The KFP component of the ``ingest`` step.

Its contract is ``SPEC`` in ``components/ingest.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Output


def ingest(
    data: dict,
    data_uri: str,
    label_overrides: str,
    out: Output[Dataset],
    reports: Output[Dataset],
) -> str:
    """Bring images from the demo generator, a folder/CSV, Kaggle or a DVC commit into data/raw.

    Args:
        data: the ``data`` section of params.yaml (the whole section).
        data_uri: dvc://<git-url>@<rev>: ingest exactly what that commit pins (its data/raw).
        label_overrides: label decisions to apply (sha256 → relabel | exclude; only confirmed lines change
            anything); '' applies none.
        out: output, output folder: images + manifest.csv (``data/raw`` under DVC).
        reports: output, summary.json and skipped.csv: every file skipped or renamed, and why
            (``reports/ingest`` under DVC).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('ingest', locals())
