"""Named recipes: small ``params.yaml`` overlays that are known to work, applied with one command.

A recipe is a YAML file in ``components/recipes/<name>.yaml`` (shipped with the package): an optional
``recipe:`` block (``description``, ``hardware``, ``notes``) and params sections to overlay. ``cxr recipe
apply NAME…`` writes them into ``params.yaml`` — the file ``dvc repro``, ``dvc exp run`` and ``cxr
pipeline compile`` (KFP) all read — keeping its comments and layout, and validates the result first:
a combination the schema refuses is never written.

Overlay rule (schema-aware, :func:`overlay`): a params *section* (a mapping the schema models, such as
``train`` or ``train.head``) is merged key by key; any other value — a number, a list such as
``train.phases``, a free mapping such as ``evaluate.target_sensitivity`` — is replaced whole. So a task
switch cannot leave a stale class behind, and a training recipe that sets every ``train`` key gives the
same ``train`` section whatever the file held before (a test checks that for every training recipe).
Keys that say *where* training runs rather than *what* it trains (:data:`PLACEMENT_KEYS`:
``train.workers``) are left as the file has them: a recipe does not move a run off its cluster.
"""

from __future__ import annotations

import copy
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from components.core.contract.errors import ParamsError
from components.core.contract.params import reading, strict
from components.core.contract.params.overrides import Override, as_overrides
from components.core.contract.params.schema import Params, parse_params

log = logging.getLogger(__name__)

PLACEMENT_KEYS = frozenset({"workers"})  # train keys a recipe leaves alone: where training runs, not what

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
META_KEY = "recipe"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    hardware: str
    notes: list[str] = field(default_factory=list)
    overlay: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "hardware": self.hardware,
                "sections": sorted(self.overlay)}


def names(directory: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load(name: str, directory: Path = RECIPES_DIR) -> Recipe:
    """One recipe by name; an unknown name lists the known ones."""
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown recipe {name!r} (recipes: {', '.join(names(directory)) or 'none'}; "
                          "`cxr recipe list`)")
    raw = reading.read_file(path) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: a recipe is a mapping of params sections (and recipe:), got "
                          f"{strict.describe(raw)}")
    meta = raw.pop(META_KEY, None) or {}
    placed = sorted(PLACEMENT_KEYS & set((raw.get("train") or {}) if isinstance(raw.get("train"), dict) else ()))
    if placed:
        raise ParamsError(f"{path}: a recipe says what to train, not where: remove train.{', train.'.join(placed)}")
    return Recipe(name=name, description=str(meta.get("description", "")).strip(),
                  hardware=str(meta.get("hardware", "any")), notes=[str(n) for n in meta.get("notes") or []],
                  overlay=raw)


# ---------------------------------------------------------------- the overlay rule
def _section_type(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The sub-model behind ``key`` of ``model`` when it is a section (merged), else None (replaced)."""
    if model is None:
        return None
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            candidates = [f.annotation, *get_args(f.annotation)]
            return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return None


def overlay(base: dict[str, Any], update: dict[str, Any], model: type[BaseModel] | None = Params) -> dict[str, Any]:
    """``base`` with ``update`` laid over it by the rule in the module docstring (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        sub = _section_type(model, key)
        if sub is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def changes(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two parsed params trees."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for k in list(before) + [k for k in after if k not in before]:
            out += changes(before.get(k), after.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if before != after else []


def combined(recipe_names: list[str], directory: Path = RECIPES_DIR) -> dict[str, Any]:
    """The overlays of several recipes, later ones winning (by the same rule)."""
    out: dict[str, Any] = {}
    for name in recipe_names:
        out = overlay(out, load(name, directory).overlay)
    return out


def show(name: str, params_path: str | Path | None = None, directory: Path = RECIPES_DIR) -> dict[str, Any]:
    """A recipe: its metadata, its overlay, and the warnings of the params it would produce."""
    r = load(name, directory)
    base = _read_plain(Path(params_path)) if params_path and Path(params_path).is_file() else {}
    result = parse_params(overlay(base, r.overlay), f"{params_path or 'defaults'} + recipe {name}")
    return {**r.summary(), "notes": r.notes, "overlay": r.overlay, "warnings": result.train.warnings()}


def listing(directory: Path = RECIPES_DIR) -> list[dict[str, Any]]:
    return [load(n, directory).summary() for n in names(directory)]


# ---------------------------------------------------------------- writing params.yaml (comments kept)
def _read_plain(path: Path) -> dict[str, Any]:
    raw = reading.read_file(path) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections, got {strict.describe(raw)}")
    return raw


def _roundtrip():
    from ruamel.yaml import YAML
    from ruamel.yaml.representer import RoundTripRepresenter

    y = YAML()  # round trip: comments, order and flow styles of untouched parts survive
    y.preserve_quotes = True
    y.width = 4096  # never wrap a flow-style phase onto two lines
    y.indent(mapping=2, sequence=4, offset=2)

    def float_repr(representer, value: float):
        # YAML 1.1 readers (PyYAML) read 1e-05 as a string: always write a dot in the mantissa
        text = repr(float(value))
        if "e" in text:
            mantissa, exp = text.split("e")
            mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
            text = f"{mantissa}e{exp[0]}{int(exp[1:])}"  # 1e-05 -> 1.0e-5
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    class Representer(RoundTripRepresenter):
        pass

    Representer.add_representer(float, float_repr)
    Representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    y.Representer = Representer
    return y


def _styled(value: Any) -> Any:
    """A new value for the file: short mappings and lists in flow style (one line), like params.yaml's own."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        m = CommentedMap((k, _styled(v)) for k, v in value.items())
        m.fa.set_flow_style()
        return m
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v) for v in value)
        if all(not isinstance(v, dict | list) for v in value):
            seq.fa.set_flow_style()
        else:
            seq.fa.set_block_style()
        return seq
    return value


def _set_in(node, update: dict[str, Any], model: type[BaseModel] | None) -> None:
    """Apply ``update`` to a ruamel mapping in place, by the overlay rule."""
    from ruamel.yaml.comments import CommentedMap

    for key, value in update.items():
        sub = _section_type(model, key)
        if sub is not None and isinstance(value, dict):
            current = node.get(key)
            if not isinstance(current, dict):
                current = CommentedMap()
                node[key] = current
            _set_in(current, value, sub)
        elif node.get(key) != value:
            node[key] = _styled(value)


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def apply(recipe_names: list[str], params_path: str | Path = "params.yaml",
          overrides: dict[str, Any] | list[Override] | None = None, dry_run: bool = False,
          directory: Path = RECIPES_DIR) -> dict[str, Any]:
    """Lay the named recipes (then ``overrides``: dotted keys, or parsed ``--set`` options) over ``params_path``;
    validate; write it back with its comments (unless ``dry_run``). Returns what changed and the warnings of the
    result. An override is written as validated (``--set review.enabled=yes`` writes ``true``)."""
    from components.core.contract.fsutil import write_text
    from components.core.contract.params.schema import apply_overrides

    if not recipe_names:
        raise ParamsError(f"name at least one recipe ({', '.join(names(directory))})")
    path = Path(params_path)
    before = _read_plain(path)
    update = combined(recipe_names, directory)
    after = overlay(before, update)
    overrides = as_overrides(overrides)
    if overrides:
        after = apply_overrides(after, overrides)
    params = parse_params(after, f"{path} + recipe {' + '.join(recipe_names)}", overrides)
    resolved, _ = strict.resolve(after, Params)

    y = _roundtrip()
    doc = y.load(path.read_text(encoding="utf-8"))
    _set_in(doc, strict.plain(update), Params)  # YAML 1.1 markers (yes, NO) as their text: ruamel writes str
    for o in overrides:
        node = doc
        *parents, leaf = o.path
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _styled(strict.plain(_at(resolved, o.path)))
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    reread = reading.read(text, f"{path} (as written)")
    written = parse_params(reread, f"{path} (as written)")
    if written != params:  # the text must read back (with PyYAML too) as exactly what was validated
        raise ParamsError(f"recipe {recipe_names}: the rewritten {path} does not read back as validated: "
                          f"{changes(params.model_dump(mode='json'), written.model_dump(mode='json'))}")
    changed = changes(before, reread)
    if not dry_run and changed:
        write_text(path, text)
    warnings = params.train.warnings()
    for w in warnings:
        log.warning("%s", w)
    return {"applied": recipe_names, "params": str(path), "changed": changed, "written": bool(changed) and not dry_run,
            "warnings": warnings,
            "next": "dvc repro (or dvc exp run); for Kubeflow: cxr pipeline compile, then cxr pipeline submit"}
