"""The hash-pinned lock files in requirements/ agree with the pins in pyproject.toml (offline, fast).

Regenerate them with `bash requirements/lock.sh` after changing a pin.
"""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
MAIN = PROJECT["dependencies"]
MLFLOW = [d for d in MAIN if d.startswith("mlflow[")]

# lock file -> the pyproject pins it must hold
LOCKS = {
    "cpu-dev.txt": MAIN + EXTRAS["cpu"] + EXTRAS["dev"],
    "cpu.txt": MAIN + EXTRAS["cpu"],
    "gpu.txt": MAIN + EXTRAS["gpu"],
    "gpu-image.txt": MAIN,
    "server.txt": MLFLOW + EXTRAS["server"],
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pin(requirement: str) -> tuple[str, str]:
    m = PIN.match(requirement.strip())
    assert m, f"pyproject.toml: {requirement!r} is not pinned with =="
    return normalize(m.group(1)), m.group(3)


def entries(lock: str) -> list[str]:
    """One string per requirement: continuation lines joined, comments dropped."""
    text = (REQ / lock).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def locked(lock: str) -> dict[str, str]:
    out = {}
    for entry in entries(lock):
        name, version = pin(entry.split()[0])
        assert name not in out, f"{lock}: {name} twice"
        out[name] = version
    return out


@pytest.mark.parametrize("lock", LOCKS)
def test_every_line_is_pinned_with_hashes(lock):
    found = entries(lock)
    assert len(found) > 20, lock
    for entry in found:
        first, *options = entry.split()
        pin(first)
        assert options and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), f"{lock}: {entry[:80]}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pyproject_pin_is_in_the_lock_with_its_version(lock):
    have = locked(lock)
    for requirement in LOCKS[lock]:
        name, version = pin(requirement)
        assert have.get(name) == version, f"{lock}: {name} is {have.get(name)}, pyproject.toml pins {version}"


def test_locks_agree_on_every_shared_package():
    versions: dict[str, dict[str, str]] = {}
    for lock in LOCKS:
        for name, version in locked(lock).items():
            versions.setdefault(name, {})[lock] = version
    disagree = {name: v for name, v in versions.items() if len(set(v.values())) > 1}
    assert not disagree


def test_the_gpu_image_and_mlflow_server_locks_hold_no_tensorflow():
    # the GPU image takes TensorFlow and CUDA from its base image; the MLflow server needs neither
    for lock in ("gpu-image.txt", "server.txt"):
        assert not [n for n in locked(lock) if n.startswith(("tensorflow", "nvidia-"))], lock
    assert set(locked("gpu-image.txt").items()) <= set(locked("gpu.txt").items())


def test_installs_use_the_locks_with_hash_checking():
    ci = (ROOT / ".ci" / "test").read_text()  # README's test command, which .ci/run runs
    assert "pip install -q --require-hashes -r requirements/cpu-dev.txt" in ci
    for dockerfile, lock in (("Dockerfile", "cpu.txt"), ("Dockerfile.gpu", "gpu-image.txt"),
                             ("Dockerfile.mlflow", "server.txt")):
        text = (ROOT / "infra" / "docker" / dockerfile).read_text()
        # the GPU image's lock is a build arg: gpu-image.txt on TensorFlow's image (the default), gpu.txt offline
        text = text.replace("${LOCK}", lock) if f"ARG LOCK={lock}" in text else text
        installs = " ".join(line for line in text.splitlines() if "pip install" in line)
        assert f"--require-hashes -r /tmp/requirements/{lock}" in installs or \
            f"--require-hashes -r requirements/{lock}" in installs, dockerfile
        assert "tensorflow" not in installs, dockerfile


def test_ci_runs_exactly_the_readme_test_command():
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(blocks) == 2 and "--require-hashes -r requirements/cpu-dev.txt" in blocks[0]
    assert blocks[1] in (ROOT / ".ci" / "run").read_text().splitlines()
