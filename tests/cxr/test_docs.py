"""docs/architecture.md: its pictures are drawn from the code and kept fresh (cxr/docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

from components import catalog
from cxr import docs

ROOT = Path(__file__).resolve().parents[2]


def test_the_pictures_are_fresh():
    assert not docs.stale(ROOT), "run `cxr spec sync` and commit docs/architecture.md"


def test_the_step_graph_has_every_task_and_every_input():
    from pipelines.tasks import TASKS

    graph = docs.step_graph()
    for task in TASKS:
        spec = catalog.spec(task.step)
        assert f'["{task.step}' in graph
        for port in spec.inputs:
            assert f"-- {port.name} --> {task.step.replace('-', '_')}" in graph


def test_the_layers_and_core_parts_come_from_the_config_and_the_tree():
    layers = docs.layers(ROOT)
    assert "registry\n    ↓\n  eval" in layers
    parts = re.findall(r"^\| `(\w+)` \|", docs.core_parts(ROOT), re.M)
    assert parts == sorted(p.name for p in (ROOT / "components" / "core").iterdir() if (p / "__init__.py").exists())


def test_a_stale_block_is_found_and_rewritten(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / ".importlinter").write_text((ROOT / ".importlinter").read_text())
    (tmp_path / "components" / "core" / "part").mkdir(parents=True)
    (tmp_path / "components" / "core" / "part" / "__init__.py").write_text("")
    (tmp_path / "components" / "core" / "part" / "mod.py").write_text("x = 1\ny = 2\n")
    text = "".join(f"<!-- generated:{n} -->\nold\n<!-- /generated:{n} -->\n" for n in ("steps", "layers", "core"))
    (tmp_path / docs.DOC).write_text(text)
    assert docs.stale(tmp_path)
    assert docs.sync(tmp_path)["written"] == [docs.DOC]
    assert "| `part` | mod | 2 |" in (tmp_path / docs.DOC).read_text()
    assert not docs.stale(tmp_path)


def test_nothing_in_the_repo_cites_documents_outside_it():
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needles = ("DESIGN" + ".md", "DESIGN" + " §")
    texts = {f: (ROOT / f).read_text(errors="ignore") for f in files
             if (ROOT / f).is_file() and f.endswith((".py", ".md", ".toml", ".yaml", ".cfg", ".sh"))}
    assert [f for f, text in texts.items() if any(n in text for n in needles)] == []
