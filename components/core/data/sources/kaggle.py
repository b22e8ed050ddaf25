"""Kaggle data sets and competitions, downloaded with ``kagglehub`` using credentials from the environment.

``data.kaggle_dataset`` is ``owner/dataset`` (a data set) or ``competitions/<slug>`` (a competition's
data, e.g. ``competitions/rsna-pneumonia-detection-challenge``: accept its rules on kaggle.com first).
"""

from __future__ import annotations

import os
from pathlib import Path

from components.core.contract.errors import ServiceError

COMPETITION_PREFIX = "competitions/"


def download(dataset: str) -> Path:
    """Download (or reuse the cache of) a Kaggle dataset; clear errors offline or without credentials."""
    has_env = bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or bool(
        os.environ.get("KAGGLE_API_TOKEN"))
    kaggle_json = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not has_env and not kaggle_json.is_file():
        raise ServiceError(
            "data.source is 'kaggle' but no Kaggle credentials were found: set KAGGLE_USERNAME and "
            f"KAGGLE_KEY (from kaggle.com → Settings → API), or put kaggle.json in {kaggle_json.parent}"
        )
    try:
        import kagglehub

        if dataset.startswith(COMPETITION_PREFIX):
            return Path(kagglehub.competition_download(dataset.removeprefix(COMPETITION_PREFIX)))
        return Path(kagglehub.dataset_download(dataset))
    except Exception as err:
        rules = (" For a competition, accept its rules on kaggle.com (Join Competition) with this account."
                 if dataset.startswith(COMPETITION_PREFIX) else "")
        raise ServiceError(
            f"downloading Kaggle dataset {dataset!r} failed: {type(err).__name__}: {err}. "
            f"Check the network, the credentials and data.kaggle_dataset.{rules}"
        ) from None
