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

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.core.contract.errors import ParamsError
from components.core.contract.params import reading, strict
from components.core.contract.params.base import KeysError, Section
from components.core.contract.params.data import DataConfig
from components.core.contract.params.evaluate import EvaluateConfig, applicable_external
from components.core.contract.params.gate import GateConfig
from components.core.contract.params.monitor import MonitorConfig
from components.core.contract.params.overrides import Override, apply_overrides, as_overrides
from components.core.contract.params.preprocess import PreprocessConfig
from components.core.contract.params.registry import RegistryConfig
from components.core.contract.params.review import ReviewConfig
from components.core.contract.params.scale import ScaleConfig
from components.core.contract.params.sections import SECTIONS
from components.core.contract.params.split import SplitConfig
from components.core.contract.params.strict import describe
from components.core.contract.params.tracking import MlflowConfig
from components.core.contract.params.train import TrainConfig
from components.core.contract.params.validate import ValidateConfig

__all__ = ["Params", "ParamsError", "apply_overrides", "format_validation_error", "load_params", "parse_params"]


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
        problems = cross_section_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (the form logged to MLflow)."""
        return self.model_dump(mode="json", by_alias=True)[name]


if tuple(f.alias or name for name, f in Params.model_fields.items()) != SECTIONS:  # one fact, checked
    raise AssertionError("Params' fields and params/sections.py SECTIONS disagree: keep them in the same order")




# ---------------------------------------------------------------- rules across sections
def _key(label: str) -> str:
    """A label as ingest compares it (components.core.data.labels._key: no case, spaces, dashes, dots, _)."""
    return re.sub(r"[\s\-_.]", "", str(label)).upper()


def cross_section_problems(p: Params) -> list[str]:
    """The rules between sections, each message naming the keys on both sides."""
    out: list[str] = []
    classes = list(p.data.classes)
    targets = p.evaluate.target_sensitivity
    per_class = [("gate.min_sensitivity", p.gate.min_sensitivity), ("gate.min_specificity", p.gate.min_specificity),
                 ("evaluate.target_sensitivity", targets),
                 *((f"gate.external.{n}.min_sensitivity", g.min_sensitivity) for n, g in p.gate.external.items()),
                 ("monitor.min_live_sensitivity", p.monitor.min_live_sensitivity)]
    for key, named in per_class:
        unknown = sorted(set(named) - set(classes))
        if unknown:
            out.append(f"{key} names classes not in data.classes {classes}: {unknown}")
    for key, named in per_class[:2] + per_class[3:-1]:
        unserved = sorted(set(named) & set(classes) - set(targets))
        if unserved:
            out.append(f"{key} names {unserved}, which have no operating point: add them to "
                       "evaluate.target_sensitivity (the gate checks the decision that is served)")
    external = {e.name for e in p.evaluate.external}
    unknown_ext = sorted(set(p.gate.external) - external)
    if unknown_ext:
        out.append(f"gate.external names sets not in evaluate.external: {unknown_ext}")
    unused = sorted(set(p.gate.external) & external - {e.name for e in applicable_external(p)})
    if unused:
        out.append(f"gate.external names synthetic (demo) sets that are not used with data.source "
                   f"{p.data.source!r}: {unused}; set with_real_data: true on them in evaluate.external to use them")
    bad = sorted(k for k in p.gate.non_inferiority_margin if "." in k and k.split(".", 1)[1] not in classes)
    if bad:
        out.append(f"gate.non_inferiority_margin names classes not in data.classes {classes}: {bad}")
    dropped = sorted(c for c in classes if _key(c) in {_key(x) for x in p.data.exclude_labels})
    if dropped:
        out.append(f"data.exclude_labels drops {dropped}, which data.classes {classes} keeps: every image of them "
                   "would be excluded; remove them from one of the two")
    share = p.validate_.class_share
    if share.min * len(classes) > 1:
        out.append(f"validate.class_share.min {share.min} with {len(classes)} data.classes asks for more than the "
                   f"whole (min x classes = {share.min * len(classes):g} > 1): no data set can pass; lower it")
    if share.max < 1 / len(classes):
        out.append(f"validate.class_share.max {share.max} with {len(classes)} data.classes: some class always has "
                   f"at least 1/{len(classes)} = {1 / len(classes):.3f} of the images, so no data set can pass; "
                   "raise it")
    out += _demo_problems(p)
    out += _external_problems(p)
    if p.review.enabled and p.review.image_size > p.train.image_size:
        out.append(f"review.image_size {p.review.image_size} is above train.image_size {p.train.image_size}: the "
                   "label review reads the training shards and only ever resizes them down; lower "
                   "review.image_size or raise train.image_size")
    return out


def _demo_problems(p: Params) -> list[str]:
    """Synthetic films validate would refuse, every one; targets the demo's patients cannot reach."""
    from components.core.contract.params.evaluate import min_positive_patients

    out: list[str] = []
    v = p.validate_
    demos = [("data.demo", p.data.demo)] if p.data.source == "demo" else []
    demos += [(f"evaluate.external.{i}.demo", e.demo) for i, e in enumerate(p.evaluate.external)
              if e.source == "demo" and e.demo is not None and e in applicable_external(p)]
    for key, demo in demos:
        if demo.min_side > v.max_side:
            out.append(f"{key}.min_side {demo.min_side} is above validate.max_side {v.max_side}: every synthetic "
                       "film's longer side is at least that, so validate would refuse them all")
        if demo.max_side < v.min_side:
            out.append(f"{key}.max_side {demo.max_side} is below validate.min_side {v.min_side}: every synthetic "
                       "film's shorter side is at most that, so validate would refuse them all")
    if p.data.source == "demo":
        d = p.data.demo
        expected, most = demo_val_patients(p)
        for c, target in sorted(p.evaluate.target_sensitivity.items()):
            need = min_positive_patients(target)
            if need > most:
                out.append(f"evaluate.target_sensitivity.{c} {target} needs at least {need} {c} patients in the "
                           "validation split (the served threshold is the ceil(target x (n + 1))-th highest of n "
                           f"patients), but with data.demo.patients_per_class {d.patients_per_class}, "
                           f"split.test_fraction {p.split.test_fraction} and split.val_fraction "
                           f"{p.split.val_fraction} it holds about {expected:.1f} (at most {most}): lower the target, "
                           "raise data.demo.patients_per_class, or use real data (data.source: dir or kaggle)")
    return out


def demo_val_patients(p: Params) -> tuple[float, int]:
    """The demo's patients of one class in the validation split: (about how many, a bound never exceeded).

    ``components/split.py`` carves the test split as one of ``round(1 / test_fraction)`` patient-grouped folds, then
    validation as one of ``round((1 - test_fraction) / val_fraction)`` folds of the rest: about ``E = P x (1 - 1 /
    n_test) / n_val`` of a class's ``P`` patients (planted label noise may add patients: counted in ``P``). The
    bound is ``2E + 1``: over 761 demo configurations (4-100 patients per class, 1-3 films each, test 0.15-0.4,
    val 0.1-0.2, 3 seeds, noise 0 and 0.1) the real count never exceeded ``1.17E + 1`` (``python -m
    benchmarks.demo_val_bound``)."""
    d, split = p.data.demo, p.split
    patients = d.patients_per_class
    if d.label_noise > 0:
        patients += max(1, round(d.label_noise * d.patients_per_class * len(p.data.classes)))
    n_test = max(2, round(1 / split.test_fraction))
    n_val = max(2, round(1 / (split.val_fraction / (1 - split.test_fraction))))
    expected = patients * (1 - 1 / n_test) / n_val
    return expected, min(patients, math.floor(2 * expected + 1))


def _external_problems(p: Params) -> list[str]:
    out: list[str] = []
    for e in p.evaluate.external:
        unknown = sorted(set(e.label_aliases.values()) - set(p.data.classes))
        if unknown:
            out.append(f"evaluate.external {e.name!r}: label_aliases map to labels not in data.classes "
                       f"{list(p.data.classes)}: {unknown}")
    return out


# ---------------------------------------------------------------- errors, parsing, loading
def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names (aliases) of the sub-model that holds ``loc[-1]``, for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for n, f in current.model_fields.items() if part in (f.alias or n, n)), None)
        if field is None:
            return None
        ann = field.annotation
        args = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


class _Line:
    """One error: where (``loc``), the text, and the dotted keys it is about (for the ``--set`` notes)."""

    def __init__(self, loc: tuple[Any, ...], text: str, keys: tuple[str, ...] = ()) -> None:
        self.loc, self.text, self.keys = loc, text, keys

    def render(self) -> str:
        return f"{_dotted(self.loc)}: {self.text}" if self.loc else self.text

    def about(self, o: Override) -> bool:
        loc = tuple(str(p) for p in self.loc)
        paths = [tuple(k.split(".")) for k in self.keys] or ([loc] if loc else [])
        if not paths:  # a rule across sections: the keys it names
            return o.key in self.text
        return any(o.path[:len(q)] == q or q[:len(o.path)] == o.path for q in paths)


# keys that moved to another section: an older params.yaml is told where, not only that the key is unknown
MOVED: dict[str, str] = {"scale.shard_mb": "preprocess.shard_mb"}


def _pydantic_lines(err: ValidationError) -> list[_Line]:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        if e["type"] == "extra_forbidden":
            moved = MOVED.get(_dotted(loc))
            if moved:
                lines.append(_Line(loc, f"moved to {moved}: write it there (the same meaning)"))
                continue
            allowed = _allowed_keys(Params, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(_Line(loc, f"unknown key{hint}"))
            continue
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, KeysError):
            text = cause.at(_dotted(loc))
            lines.append(_Line((), text, tuple(f"{_dotted(loc)}.{k}" if loc else k for k in cause.keys)))
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # the rules across sections: one line each, naming their keys
            lines += [_Line((), m) for m in msg.split("\n")]
            continue
        got = e.get("input")
        shown = "" if isinstance(got, dict | list | BaseModel) or got is None else f" (got {describe(got)})"
        lines.append(_Line(loc, f"{msg}{shown}"))
    return lines


def _render(lines: list[_Line], source: str, overrides: Sequence[Override] = ()) -> str:
    out = [f"{source}: invalid parameters:"]
    for line in lines:
        out.append(f"  {line.render()}")
        out += [f"    {o.note(line.text.startswith('expected text'))}" for o in overrides if line.about(o)]
    return "\n".join(out)


def format_validation_error(err: ValidationError, source: str, overrides: Sequence[Override] = ()) -> str:
    """A pydantic error as the lines a user reads: ``  key.path: what is wrong (got …)``."""
    return _render(_pydantic_lines(err), source, overrides)


def parse_params(raw: Any, source: str = "params",
                 overrides: Mapping[str, Any] | Sequence[Override] | None = None) -> Params:
    """Validate a parsed YAML structure (strict types first, :mod:`.strict`); raise :class:`ParamsError` with
    readable lines. ``overrides`` (already applied to ``raw``) only add notes to the errors about their keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections, got {describe(raw)}")
    try:
        value, problems = strict.resolve(raw, Params)
        params = Params.model_validate(value)
        later: list[_Line] = []
    except ValidationError as err:
        later = _pydantic_lines(err)
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply to check (hundreds of levels): a params file has a few")\
            from None
    if not problems and not later:
        return params
    typed = [_Line(loc, text) for loc, text in problems]
    wrong = [tuple(str(p) for p in loc) for loc, _ in problems]

    def independent(line: _Line) -> bool:  # pydantic's errors about the same keys, or their sections, go
        loc = tuple(str(p) for p in line.loc)
        keys = [tuple(k.split(".")) for k in line.keys] or [loc]
        return not any(k[:len(w)] == w or w[:len(k)] == k for k in keys for w in wrong)

    lines = typed + ([line for line in later if independent(line)] if typed else later)
    raise ParamsError(_render(lines, source, as_overrides(overrides)))


def load_params(path: str | Path = "params.yaml",
                overrides: Mapping[str, Any] | Sequence[Override] | None = None) -> Params:
    """Read and validate ``params.yaml`` (:mod:`.reading`); ``overrides``: dotted keys to values (tests, KFP), or
    parsed ``--set`` options (:func:`.overrides.parse_set`)."""
    raw = reading.read_file(path)
    if raw is None:
        raw = {}
    if overrides and isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    return parse_params(raw, str(path), overrides)
