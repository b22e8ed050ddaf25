"""The pictures in ``docs/architecture.md``, drawn from the code: the step graph from the step specs and the
pipeline's wiring, the layers from ``.importlinter``, the core's parts from the package tree.

Each picture sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``; ``cxr spec sync``
rewrites them, ``cxr spec check`` (and a test) fails when one is stale.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

DOC = "docs/architecture.md"


def step_graph() -> str:
    """A Mermaid flowchart: one node per pipeline task, one edge per input, labelled with the input's name."""
    from pipelines.tasks import task_specs, wiring

    pairs = task_specs()
    wires = wiring(pairs)
    lines = ["```mermaid", "flowchart LR"]
    for spec, task in pairs:
        gated = f"<br/><i>when {task.when} passed</i>" if task.when else ""
        lines.append(f'    {_node(spec.name)}["{spec.name}{gated}"]')
    for (step, port), (producer, _out, _sub, _kind) in wires.items():
        lines.append(f"    {_node(producer)} -- {port} --> {_node(step)}")
    lines.append("```")
    return "\n".join(lines)


def _node(step: str) -> str:
    return step.replace("-", "_")


def layers(root: Path) -> str:
    """The ``layers`` contracts of ``.importlinter`` as text: the top layer first; ``|`` separates independent
    modules of one layer."""
    cfg = configparser.ConfigParser()
    cfg.read(root / ".importlinter")
    out = ["```"]
    for section in cfg.sections():
        if cfg[section].get("type") != "layers":
            continue
        container = cfg[section].get("containers", "").strip()
        out.append(f"{cfg[section]['name']}" + (f"   (inside {container})" if container else ""))
        for layer in (x.strip() for x in cfg[section]["layers"].strip().splitlines()):
            names = [n.strip().removeprefix("components.") for n in layer.split("|")]
            out.append("  " + ("  |  ".join(names) if len(names) < 5 else _wrap(names)))
            out.append("    ↓")
        out[-1] = ""
    return "\n".join(out).rstrip() + "\n```"


def _wrap(names: list[str], width: int = 100) -> str:
    rows, row = [], ""
    for n in names:
        piece = (" | " if row else "") + n
        if len(row) + len(piece) > width:
            rows.append(row + " |")
            row = n
        else:
            row += piece
    return "\n  ".join([*rows, row])


def core_parts(root: Path) -> str:
    """Each part of ``components/core`` with its modules and lines of code (a table)."""
    out = ["| part | modules | lines |", "|---|---|---|"]
    core = root / "components" / "core"
    for part in sorted(p for p in core.iterdir() if (p / "__init__.py").is_file()):
        files = sorted(f for f in part.rglob("*.py") if f.name != "__init__.py")
        names = ", ".join(str(f.relative_to(part).with_suffix("")) for f in files)
        lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
        out.append(f"| `{part.name}` | {names} | {lines} |")
    return "\n".join(out)


def pictures(root: Path) -> dict[str, str]:
    return {"steps": step_graph(), "layers": layers(root), "core": core_parts(root)}


_BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def render(text: str, root: Path) -> str:
    """``text`` with every generated block replaced by its current picture."""
    pics = pictures(root)
    missing = set(pics) - {m["name"] for m in _BLOCK.finditer(text)}
    if missing:
        raise ValueError(f"{DOC} lacks the generated blocks {sorted(missing)}")
    return _BLOCK.sub(lambda m: m.group(1) + pics[m["name"]] + "\n" + m.group(4), text)


def stale(root: Path | None = None) -> bool:
    root = Path.cwd() if root is None else root
    text = (root / DOC).read_text(encoding="utf-8")
    return render(text, root) != text


def sync(root: Path | None = None) -> dict:
    """Rewrite the generated blocks of ``docs/architecture.md`` when they differ."""
    from components.core.contract.fsutil import write_text

    root = Path.cwd() if root is None else root
    path = root / DOC
    text = path.read_text(encoding="utf-8")
    new = render(text, root)
    if new != text:
        write_text(path, new)
    return {"written": [DOC] if new != text else [], "unchanged": [] if new != text else [DOC]}
