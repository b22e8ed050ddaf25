"""``data``: where the images come from (adapters in ``components/core/data/sources/``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.core.contract.params.base import Section, require_order

Source = Literal["demo", "dir", "kaggle"]


Layout = Literal["auto", "classes", "rsna", "siim"]


class DemoConfig(Section):
    """The embedded synthetic data set (``data.source: demo``)."""

    patients_per_class: int = Field(30, ge=2, le=10_000)
    max_images_per_patient: int = Field(3, ge=1, le=20)
    min_side: int = Field(160, ge=32)
    max_side: int = Field(320, ge=32)
    seed: int = 0
    # A planted, class-dependent shortcut for proving the shortcut tests (never for a real model):
    # corner_marker: a bright marker in a corner chosen by the class; border: a black frame whose
    # width depends on the class. none: the default films (no shortcut by construction).
    shortcut: Literal["none", "corner_marker", "border"] = "none"
    # Planted label noise, for proving the label review (never for a real model): this share of the patients
    # get another class's label on all their films (rendered as their true class); raw manifest column
    # label_noise_planted says which (validate drops it, so training never reads it).
    label_noise: float = Field(0.0, ge=0, lt=0.5)
    # which wrong label: uniform (any other class, at random) or similar (PNEUMONIA <-> COVID19 only, the two
    # findings that look alike: what real label noise in these sets mostly is)
    label_noise_model: Literal["uniform", "similar"] = "uniform"

    @model_validator(mode="after")
    def _sides(self) -> DemoConfig:
        require_order(self, "min_side", "max_side")
        return self


class DataConfig(Section):
    """Where the images come from (adapters in ``components/core/data/sources/``)."""

    source: Source = "demo"
    path: str | None = None
    # A CSV manifest's paths must resolve (links followed) inside this folder; default: the CSV's folder.
    # Rows outside it are skipped as outside_root (links leading out: link_outside_data_folder), never copied.
    root: str | None = None
    # owner/dataset (a Kaggle data set) or competitions/<slug> (a competition's data)
    kaggle_dataset: str = "paultimothymooney/chest-xray-pneumonia"
    # How a dir/kaggle folder is read. auto: a CSV manifest (or MANIFEST.csv), else the RSNA or SIIM
    # layout when its label files are there, else class folders. classes: class folders or a CSV only.
    # rsna: RSNA Pneumonia Detection (stage_2_train_labels.csv, stage_2_detailed_class_info.csv,
    # stage_2_train_images/); siim: SIIM-FISABIO-RSNA COVID-19 (train_study_level.csv, train/).
    # Ignored by the demo source.
    layout: Layout = "auto"
    classes: list[str] = Field(default_factory=lambda: ["COVID19", "NORMAL", "PNEUMONIA"])
    label_aliases: dict[str, str] = Field(default_factory=dict)
    exclude_labels: list[str] = Field(default_factory=list)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"needs at least 2 classes, got {v!r} (e.g. [NORMAL, PNEUMONIA])")
        if len(set(v)) != len(v):
            raise ValueError(f"classes must be unique, got {v!r}")
        for name in v:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"class {name!r} must be upper case letters, digits and _ (e.g. COVID19)")
        return v

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "dir" and not self.path:
            raise ValueError("data.path is required when data.source is 'dir' (a class-folder tree or a CSV)")
        if self.source == "kaggle" and (self.kaggle_dataset.count("/") != 1 or "" in self.kaggle_dataset.split("/")):
            raise ValueError("data.kaggle_dataset must look like 'owner/dataset' or 'competitions/<slug>' "
                             "(e.g. competitions/rsna-pneumonia-detection-challenge)")
        bad = {k: v for k, v in self.label_aliases.items() if v not in self.classes}
        if bad:
            raise ValueError(f"label_aliases map to labels not in data.classes {self.classes}: {bad}")
        return self
