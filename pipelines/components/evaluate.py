"""The KFP component of the ``evaluate`` step.

Its contract is ``SPEC`` in ``components/evaluate.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    data: dict,
    mlflow: dict,
    evaluate: dict,
    model_dir: Input[Model],
    shards: Input[Dataset],
    external: Input[Dataset],
    out: Output[Dataset],
    metrics: Output[Dataset],
    scores: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Evaluate the best checkpoint on the test split: metrics, plots, top losses, Grad-CAM.

    Args:
        data: the ``data`` section of params.yaml (reads source).
        mlflow: the ``mlflow`` section of params.yaml (the whole section).
        evaluate: the ``evaluate`` section of params.yaml (the whole section).
        model_dir: input from train.out: folder with model.keras (+ history, train summary) (``models`` under
            DVC).
        shards: input from preprocess.out: preprocessed shards (the test and val splits) (``data/shards`` under
            DVC).
        external: input from external.out: prepared external sets (`cxr external`) (``data/external`` under
            DVC).
        out: output, report folder: predictions, plots, galleries (``reports/eval`` under DVC).
        metrics: output, the test metrics (the gate reads them) (``reports/metrics.json`` under DVC).
        scores: for the KFP UI, accuracy, macro F1, ROC-AUC, ECE, recall per class.
        confusion: for the KFP UI, the test confusion matrix.

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('evaluate', locals())
