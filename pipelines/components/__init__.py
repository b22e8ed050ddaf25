"""The KFP components of the ``cxr-training`` pipeline: one module per step, ``pipelines/components/<step>.py``.

Each component is a plain function with a typed signature, written as kubeflow/pipelines-components writes them:
one ``dict`` per params.yaml section the step reads, the options a pipeline parameter feeds, an ``Input[…]`` per
input, an ``Output[…]`` per output and per view the KFP UI shows, and a Google-style ``Args:`` docstring (the
KFP UI shows it). KFP ships the function's source to the task's container, where its executor reads the signature;
every body hands its arguments to :func:`pipelines.runtime.run_task`, which runs the same ``components.<step>.run``
as ``cxr <step>`` and ``dvc repro``. A partitioned step has two: ``<step>_partition`` (one part, under a
``dsl.ParallelFor`` over :func:`partitions`) and ``<step>`` (the merge).

The step's ``SPEC`` (``components/<step>.py``) stays the contract: ``tests/pipelines/test_components.py`` checks
every signature, and the pipeline's wiring (``pipelines/pipeline.py``), against the specs and the task table.
The names below are the functions (the modules of the same names are under ``pipelines/components/``).
"""

from pipelines.components.evaluate import evaluate
from pipelines.components.external import external
from pipelines.components.gate import gate
from pipelines.components.ingest import ingest
from pipelines.components.partitions import partitions
from pipelines.components.preprocess import preprocess, preprocess_partition
from pipelines.components.register import register
from pipelines.components.review_labels import review_labels
from pipelines.components.split import split
from pipelines.components.train import train
from pipelines.components.validate import validate, validate_partition

__all__ = ["evaluate", "external", "gate", "ingest", "partitions", "preprocess", "preprocess_partition", "register",
           "review_labels", "split", "train", "validate", "validate_partition"]
