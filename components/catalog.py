"""The steps in pipeline order, and their specs (imported on demand: specs are light to import)."""

from __future__ import annotations

import importlib
from types import ModuleType

from components.core.contract.spec import StepSpec

# pipeline order; lr-find is a tool (no DVC stage, no KFP task)
STEP_MODULES = ("ingest", "validate", "split", "preprocess", "train", "external", "evaluate", "registry_state",
                "gate", "register", "lr_find")


def module(name: str) -> ModuleType:
    """The step module for a step or module name (``lr-find`` or ``lr_find``)."""
    mod = name.replace("-", "_")
    if mod not in STEP_MODULES:
        raise KeyError(f"unknown step {name!r} (steps: {', '.join(STEP_MODULES)})")
    return importlib.import_module(f"components.{mod}")


def specs() -> list[StepSpec]:
    return [module(m).SPEC for m in STEP_MODULES]


def spec(name: str) -> StepSpec:
    return module(name).SPEC
