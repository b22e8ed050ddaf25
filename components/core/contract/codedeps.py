"""The source files a step's code reaches through its imports: the code dependencies of its DVC stage.

Derived from the import statements themselves (every ``import``/``from … import`` anywhere in a module, also
inside functions; not those under ``if TYPE_CHECKING:``, which only annotations read), so editing
``components/core/registry/modelcard.py`` re-runs only the stages whose modules import it, and a new import
cannot be forgotten in ``dvc.yaml``. Only first-party modules under ``components/`` count; third-party libraries
are pinned by the lock files instead.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = "components"


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a first-party module (``a/b.py`` or ``a/b/__init__.py``), or None when it is not one."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(module: str, root: Path) -> set[str]:
    """The first-party modules that ``module``'s source imports (at any depth of its code)."""
    path = module_file(module, root)
    if path is None:
        return set()
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` imports the module pkg.mod when there is one, else names from pkg
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            # importing a.b.c also runs a/__init__.py and a/b/__init__.py
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if module_file(m, root) is not None and m != module}


def _walk(node: ast.AST):
    """Every node of ``node``'s tree except the bodies of ``if TYPE_CHECKING:`` (imports for annotations only: they
    never run, so they change no result)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            yield from (n for part in child.orelse for n in (part, *_walk(part)))
            continue
        yield child
        yield from _walk(child)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.cache
def closure(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """Every first-party module ``module`` reaches through its imports, itself included (sorted)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_imported(current, root) - seen)
    return tuple(sorted(seen))


def code_files(module: str, root: Path = ROOT) -> list[str]:
    """The repository-relative source files of :func:`closure`, leaving out empty package ``__init__`` files."""
    files = []
    for m in closure(module, root):
        path = module_file(m, root)
        if path is not None and path.stat().st_size > 0:
            files.append(path.relative_to(root).as_posix())
    return sorted(files)
