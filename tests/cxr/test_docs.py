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


# ---------------------------------------------------------------- every `cxr …` the docs show exists
_CXR = re.compile(r"(?:^|(?<=[\s;&|(`\"']))cxr\s+([a-z][\w-]*(?:[ \t]+[^\n`#;&|)]*)?)")


def _doc_commands() -> list[tuple[str, str]]:
    """(file, command text after ``cxr``) for every ``cxr`` command in README.md and docs/*.md: in code blocks and
    inline code, up to the end of the command (``&&``, ``;``, ``|``, ``)``, a comment, the end of the span)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        spans = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            span = span.replace("\\\n", " ")
            for m in _CXR.finditer(span):
                found.append((path.relative_to(ROOT).as_posix(), m.group(1).strip()))
    return found


def _parser_for(parser, words: list[str]):
    """The (sub)parser the words name, and the words left for it."""
    import argparse

    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


def _problem(command: str, subs: dict) -> str | None:
    """Why ``cxr <command>`` is not a real command, or None."""
    import argparse
    import shlex

    try:
        words = shlex.split(command.replace("…", ""), comments=True)
    except ValueError:
        words = command.split()
    if not words or words[0].startswith("-"):
        return None  # `cxr --help`
    if words[0] not in subs:
        return f"no command {words[0]!r}"
    parser, rest = _parser_for(subs[words[0]], words[1:])
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) and \
            (not rest or not rest[0].startswith("-")):  # `cxr spec` names the group
        return f"{parser.prog}: {rest[0]!r} is not one of its actions" if rest else None
    positionals = [a for a in parser._actions if not a.option_strings]
    if rest and not positionals and not rest[0].startswith(("-", "[", "<", "$")) and not rest[0].isupper():
        return f"{parser.prog} takes no argument {rest[0]!r}"
    options = {s for a in parser._actions for s in a.option_strings}
    for word in rest:
        flag = word.split("=", 1)[0].strip("[]")
        if flag.startswith("--") and flag not in options:
            return f"{parser.prog} has no option {flag}"
    return None


def _subcommands() -> dict:
    import argparse

    from cxr.cli import build_parser

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_docs_check_finds_a_wrong_command():
    subs = _subcommands()
    assert _problem("promote --version 3 --force --reason x", subs) is None
    assert _problem("recipe apply NAME [NAME…] [--set KEY=VALUE …]", subs) is None
    assert "no option --colour" in _problem("serve --colour red", subs)
    assert "no command" in _problem("frobnicate", subs)
    assert "is not one of its actions" in _problem("recipe paint", subs)
    assert "takes no argument" in _problem("promote now", subs)


def test_every_cxr_command_in_the_docs_exists_with_its_options():
    """What a reader copies from README.md or docs/ is a real command: its subcommands exist, and so does every
    option it uses (placeholders such as NAME or <you> are not checked)."""
    commands = _doc_commands()
    assert len(commands) > 40, "the docs show many cxr commands: the extraction broke"
    subs = _subcommands()
    bad = [f"{where}: cxr {command}: {why}" for where, command in commands
           if (why := _problem(command, subs)) is not None]
    assert bad == []
