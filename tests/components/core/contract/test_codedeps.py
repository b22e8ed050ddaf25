"""Code deps of the DVC stages come from the imports; the first-party import graph has no cycles; a stage
depends on the params code of the sections it reads, never on the whole schema."""

import ast
from pathlib import Path

import yaml

from components import catalog
from components.core.contract import codedeps

ROOT = Path(__file__).resolve().parents[4]
PACKAGES = ("components", "pipelines", "serving", "cxr")


def test_code_deps_follow_the_imports():
    """Editing the model card re-runs register (and nothing upstream); the decoder re-runs what decodes."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    card = "components/core/registry/modelcard.py"
    assert [n for n, s in stages.items() if card in s["deps"]] == ["register"]
    decoder = "components/core/data/images.py"
    assert {"ingest", "validate", "preprocess"} <= {n for n, s in stages.items() if decoder in s["deps"]}
    assert "components/core/model/training.py" not in stages["split"]["deps"]
    # imports inside functions count too: train imports the OOD module only inside run()
    assert "components/core/model/ood.py" in stages["train"]["deps"]


def test_code_deps_of_a_new_import(tmp_path):
    pkg = tmp_path / "components"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("X = 1\n")
    (pkg / "core" / "b.py").write_text("def f():\n    from components.core import a\n    return a.X\n")
    (pkg / "step.py").write_text("import json\nfrom components.core.b import f\n")
    assert codedeps.code_files("components.step", tmp_path) == [
        "components/core/a.py", "components/core/b.py", "components/step.py"]


def _import_graph() -> dict[str, set[str]]:
    """First-party module → the first-party modules it imports (anywhere in its code)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_a_stage_depends_on_the_params_of_its_sections_only():
    """No step imports the whole schema (params/schema.py) or a section it does not read: a stage's params code is
    exactly the modules of the sections it declares (and what those import), so a new key in one section re-runs
    only the stages that read it. Imports for annotations only (``if TYPE_CHECKING:``) do not count."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for spec in catalog.specs():
        if not spec.dvc:
            continue
        params_code = {d for d in stages[spec.name]["deps"] if d.startswith("components/core/contract/params/")}
        wanted = {f for s in spec.sections for f in codedeps.code_files(catalog.section_module(s), ROOT)
                  if f.startswith("components/core/contract/params/")}
        assert params_code == wanted | {"components/core/contract/params/sections.py"}, spec.name
    assert "components/core/contract/params/gate.py" not in stages["train"]["deps"]
    assert "components/core/contract/params/train.py" not in stages["evaluate"]["deps"]
    assert "components/core/contract/params/preprocess.py" not in stages["ingest"]["deps"]


def test_type_checking_imports_are_not_code_deps(tmp_path):
    pkg = tmp_path / "components"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "b.py").write_text("Y = 2\n")
    (pkg / "step.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                 "    from components.a import X\nelse:\n    from components.b import Y\n")
    assert codedeps.code_files("components.step", tmp_path) == ["components/b.py", "components/step.py"]
