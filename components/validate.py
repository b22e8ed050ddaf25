"""Validate: image facts, a Great Expectations suite over the manifest, quarantine, source-bias audit.

The work is in :mod:`components.core.validation` (the external test sets run the same code).
Outputs: ``data/validated`` (the usable rows' manifest and ``quarantine.csv`` with every reason),
``reports/validation`` (``summary.json`` and the GX Data Docs HTML).
"""

from __future__ import annotations

from pathlib import Path

from components.core.params_view import under_spec
from components.core.spec import Port, StepSpec

SPEC = StepSpec(
    name="validate",
    help="check images and manifest with Great Expectations; quarantine bad files; bias audit",
    params=("data.classes", "validate"),
    inputs=(Port("raw", "data/raw", "ingested folder (with manifest.csv)"),),
    outputs=(
        Port("out", "data/validated", "output folder: manifest.csv + quarantine.csv"),
        Port("reports", "reports/validation", "summary.json and the GX Data Docs",
             dvc=(("data_docs", "out"), ("summary.json", "metric"))),
    ),
    kfp_views=(Port("data_docs", "", "the Great Expectations validation page", artifact="HTML"),
               Port("summary", "", "counts and the source-bias audit", artifact="Metrics")),
    resources=("2", "4", "4G", "8G"),
)


@under_spec(SPEC)
def run(params, raw: str | Path, out: str | Path, reports: str | Path) -> dict:
    """Validate ``raw/manifest.csv``; write the validated manifest to ``out`` and the reports."""
    from components.core.validation import validate_into

    return validate_into(list(params.data.classes), params.validate_, raw, out, reports)
