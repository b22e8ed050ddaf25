"""``split``: train/val/test fractions (by patient) and the seed."""

from __future__ import annotations

from pydantic import Field, model_validator

from components.core.contract.params.base import KeysError, Section


class SplitConfig(Section):
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    use_official_test: bool = True

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise KeysError(lambda key: f"{key('val_fraction')} + {key('test_fraction')} must be < 0.9 (something "
                                        f"must be left to train on), got {self.val_fraction} + {self.test_fraction}")
        return self
