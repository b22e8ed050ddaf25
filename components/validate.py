"""Validate: image facts, a Great Expectations suite over the manifest, quarantine, source-bias audit.

The work is in :mod:`components.core.data.validation` (the external test sets run the same code).
Outputs: ``data/validated`` (the usable rows' manifest and ``quarantine.csv`` with every reason),
``reports/validation`` (``summary.json`` and the GX Data Docs HTML).

**Partitions** (``scale.partitions``): reading every file (sha256, header, full decode) is the cost and is
row by row, so part *p* computes the facts of its contiguous run of the raw manifest
(:func:`run_partition`, ``facts.parquet``); :func:`merge` puts the runs together in order and does what
needs every row at once (patients, Great Expectations, quarantine, the bias audit). ``cxr validate`` runs
the parts one after the other; the KFP pipeline runs them as parallel tasks.
"""

from __future__ import annotations

from pathlib import Path

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Partitioned, Port, StepSpec

SPEC = StepSpec(
    name="validate",
    help="check images and manifest with Great Expectations; quarantine bad files; bias audit",
    params=("data.classes", "validate", "scale.partitions"),
    inputs=(Port("raw", "data/raw", "ingested folder (with manifest.csv)"),),
    outputs=(
        Port("out", "data/validated", "output folder: manifest.csv + quarantine.csv"),
        Port("reports", "reports/validation", "summary.json and the GX Data Docs",
             dvc=(("data_docs", "out"), ("summary.json", "metric"))),
    ),
    kfp_views=(Port("data_docs", "", "the Great Expectations validation page", artifact="HTML"),
               Port("summary", "", "counts and the source-bias audit", artifact="Metrics")),
    resources=("2", "4", "4G", "8G"),
    partitioned=Partitioned("read one run of the manifest's files (sha256, header, decode)"),
)
FACTS_FILE = "facts.parquet"


@under_spec(SPEC)
def run_partition(params, part: int, raw: str | Path, partial: str | Path) -> dict:
    """The facts of part ``part`` of ``scale.partitions`` (a contiguous run of ``raw/manifest.csv``) into
    ``partial/facts.parquet``."""
    import os

    from components.core.contract.errors import DataError
    from components.core.contract.fsutil import atomic_path
    from components.core.data.validation import compute_facts, partition_rows, read_raw

    parts = params.scale.partitions
    if not 0 <= part < parts:
        raise DataError(f"part {part} is outside 0..{parts - 1} (scale.partitions {parts})")
    rows = read_raw(raw)
    mine = rows.iloc[partition_rows(len(rows), parts, part)]
    workers = min(params.validate_.workers, os.cpu_count() or 1)
    facts = compute_facts(raw, mine, params.validate_.max_pixels, workers)
    with atomic_path(Path(partial), directory=True) as tmp:
        facts.to_parquet(tmp / FACTS_FILE, index=False)
    return {"part": part, "parts": parts, "images": len(facts)}


@under_spec(SPEC)
def merge(params, partials: list[str | Path], raw: str | Path, out: str | Path, reports: str | Path) -> dict:
    """Put the parts' facts together (in part order) and validate the whole manifest with them."""
    import pandas as pd

    from components.core.contract.errors import DataError
    from components.core.data.validation import read_raw, validate_into

    rows = read_raw(raw)
    facts = pd.concat([pd.read_parquet(Path(d) / FACTS_FILE) for d in partials], ignore_index=True)
    if len(facts) != len(rows) or not (facts["path"].to_numpy() == rows["path"].to_numpy()).all():
        raise DataError(f"the {len(partials)} parts hold {len(facts)} rows that do not line up with the "
                        f"{len(rows)} rows of {Path(raw) / 'manifest.csv'}: were they made from it with the same "
                        "scale.partitions?")
    return validate_into(list(params.data.classes), params.validate_, raw, out, reports, facts=facts)


@under_spec(SPEC)
def run(params, raw: str | Path, out: str | Path, reports: str | Path) -> dict:
    """Validate ``raw/manifest.csv``; write the validated manifest to ``out`` and the reports (every part of
    ``scale.partitions`` in turn, then the merge)."""
    from components.core.contract.fsutil import partition_folders

    with partition_folders(out, params.scale.partitions) as partials:
        for i, folder in enumerate(partials):
            run_partition(params, i, raw, folder)
        return merge(params, partials, raw, out, reports)
