"""Ingest: bring images from a source into ``data/raw/`` with a raw manifest, accounting for every file.

Sources (``data.source``, adapters in :mod:`components.core.data.sources`): ``demo`` (the embedded
synthetic generator), ``dir`` (a class-folder tree or a CSV manifest), ``kaggle`` (downloaded
with credentials from the environment, then read like ``dir``); ``--data-uri dvc://<git-url>@<rev>``
fetches exactly what a commit pins. ``reports/ingest/`` lists every file that was skipped or
renamed, with the reason.
"""

from __future__ import annotations

from pathlib import Path

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

SPEC = StepSpec(
    name="ingest",
    help="bring images from the demo generator, a folder/CSV, Kaggle or a DVC commit into data/raw",
    params=("data",),
    outputs=(
        Port("out", "data/raw", "output folder: images + manifest.csv"),
        Port("reports", "reports/ingest", "summary.json and skipped.csv: every file skipped or renamed, and why",
             dvc=(("summary.json", "metric"), ("skipped.csv", "uncached"))),
    ),
    options=(
        Option("source_path", str, None, "read this folder/CSV instead of data.path (or a downloaded Kaggle folder)"),
        Option("data_uri", str, "", "dvc://<git-url>@<rev>: ingest exactly what that commit pins (its data/raw)",
               pipeline_param=True),
    ),
    resources=("1", "2", "2G", "8G"),
    secrets=("kaggle",),
    retries=3,
)


@under_spec(SPEC)
def run(params, out: str | Path, reports: str | Path | None = None, source_path: str | Path | None = None,
        data_uri: str = "") -> dict:
    """Ingest ``params.data`` (or ``data_uri``) into ``out``; the account of skipped files into ``reports``."""
    from components.core.data import sources

    summary = sources.ingest_into(params.data, out, source_path=source_path, data_uri=data_uri)
    return sources.write_account(summary, reports) if reports else sources.account(summary)
