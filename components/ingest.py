"""Ingest: bring images from a source into ``data/raw/`` with a raw manifest, accounting for every file.

Sources (``data.source``, adapters in :mod:`components.core.data.sources`): ``demo`` (the embedded
synthetic generator), ``dir`` (a class-folder tree or a CSV manifest), ``kaggle`` (downloaded
with credentials from the environment, then read like ``dir``); ``--data-uri dvc://<git-url>@<rev>``
fetches exactly what a commit pins. ``reports/ingest/`` lists every file (and CSV row, with its line) that
was skipped or renamed, with the reason; a CSV manifest's paths stay inside ``data.root`` (``--root``).

Label decisions (``--label-overrides``, default ``data/label_overrides.csv``, a DVC dependency of this stage:
:mod:`components.core.data.overrides`): confirmed lines relabel or exclude images by sha256, proposed lines change
nothing; the summary's ``label_overrides`` block counts both (the model card lists it).
"""

from __future__ import annotations

from pathlib import Path

from components.core.contract.params_view import under_spec
from components.core.contract.spec import Option, Port, StepSpec

SPEC = StepSpec(
    name="ingest",
    help="bring images from the demo generator, a folder/CSV, Kaggle or a DVC commit into data/raw",
    params=("data",),
    dvc_deps=("data/label_overrides.csv",),
    outputs=(
        Port("out", "data/raw", "output folder: images + manifest.csv"),
        Port("reports", "reports/ingest", "summary.json and skipped.csv: every file skipped or renamed, and why",
             dvc=(("summary.json", "metric"), ("skipped.csv", "uncached"))),
    ),
    options=(
        Option("source_path", str, None, "read this folder/CSV instead of data.path (or a downloaded Kaggle folder)"),
        Option("data_uri", str, "", "dvc://<git-url>@<rev>: ingest exactly what that commit pins (its data/raw)"),
        Option("root", str, None, "a CSV manifest's paths must resolve inside this folder (overrides data.root; "
                                  "default: the CSV's folder)"),
        Option("label_overrides", str, "data/label_overrides.csv", "label decisions to apply (sha256 → relabel | "
               "exclude; only confirmed lines change anything); '' applies none"),
    ),
)


@under_spec(SPEC)
def run(params, out: str | Path, reports: str | Path | None = None, source_path: str | Path | None = None,
        data_uri: str = "", root: str | Path | None = None, label_overrides: str | Path | None = None) -> dict:
    """Ingest ``params.data`` (or ``data_uri``) into ``out``, applying the confirmed ``label_overrides``; the
    account of skipped files into ``reports``."""
    from components.core.data import overrides, sources

    decisions = None
    if label_overrides and not data_uri:
        decisions = overrides.read(label_overrides, list(params.data.classes))
    summary = sources.ingest_into(params.data, out, source_path=source_path, data_uri=data_uri, root=root,
                                  overrides=decisions, overrides_source=str(label_overrides or ""))
    return sources.write_account(summary, reports) if reports else sources.account(summary)
