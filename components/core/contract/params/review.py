"""``review``: ``cxr review-labels`` (out-of-fold confident learning over the training labels)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from components.core.contract import backbones as _backbones
from components.core.contract.params.base import Section
from components.core.contract.params.train import Backbone, TrainConfig


class ReviewConfig(Section):
    """``cxr review-labels``: out-of-fold class probabilities over the training and validation splits (``folds``
    patient-grouped folds, a short training each), then confident learning (cleanlab's ``find_label_issues``),
    ranked by self-confidence. A small CNN from scratch by default; ``backbone`` and ``weights`` take the recipe's
    (e.g. resnet34 / imagenet: the head trains, the backbone stays frozen)."""

    # whether dvc repro and the KFP pipeline run the review (their command passes --if-enabled); typed by hand,
    # `cxr review-labels` runs it whatever this says
    enabled: bool = False
    folds: int = Field(3, ge=2, le=20)
    backbone: Backbone = "small_cnn"
    weights: str = "none"
    image_size: int = Field(64, ge=32, le=1024)  # the shards' images are resized down to this (never up)
    epochs: int = Field(30, ge=1, le=500)
    lr: float = Field(0.005, gt=0, lt=1)
    batch_size: int = Field(32, ge=1, le=4096)
    # the default augmentation in the fold trainings: about 3x slower at 32 px on a CPU, and on the demo it found
    # fewer planted flips (top-k recall 0.69 against 0.75-0.81 without; 20 epochs instead of 30 at 64 px: out-of-fold
    # agreement 0.51 against 0.65, BENCHMARKS.md "Label review")
    augment: bool = False
    gallery: int = Field(24, ge=0, le=1000)  # top suspects shown with their Grad-CAM in gallery.html
    seed: int = 0

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        return TrainConfig._weights(v)

    @model_validator(mode="after")
    def _fits(self) -> ReviewConfig:
        if _backbones.info(self.backbone).imagenet == "none" and self.weights == "imagenet":
            raise ValueError(f"backbone {self.backbone} has no ImageNet weights: set review.weights to 'none'")
        return self
