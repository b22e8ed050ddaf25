"""The KFP component of the ``train`` step.

Its contract is ``SPEC`` in ``components/train.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import Dataset, Input, Model, Output


def train(
    data: dict,
    preprocess: dict,
    train: dict,
    mlflow: dict,
    monitor: dict,
    shards: Input[Dataset],
    out: Output[Model],
) -> str:
    """Train the classifier in phases (head, then unfreeze); resumable; logged to MLflow.

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        preprocess: the ``preprocess`` section of params.yaml (reads resize).
        train: the ``train`` section of params.yaml (the whole section).
        mlflow: the ``mlflow`` section of params.yaml (the whole section).
        monitor: the ``monitor`` section of params.yaml (reads ood_false_alarm).
        shards: input from preprocess.out: preprocessed shards (`cxr preprocess`) (``data/shards`` under DVC).
        out: output, output folder: model.keras, history.csv, train_summary.json (``models`` under DVC).

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('train', locals())
