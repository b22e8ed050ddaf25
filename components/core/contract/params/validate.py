"""``validate``: image limits, the Great Expectations suite's critical expectations, the source-bias audit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.core.contract.params.base import KeysError, Section, require_order, written_reason


class BiasAuditConfig(Section):
    enabled: bool = True
    folds: int = Field(5, ge=2, le=20)
    # Warn when the metadata-only classifier's balanced accuracy beats the majority baseline by more.
    warn_margin: float = Field(0.25, gt=0, lt=1)
    # Cross-validate on at most this many images (whole patients, drawn at random with a fixed seed): the forest's
    # time and memory grow with the rows (50,000 images: 210 s and 0.8 GB on 2 cores), its estimate hardly does.
    max_rows: int = Field(10_000, ge=100)


class ClassShareConfig(Section):
    min: float = Field(0.02, ge=0, le=1)
    max: float = Field(0.95, ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> ClassShareConfig:
        require_order(self, "min", "max", why="no class share could pass")
        return self


ExpectationId = Literal[
    "deidentified",
    "label_in_classes",
    "decodable",
    "dimensions_in_range",
    "transparent_pixels",
    "blank_film",
    "multi_frame",
    "unique_sha256",
    "class_share",
    "patient_id_present",
    "one_label_per_patient",
]


class ValidateConfig(Section):
    min_side: int = Field(32, ge=1)
    max_side: int = Field(8192, ge=1)
    # Checked from the header before decoding: a guard against decompression bombs.
    max_pixels: int = Field(40_000_000, ge=1)
    # A film with an alpha channel is drawn over black: refuse it (transparent_pixels) when more than this share
    # of its pixels has alpha < 128 (components.core.data.images.TRANSPARENT_ALPHA).
    max_transparent_share: float = Field(0.01, ge=0, le=1)
    # A film whose 8-bit pixels' standard deviation (grey levels) is under this shows nothing: quarantined
    # (blank_film), refused by predict and the API. The 200 films of the shared sample measure 17-77 (docs/data.md).
    min_pixel_std: float = Field(2.0, ge=0, le=128)
    class_share: ClassShareConfig = Field(default_factory=ClassShareConfig)
    # Expectations whose failure fails the step; the others quarantine rows or warn.
    critical: list[ExpectationId] = Field(
        default_factory=lambda: ["label_in_classes", "patient_id_present", "class_share"]
    )
    # patient_id_present: in every class at least this share of the images must carry a real patient id (from a
    # manifest, a file name or a DICOM header), not the one-patient-per-file fallback: without ids, images of one
    # patient can straddle the splits and the gate cannot tell which patients a model saw
    min_patient_id_share: float = Field(0.5, ge=0, le=1)
    # a written reason (who accepts it, and why) to go on when a class lacks patient ids; recorded in the summary
    accept_missing_patient_ids: str | None = None
    workers: int = Field(2, ge=1, le=256)
    bias_audit: BiasAuditConfig = Field(default_factory=BiasAuditConfig)
    # DICOM de-identification audit (PS3.15 basic profile attributes, BurnedInAnnotation): "report" counts them
    # in the summary and model card; "quarantine" also refuses every file that has one. A pseudonymised
    # PatientID counts too (public sets such as RSNA keep one): use "report" for those.
    phi: Literal["report", "quarantine"] = "report"

    @model_validator(mode="after")
    def _sides(self) -> ValidateConfig:
        require_order(self, "min_side", "max_side", why="no image could pass dimensions_in_range")
        if self.max_pixels < self.min_side ** 2:
            raise KeysError(lambda key: f"{key('max_pixels')} ({self.max_pixels}) is below {key('min_side')}² "
                                        f"({self.min_side ** 2}): every image with both sides in range has more "
                                        "pixels, so none could pass")
        return self

    @field_validator("accept_missing_patient_ids")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        return written_reason(v, "who accepts images without patient ids, and why")
