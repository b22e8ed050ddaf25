"""The whole ``params.yaml``: one field per section (the file's order), the rules across sections, loading.

Only the CLI, the step catalog and the pipelines need it; a step imports the section modules it reads, so a
DVC stage depends on the params code it uses (``components/core/contract/codedeps.py``). Unknown keys, wrong
types and impossible values raise :class:`ParamsError` with the key path and the allowed values, e.g.
``data.sourse: unknown key (allowed: classes, demo, …)``.

The defaults here are for real data: a key left out of params.yaml means what a real-data run needs (train: the
``seed1-vgg16`` recipe, VGG16 ImageNet at 224 px; gate: no absolute minimums, an underpowered comparison fails).
The params.yaml the project ships is the offline demo: exactly the ``demo`` recipe laid over these defaults (a test
checks it), which is why the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.core.contract.errors import ParamsError
from components.core.contract.params.base import Section
from components.core.contract.params.data import DataConfig
from components.core.contract.params.evaluate import EvaluateConfig, applicable_external
from components.core.contract.params.gate import GateConfig
from components.core.contract.params.monitor import MonitorConfig
from components.core.contract.params.preprocess import PreprocessConfig
from components.core.contract.params.registry import RegistryConfig
from components.core.contract.params.review import ReviewConfig
from components.core.contract.params.scale import ScaleConfig
from components.core.contract.params.sections import SECTIONS
from components.core.contract.params.split import SplitConfig
from components.core.contract.params.tracking import MlflowConfig
from components.core.contract.params.train import TrainConfig
from components.core.contract.params.validate import ValidateConfig


class Params(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross(self) -> Params:
        for key, named in (("gate.min_sensitivity", self.gate.min_sensitivity),
                           ("gate.min_specificity", self.gate.min_specificity),
                           ("evaluate.target_sensitivity", self.evaluate.target_sensitivity)):
            unknown = set(named) - set(self.data.classes)
            if unknown:
                raise ValueError(f"{key} names classes not in data.classes {self.data.classes}: {sorted(unknown)}")
        served = set(self.evaluate.target_sensitivity)
        for key, named in (("gate.min_sensitivity", self.gate.min_sensitivity),
                           ("gate.min_specificity", self.gate.min_specificity)):
            if set(named) - served:
                raise ValueError(f"{key} names {sorted(set(named) - served)}, which have no operating point: add "
                                 "them to evaluate.target_sensitivity (the gate checks the decision that is served)")
        unknown_ext = set(self.gate.external) - {e.name for e in self.evaluate.external}
        if unknown_ext:
            raise ValueError(f"gate.external names sets not in evaluate.external: {sorted(unknown_ext)}")
        unused = set(self.gate.external) - {e.name for e in applicable_external(self)}
        if unused:
            raise ValueError(f"gate.external names synthetic (demo) sets that are not used with data.source "
                             f"{self.data.source!r}: {sorted(unused)}; set with_real_data: true on them to use them")
        bad = {k for k in self.gate.non_inferiority_margin if "." in k and k.split(".", 1)[1] not in self.data.classes}
        if bad:
            raise ValueError(f"gate.non_inferiority_margin names classes not in data.classes: {sorted(bad)}")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (the form logged to MLflow)."""
        return self.model_dump(mode="json", by_alias=True)[name]


if tuple(f.alias or name for name, f in Params.model_fields.items()) != SECTIONS:  # one fact, checked
    raise AssertionError("Params' fields and params/sections.py SECTIONS disagree: keep them in the same order")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names (aliases) of the sub-model that holds ``loc[-1]``, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        ann = field.annotation
        args = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate a parsed YAML structure; raise :class:`ParamsError` with readable lines."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` maps dotted keys to values (tests, KFP)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found (pass --params PATH)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if overrides:
        raw = apply_overrides(raw or {}, overrides)
    return parse_params(raw, str(path))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``{"train.image_size": 64}``-style overrides applied."""
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {dotted}: {p} is not a section")
        node[leaf] = value
    return out
