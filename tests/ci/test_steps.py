""".ci/run and .ci/test, the real scripts, in a copy of .ci/ whose commands are stand-ins that log their calls:
the first step that fails stops the run, named with its exit status and its own message, and nothing after it
runs (what a `&&` chain under `set -e` did not do: it went on to `cxr image build` without the venv)."""

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("system-deps", "python3.11", "pip", "ruff", "lint-imports", "deptry", "pytest", "cxr")


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def tool(name: str) -> str:
    """A stand-in that logs its command line and fails (with a message) when $FAIL names it."""
    return (f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n'
            f'if [ "$FAIL" = "{name}" ]; then echo "{name}: it broke" >&2; exit 7; fi\n')


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".ci").mkdir()
    for f in ("run", "test", "steps.sh"):
        shutil.copy(ROOT / ".ci" / f, tmp_path / ".ci" / f)
    _write(tmp_path / ".ci" / "system-deps.sh", tool("system-deps"))
    bin_, venv_bin = tmp_path / "bin", tmp_path / "venv-bin"
    bin_.mkdir()
    venv_bin.mkdir()
    # python3.11 -m venv .venv: a venv whose activate puts the other stand-ins on PATH
    _write(bin_ / "python3.11", tool("python3.11") + f'mkdir -p .venv/bin\necho "PATH={venv_bin}:$PATH" '
                                                     '> .venv/bin/activate\n')
    for name in STEPS[2:]:
        _write(venv_bin / name, tool(name))
    return tmp_path


def run(project: Path, script: str, fail: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {"PATH": f"{project / 'bin'}:/usr/bin:/bin", "CALLS": str(project / "calls"), "FAIL": fail}
    proc = subprocess.run(["bash", str(project / ".ci" / script)], env=env, capture_output=True, text=True,
                          timeout=60)
    calls = (project / "calls").read_text().splitlines() if (project / "calls").exists() else []
    return proc, [c.split()[0] for c in calls]


def test_every_step_runs_in_order_then_the_container_stage(project):
    proc, calls = run(project, "run")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["system-deps", "python3.11", "pip", "pip", "ruff", "lint-imports", "deptry", "pytest",
                     "cxr", "cxr", "pytest"]
    assert "::: step pytest: done in" in proc.stderr and "container stage:" in proc.stdout


@pytest.mark.parametrize(("failing", "step"), [("system-deps", "system packages"), ("ruff", "ruff"),
                                                ("pytest", "pytest"), ("cxr", "build the MLflow image")])
def test_the_first_failed_step_stops_the_run_named_with_its_message(project, failing, step):
    proc, calls = run(project, "run", fail=failing)
    assert proc.returncode == 7
    assert f"::: FAILED at step '{step}' (exit 7)" in proc.stderr
    assert f"{failing}: it broke" in proc.stderr  # the step's own message, just above
    assert calls[-1] == failing  # nothing ran after it
    assert calls.count(failing) == 1


def test_readme_test_command_alone_stops_at_its_failed_step(project):
    proc, calls = run(project, "test", fail="lint-imports")
    assert proc.returncode == 7 and "::: FAILED at step 'import layers' (exit 7)" in proc.stderr
    assert calls == ["system-deps", "python3.11", "pip", "pip", "ruff", "lint-imports"]
