"""The KFP component of the ``external`` step.

Its contract is ``SPEC`` in ``components/external.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Input, Output


def external(
    data: dict,
    validate: dict,
    preprocess: dict,
    train: dict,
    evaluate: dict,
    main_manifest: Input[Dataset],
    out: Output[Dataset],
) -> str:
    """Ingest, validate and decode the external test sets (evaluate.external).

    Args:
        data: the ``data`` section of params.yaml (the whole section).
        validate: the ``validate`` section of params.yaml (the whole section).
        preprocess: the ``preprocess`` section of params.yaml (the whole section).
        train: the ``train`` section of params.yaml (reads image_size).
        evaluate: the ``evaluate`` section of params.yaml (reads external).
        main_manifest: input from validate.out: the main data: external images also found there are dropped
            (``data/validated/manifest.csv`` under DVC).
        out: output, one folder per external set (raw, validated, shards) (``data/external`` under DVC).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('external', locals())
