"""``scale``: how the data plane scales out (partitions of the manifest, run in parallel)."""

from __future__ import annotations

from pydantic import Field

from components.core.contract.params.base import Section


class ScaleConfig(Section):
    """How the data plane scales out (validate, preprocess): partitions of the manifest, run at most
    ``parallelism`` at a time (KFP: one task per partition under ``dsl.ParallelFor``; ``dvc repro`` and
    ``cxr``: a local process pool), merged by a final step."""

    partitions: int = Field(1, ge=1, le=4096)
    # partitions at once: the ParallelFor's parallelism (fixed when the pipeline is compiled) and the local pool
    parallelism: int = Field(2, ge=1, le=1024)
