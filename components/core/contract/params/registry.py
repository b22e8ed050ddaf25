"""``registry``: the registered model's name."""

from __future__ import annotations

from pydantic import Field

from components.core.contract.params.base import Section


class RegistryConfig(Section):
    model_name: str = Field("cxr-classifier", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
