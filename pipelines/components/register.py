"""The KFP component of the ``register`` step.

Its contract is ``SPEC`` in ``components/register.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Input, Markdown, Model, Output


def register(
    data: dict,
    validate: dict,
    split: dict,
    preprocess: dict,
    train: dict,
    mlflow: dict,
    evaluate: dict,
    gate: dict,
    registry: dict,
    gate_report: Input[Dataset],
    model_dir: Input[Model],
    metrics: Input[Dataset],
    ingest_report: Input[Dataset],
    validation: Input[Dataset],
    split_report: Input[Dataset],
    external_summary: Input[Dataset],
    out: Output[Dataset],
    model_card: Output[Markdown],
) -> str:
    """Register a gated model version in MLflow (tags, model card) and alias it challenger.

    Args:
        data: the ``data`` section of params.yaml (the whole section).
        validate: the ``validate`` section of params.yaml (the whole section).
        split: the ``split`` section of params.yaml (the whole section).
        preprocess: the ``preprocess`` section of params.yaml (the whole section).
        train: the ``train`` section of params.yaml (the whole section).
        mlflow: the ``mlflow`` section of params.yaml (the whole section).
        evaluate: the ``evaluate`` section of params.yaml (the whole section).
        gate: the ``gate`` section of params.yaml (the whole section).
        registry: the ``registry`` section of params.yaml (the whole section).
        gate_report: input from gate.out: the gate's decision (``reports/gate.json`` under DVC).
        model_dir: input from train.out: the trained model folder (``models`` under DVC).
        metrics: input from evaluate.metrics: the candidate's test metrics (``reports/metrics.json`` under DVC).
        ingest_report: input from ingest.reports: files skipped at ingest (for the model card)
            (``reports/ingest/summary.json`` under DVC).
        validation: input from validate.reports: the validation summary (for the model card)
            (``reports/validation/summary.json`` under DVC).
        split_report: input from split.reports: the split summary (for the model card)
            (``reports/split/summary.json`` under DVC).
        external_summary: input from external.out: the external sets (for the model card)
            (``data/external/summary.json`` under DVC).
        out: output, registration.json, model_card.md, model_card.html (``reports/registration`` under DVC).
        model_card: for the KFP UI, the model card.

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('register', locals())
