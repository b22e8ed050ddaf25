"""``mlflow``: the tracking server and experiment (the module is not named ``mlflow``: it would shadow the library)."""

from __future__ import annotations

from pydantic import Field

from components.core.contract.params.base import Section


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides it
    experiment: str = Field("cxr", min_length=1)
