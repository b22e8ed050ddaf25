"""``evaluate``: intervals, operating points, external test sets, the shortcut stress tests."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.core.contract.params.base import Section, require_order
from components.core.contract.params.data import DemoConfig


class BootstrapConfig(Section):
    # patient resamples for what has no closed-form interval (ECE; the correlation of two models' macro F1/AUC
    # in the gate; the threshold's spread); 0 turns those off. Proportions and AUCs use exact/score intervals
    resamples: int = Field(1000, ge=0, le=100_000)
    seed: int = 0
    level: float = Field(0.95, gt=0.5, lt=1)


class ExternalSet(Section):
    """A test set from elsewhere: ingested and validated like the main data, never trained or tuned on."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: Literal["dir", "kaggle", "dvc", "demo"]
    path: str | None = None  # dir: a folder or CSV; dvc: dvc://<git-url>@<rev> (its data/raw)
    root: str | None = None  # dir: the folder a CSV's paths must stay inside (default: the CSV's folder)
    kaggle_dataset: str | None = None
    demo: DemoConfig | None = None  # demo: the synthetic generator with other patients (another seed)
    # a synthetic (demo) set is used when the main data are the demo too; with real data only when asked for
    with_real_data: bool = False
    label_aliases: dict[str, str] = Field(default_factory=dict)
    exclude_labels: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _where(self) -> ExternalSet:
        if self.source in ("dir", "dvc") and not self.path:
            raise ValueError(f"external set {self.name!r}: path is required for source {self.source!r}")
        if self.source == "dvc" and not str(self.path).startswith("dvc://"):
            raise ValueError(f"external set {self.name!r}: path must look like dvc://<git-url>@<rev>")
        if self.source == "kaggle" and not self.kaggle_dataset:
            raise ValueError(f"external set {self.name!r}: kaggle_dataset is required for source 'kaggle'")
        return self


class CentralFieldConfig(Section):
    """The central field the stress tests blank, as fractions of the part of the film the model sees (its box
    clipped to the square: inside its letterbox with ``pad``, the cropped square with ``crop``), so every resize
    mode blanks the same share of what the model sees ((bottom - top) x (right - left): 72% by default). Nearly
    the full width and most of the height of a frontal film: what lies outside is the top band (neck, shoulders,
    labels), the bottom band (abdomen) and thin side strips. It is not a lung mask: it holds the mediastinum and
    whatever lies over the chest (tubes, lines, leads)."""

    top: float = Field(0.1, ge=0, lt=1)
    bottom: float = Field(0.9, gt=0, le=1)
    left: float = Field(0.05, ge=0, lt=1)
    right: float = Field(0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> CentralFieldConfig:
        require_order(self, "top", "bottom", strict=True)
        require_order(self, "left", "right", strict=True)
        return self

    @property
    def area(self) -> float:
        return (self.bottom - self.top) * (self.right - self.left)


class ShortcutMargins(Section):
    """How far above chance (or above the uniform-map share) a test may go before it flags a shortcut."""

    centre_masked: float = Field(0.2, gt=0, lt=1)  # balanced accuracy with the central field blanked
    border_probe: float = Field(0.25, gt=0, lt=1)  # balanced accuracy of a classifier on the outer frame
    attention_outside: float = Field(0.1, gt=0, lt=1)  # Grad-CAM share outside the central field − its area share
    source_probe: float = Field(0.3, gt=0, lt=1)  # balanced accuracy of source-from-features, within a class


class ShortcutConfig(Section):
    """Shortcut stress tests run by evaluate (components/core/eval/shortcut.py)."""

    enabled: bool = True
    max_images: int = Field(300, ge=10, le=100_000)  # per set (a class-stratified subset beyond it)
    central_field: CentralFieldConfig = Field(default_factory=CentralFieldConfig)
    frame: float = Field(0.12, gt=0, lt=0.5)  # the border probe reads this outer fraction of each side
    folds: int = Field(5, ge=2, le=20)
    margins: ShortcutMargins = Field(default_factory=ShortcutMargins)
    # a beat-chance test flags only when its one-sided p-value (against chance, per patient) is at most this
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_per_class: int = Field(5, ge=2, le=1000)  # the attention test needs this many images of a class
    seed: int = 0


class EvaluateConfig(Section):
    gradcam_per_class: int = Field(2, ge=0, le=50)
    top_losses: int = Field(12, ge=0, le=200)
    ece_bins: int = Field(10, ge=2, le=100)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    # per-class thresholds chosen on the validation split to reach these sensitivities
    target_sensitivity: dict[str, float] = Field(default_factory=dict)
    external: list[ExternalSet] = Field(default_factory=list)
    shortcut: ShortcutConfig = Field(default_factory=ShortcutConfig)

    @field_validator("target_sensitivity")
    @classmethod
    def _targets(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0 < x < 1:
                raise ValueError(f"{k} must be within (0, 1), got {x}" + (
                    ": the served threshold is the ceil(target x (n + 1))-th highest of n validation patients, "
                    "which never exists for a target of 1 (n patients keep at most n / (n + 1))" if x == 1 else ""))
        return v

    @field_validator("external")
    @classmethod
    def _unique(cls, v: list[ExternalSet]) -> list[ExternalSet]:
        names = [e.name for e in v]
        if len(set(names)) != len(names):
            raise ValueError(f"external set names must be unique, got {names}")
        return v


def min_positive_patients(target: float) -> int:
    """The fewest positive validation patients ``n`` for which the served threshold, the ``ceil(target x (n + 1))``-th
    highest patient score, exists (components.core.stats.clinical.conformal_threshold): ``n >= target / (1 -
    target)``."""
    if not 0 < target < 1:
        raise ValueError(f"a target sensitivity within (0, 1), got {target}")

    def enough(n: int) -> bool:
        return math.ceil(target * (n + 1) - 1e-9) <= n

    n = max(1, math.ceil((target - 1e-9) / (1 - target)) - 1)
    while not enough(n):
        n += 1
    while n > 1 and enough(n - 1):
        n -= 1
    return n


def applicable_external(params) -> list[ExternalSet]:
    """The external sets that apply to this data: a synthetic (``source: demo``) set says nothing about a model of
    real films, so it is used with ``data.source: demo`` only, unless it sets ``with_real_data``."""
    return [e for e in params.evaluate.external
            if e.source != "demo" or params.data.source == "demo" or e.with_real_data]
