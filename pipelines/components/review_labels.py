"""The KFP component of the ``review-labels`` step.

Its contract is ``SPEC`` in ``components/review_labels.py`` (tests/pipelines/test_components.py checks this signature
against it); its cluster settings are its entry in ``pipelines/tasks.py``.
"""

from kfp.dsl import HTML, Dataset, Input, Output


def review_labels(
    data: dict,
    review: dict,
    shards: Input[Dataset],
    out: Output[Dataset],
    gallery: Output[HTML],
) -> str:
    """Find training labels that look wrong: out-of-fold probabilities + confident learning (review.enabled).

    Args:
        data: the ``data`` section of params.yaml (reads classes).
        review: the ``review`` section of params.yaml (the whole section).
        shards: input from preprocess.out: preprocessed shards (the train and val splits are reviewed)
            (``data/shards`` under DVC).
        out: output, suspects.csv, pred_probs.csv, gallery.html, summary.json (``reports/label_review`` under
            DVC).
        gallery: for the KFP UI, the top suspects with their Grad-CAM.

    Returns:
        the step's summary as JSON.
    """
    from pipelines.runtime import run_task

    return run_task('review-labels', locals())
