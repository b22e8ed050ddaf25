"""The base of every params section: unknown keys are errors, values are immutable once loaded; and
:class:`KeysError`, the error of a rule across keys."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KeysError(ValueError):
    """A rule across keys of one section, broken. ``message`` builds the text from a function that names a key
    of the section (``lambda key: f"{key('min_side')} (9000) must be <= {key('max_side')} (8192)"``): the
    error names each key by its full dotted path (``validate.min_side``;
    :func:`components.core.contract.params.schema.format_validation_error` knows where the section is), and by
    its name within the section where the section stands alone."""

    def __init__(self, message: Callable[[Callable[[str], str]], str]) -> None:
        used: list[str] = []

        def name(key: str) -> str:
            used.append(key)
            return key

        super().__init__(message(name))
        self.message, self.keys = message, tuple(used)

    def at(self, prefix: str) -> str:
        """The message with each key under ``prefix`` (``validate``, ``evaluate.external.0.demo``)."""
        return self.message(lambda key: f"{prefix}.{key}" if prefix else key)


def written_reason(value: str | None, who_and_why: str) -> str | None:
    """A written acceptance (``gate.accept_shortcut_risk``, ``validate.accept_missing_patient_ids``): at least 20
    characters saying ``who_and_why``, stripped; None stays None."""
    if value is not None and len(value.strip()) < 20:
        raise ValueError(f"a written reason of at least 20 characters ({who_and_why}), got {value!r}")
    return value.strip() if value else value


def shares(values: dict[str, float], key: str = "") -> dict[str, float]:
    """Per-class values that are shares (sensitivities, specificities): each within 0..1."""
    for k, x in values.items():
        if not 0 <= x <= 1:
            raise ValueError(f"{key + '.' if key else ''}{k} must be within 0..1, got {x}")
    return values


def require_order(section: BaseModel, low: str, high: str, *, strict: bool = False, why: str = "") -> None:
    """Raise :class:`KeysError` unless ``section.<low>`` <= ``section.<high>`` (``<`` when ``strict``), naming both
    keys and their values, then ``why`` (what the broken order would do)."""
    a, b = getattr(section, low), getattr(section, high)
    if a > b or (strict and a == b):
        rel = "must be below" if strict else "must be <="
        raise KeysError(lambda key: f"{key(low)} ({a}) {rel} {key(high)} ({b})" + (f": {why}" if why else ""))
