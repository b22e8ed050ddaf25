"""The KFP component of the ``gate`` step.

Its contract is ``SPEC`` in ``components/gate.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def gate(
    data: dict,
    validate: dict,
    mlflow: dict,
    evaluate: dict,
    gate: dict,
    registry: dict,
    metrics: Input[Dataset],
    model_dir: Input[Model],
    shards: Input[Dataset],
    images: Input[Dataset],
    validation: Input[Dataset],
    out: Output[Dataset],
    decision: Output[Metrics],
) -> bool:
    """Pass/fail the candidate: thresholds on the served decision, paired non-inferiority vs the champion,
    shortcut risk.

    Args:
        data: the ``data`` section of params.yaml (reads classes, source).
        validate: the ``validate`` section of params.yaml (reads max_pixels).
        mlflow: the ``mlflow`` section of params.yaml (the whole section).
        evaluate: the ``evaluate`` section of params.yaml (reads bootstrap, target_sensitivity).
        gate: the ``gate`` section of params.yaml (the whole section).
        registry: the ``registry`` section of params.yaml (the whole section).
        metrics: input from evaluate.metrics: the candidate's test metrics (operating points, external sets)
            (``reports/metrics.json`` under DVC).
        model_dir: input from train.out: the candidate model (model.keras, lineage.json) (``models`` under DVC).
        shards: input from preprocess.out: the test split both models are scored on, the val split for threshold
            CIs (``data/shards`` under DVC).
        images: input from ingest.out: image root (to decode the test split for a champion with another input
            size) (``data/raw`` under DVC).
        validation: input from validate.reports: the validation summary (source-bias audit)
            (``reports/validation/summary.json`` under DVC).
        out: output, the decision: every check with value, CI, threshold or margin, patients, result
            (``reports/gate.json`` under DVC).
        decision: for the KFP UI, passed (1/0) and the number of failed checks.

    Returns:
        ``passed`` from the step's summary (the pipeline branches on it).
    """
    from pipelines.runtime import run_task

    return run_task('gate', locals())
