"""``monitor``: the out-of-distribution warning, the prediction-log monitor, the canary roll-out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.core.contract.params.base import KeysError, Section, shares

RetrainReason = Literal["ood_rate", "image_drift", "prediction_drift", "live_accuracy"]


class CanaryConfig(Section):
    """``cxr deploy``: the canary's share of traffic and what rolls it back."""

    traffic_percent: int = Field(10, ge=1, le=99)
    analysis_seconds: float = Field(600, gt=0)     # watch the canary this long before promoting it
    max_error_rate: float = Field(0.02, ge=0, le=1)  # share of its /predict requests answered 5xx
    max_ood_rate: float = Field(0.25, ge=0, le=1)    # share of its predictions flagged unlike_training_data
    min_requests: int = Field(20, ge=1)            # fewer predictions in the analysis: roll back (fail closed)


class MonitorConfig(Section):
    """Out-of-distribution warning (train, serve) and the prediction-log monitor (``cxr monitor``)."""

    # share of in-distribution images (the validation split) flagged unlike_training_data: sets the threshold
    ood_false_alarm: float = Field(0.05, gt=0, lt=0.5)
    window_hours: float = Field(168, gt=0)          # `cxr monitor` reads the log of the last N hours
    min_predictions: int = Field(50, ge=5)          # fewer in the window: no verdict ("insufficient data")
    max_ood_rate: float = Field(0.15, gt=0, le=1)   # retrain when the window's OOD rate is above this
    drift_p_value: float = Field(0.01, gt=0, lt=0.5)  # family-wise level of the drift tests (Bonferroni)
    min_effect: float = Field(0.1, ge=0, le=1)      # and the KS statistic / total variation must exceed this
    min_feedback: int = Field(30, ge=1)             # labelled predictions needed before live accuracy counts
    min_live_accuracy: float = Field(0.0, ge=0, le=1)  # 0 turns the live-accuracy check off
    min_live_sensitivity: dict[str, float] = Field(default_factory=dict)
    retrain_on: list[RetrainReason] = Field(
        default_factory=lambda: ["ood_rate", "image_drift", "prediction_drift", "live_accuracy"])
    canary: CanaryConfig = Field(default_factory=CanaryConfig)

    @model_validator(mode="after")
    def _ood_limits(self) -> MonitorConfig:
        for limit, value in (("max_ood_rate", self.max_ood_rate), ("canary.max_ood_rate", self.canary.max_ood_rate)):
            if value <= self.ood_false_alarm:
                raise KeysError(lambda key, limit=limit, value=value: (
                    f"{key(limit)} ({value}) must be above {key('ood_false_alarm')} ({self.ood_false_alarm}): "
                    "in-distribution images are flagged at that rate by design, so "
                    + ("the limit would not limit anything" if limit == "max_ood_rate" else
                       "a healthy canary would be rolled back")))
        return self

    @field_validator("min_live_sensitivity")
    @classmethod
    def _sens(cls, v: dict[str, float]) -> dict[str, float]:
        return shares(v, "min_live_sensitivity")
