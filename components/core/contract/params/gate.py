"""``gate``: absolute thresholds, non-inferiority against the champion, what an underpowered check does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from components.core.contract.params.base import Section, shares, written_reason


class ExternalGate(Section):
    """Minimums for one external test set (``gate.external.<name>``), on its point estimates."""

    min_accuracy: float = Field(0.0, ge=0, le=1)
    min_macro_roc_auc: float = Field(0.0, ge=0, le=1)
    min_sensitivity: dict[str, float] = Field(default_factory=dict)  # at the served operating point

    @field_validator("min_sensitivity")
    @classmethod
    def _unit(cls, v: dict[str, float]) -> dict[str, float]:
        return shares(v)


# metrics the candidate must be non-inferior to the champion on; roc_auc is per class with an operating point
# (one-vs-rest ROC-AUC); "roc_auc.COVID19" overrides one class
NON_INFERIORITY_KEYS = ("accuracy", "macro_f1", "macro_roc_auc", "roc_auc")
PER_CLASS_KEYS = ("roc_auc",)
# the comparisons at matched operating points were removed (issue 28: their intervals left out the thresholds' own
# noise); the served decision is gated by min_sensitivity / min_specificity
REMOVED_MARGIN_KEYS = ("sensitivity", "specificity")


class GateConfig(Section):
    # absolute thresholds (point estimates, or the lower CI bound with use_lower_ci)
    min_accuracy: float = Field(0.0, ge=0, le=1)
    min_macro_f1: float = Field(0.0, ge=0, le=1)
    min_roc_auc: float = Field(0.0, ge=0, le=1)
    # at the operating points serving uses (evaluate.target_sensitivity, chosen on the validation split)
    min_sensitivity: dict[str, float] = Field(default_factory=dict)
    min_specificity: dict[str, float] = Field(default_factory=dict)
    use_lower_ci: bool = False
    # paired non-inferiority against the champion, on test patients neither model trained or validated on:
    # passes when the lower bound of the CI of (candidate - champion) is above -margin
    non_inferiority_margin: dict[str, float] = Field(default_factory=lambda: {
        "accuracy": 0.02, "macro_f1": 0.03, "macro_roc_auc": 0.02, "roc_auc": 0.05})
    min_comparison_patients: int = Field(30, ge=1)
    # too few clean patients to compare: fail (default), or decide on the absolute thresholds only
    on_incomparable: Literal["fail", "thresholds_only"] = "fail"
    # the comparison is powered when, for two equally good models, all its checks would pass together with this
    # probability (a Bonferroni bound); then a check whose CI contains 0 but reaches below -margin fails, and two
    # equal models fail at most 1 - min_power of the time on it. Below it such a check is inconclusive. A CI
    # entirely below 0 fails whatever the power.
    min_power: float = Field(0.95, gt=0, lt=1)
    # the share of patients two equal models disagree on, for the power of the paired accuracy check; None: read
    # from the candidate's exclusive wins ((2b + 1) / (n + 2)), never from its excess errors
    planning_discordance: float | None = Field(None, gt=0, lt=1)
    # a check that cannot tell (underpowered, its CI containing 0 and reaching below -margin) is inconclusive: it
    # fails the gate (default, for real data), or the gate decides on the absolute thresholds (the demo)
    on_underpowered: Literal["fail", "thresholds_only"] = "fail"
    # a flagged shortcut (source-bias audit, stress tests) blocks registration unless a written reason accepts it
    accept_shortcut_risk: str | None = None
    external: dict[str, ExternalGate] = Field(default_factory=dict)

    @field_validator("min_sensitivity", "min_specificity")
    @classmethod
    def _unit(cls, v: dict[str, float]) -> dict[str, float]:
        return shares(v)

    @field_validator("non_inferiority_margin")
    @classmethod
    def _margins(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            base = k.split(".", 1)[0]
            if base in REMOVED_MARGIN_KEYS:
                raise ValueError(f"non_inferiority_margin key {k!r}: the gate no longer compares sensitivity or "
                                 "specificity at matched operating points (their intervals left out the thresholds' "
                                 "noise); remove the key. The served decision is gated by gate.min_sensitivity / "
                                 "gate.min_specificity, the ranking by roc_auc")
            if base not in NON_INFERIORITY_KEYS or ("." in k and base not in PER_CLASS_KEYS):
                raise ValueError(f"non_inferiority_margin key {k!r}: use one of {list(NON_INFERIORITY_KEYS)}, or "
                                 "roc_auc.<CLASS>")
            if not 0 <= x < 1:
                raise ValueError(f"non_inferiority_margin.{k} must be within [0, 1), got {x}")
        return v

    @field_validator("accept_shortcut_risk")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        return written_reason(v, "who accepts the risk, and why")

    def margin(self, metric: str) -> float:
        """The margin for ``accuracy`` … or ``roc_auc.<CLASS>`` (the class override, else the kind's)."""
        defaults = GateConfig.model_fields["non_inferiority_margin"].default_factory()
        for key in (metric, metric.split(".", 1)[0]):
            if key in self.non_inferiority_margin:
                return self.non_inferiority_margin[key]
        return defaults[metric.split(".", 1)[0]]
