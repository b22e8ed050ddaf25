"""The image builds without building anything (fast, no Docker daemon needed): KFP-compatible Dockerfiles,
content tags, the wheelhouse check against the lock, the pass-through entrypoint, and `cxr image build`'s errors.
The builds themselves, and the containers they make, are tested in tests/containers (marker `container`)."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import env
from components.core.contract.errors import DataError
from cxr import image

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "infra" / "docker"


def stages(dockerfile: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    lines = [ln for ln in dockerfile.read_text().replace("\\\n", " ").splitlines() if ln and not ln.startswith("#")]
    out: list[list[str]] = [[]]
    for ln in lines:
        if ln.startswith("FROM "):
            out.append([])
        out[-1].append(ln)
    return out[1:]


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_task_images_do_not_capture_kfps_command(name):
    """KFP (and kfp.local's DockerRunner) passes `sh -c …` as the command: the entrypoint must run it as given."""
    runtime = stages(ROOT / image.IMAGES[name].dockerfile)[-1]
    (entrypoint,) = [ln for ln in runtime if ln.startswith("ENTRYPOINT")]
    assert entrypoint == 'ENTRYPOINT ["cxr-entrypoint"]'
    assert "USER 1000:1000" in runtime and any("chmod 1777 /home/cxr" in ln for ln in runtime)


@pytest.mark.parametrize("name", ["cpu", "mlflow", "gpu"])
def test_builds_are_multi_stage_with_a_base_arg_and_no_wheelhouse_in_the_runtime(name):
    text = (ROOT / image.IMAGES[name].dockerfile).read_text()
    default = {"gpu": "tensorflow/tensorflow:2.21.0-gpu"}.get(name, "python:3.11-slim-bookworm")
    assert f"ARG BASE_IMAGE={default}" in text and "ARG WHEELS=no-wheelhouse" in text
    runtime = stages(ROOT / image.IMAGES[name].dockerfile)[-1]
    assert runtime[0] == "FROM ${BASE_IMAGE}"
    assert not [ln for ln in runtime if "wheels" in ln.lower()], "the runtime stage must not see the wheelhouse"
    (install,) = [ln for s in stages(ROOT / image.IMAGES[name].dockerfile) for ln in s if "--require-hashes" in ln]
    assert "--no-index --find-links /tmp/wheels" in install


@pytest.mark.parametrize("name", ["cpu", "mlflow", "gpu"])
def test_the_code_hash_covers_every_file_the_build_copies(name):
    spec = image.IMAGES[name]
    text = (ROOT / spec.dockerfile).read_text()
    sources = set()
    for m in re.finditer(r"^COPY (?!--from)(.+)$", text, re.M):
        *srcs, _dest = m.group(1).split()
        sources |= {s for s in srcs if "${" not in s and not s.startswith("requirements/")}
    covered = set(spec.files)
    assert {s for s in sources if not any(s == c or s.startswith(c + "/") for c in covered)} == set()


def test_tags_follow_the_content(tmp_path):
    """Same inputs, same tag; a code change moves only the code part; a lock change moves the lock part."""
    for rel in (*image.IMAGES["mlflow"].files, image.IMAGES["mlflow"].dockerfile, "requirements/server.txt",
                "infra/docker/make-base.sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    first = image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert first == image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert re.fullmatch(r"cxr-mlops:mlflow-[0-9a-f]{12}-[0-9a-f]{12}", first)
    lock_part = hashlib.sha256((ROOT / "requirements/server.txt").read_bytes()).hexdigest()[:12]
    assert first.split("-")[2] == lock_part
    (tmp_path / image.IMAGES["mlflow"].dockerfile).write_text(
        (ROOT / image.IMAGES["mlflow"].dockerfile).read_text() + "\n# a change\n")
    second = image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert second.split("-")[2] == lock_part and second != first
    assert image.plan("mlflow", base="other-base:1", root=tmp_path).tag != second
    with (tmp_path / "requirements/server.txt").open("a") as f:
        f.write("\n# relocked\n")
    assert image.plan("mlflow", base="some-base:1", root=tmp_path).tag.split("-")[2] != lock_part


def fake_lock(tmp_path) -> tuple[Path, Path]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    files = {"alpha-1.0-py3-none-any.whl": b"alpha wheel", "beta_pkg-2.0.tar.gz": b"beta sdist"}
    for name, data in files.items():
        (wheels / name).write_bytes(data)
    digest = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    lock = tmp_path / "lock.txt"
    lock.write_text(f"alpha==1.0 \\\n    --hash=sha256:{digest['alpha-1.0-py3-none-any.whl']}\n"
                    f"beta-pkg==2.0 \\\n    --hash=sha256:{'0' * 64} \\\n"
                    f"    --hash=sha256:{digest['beta_pkg-2.0.tar.gz']}\n    # via something\n")
    return wheels, lock


def test_the_wheelhouse_is_checked_against_the_lock(tmp_path):
    wheels, lock = fake_lock(tmp_path)
    assert image.verify_wheelhouse(wheels, lock) == 2
    (wheels / "alpha-1.0-py3-none-any.whl").write_bytes(b"a substituted wheel")
    with pytest.raises(DataError, match=r"alpha-1\.0-py3-none-any\.whl: sha256 [0-9a-f]{64} is not one of the hashes"):
        image.verify_wheelhouse(wheels, lock)
    (wheels / "alpha-1.0-py3-none-any.whl").unlink()
    with pytest.raises(DataError, match="no file for alpha"):
        image.verify_wheelhouse(wheels, lock)


def test_the_real_locks_parse_with_a_hash_for_every_package():
    for lock in ("cpu.txt", "server.txt", "gpu.txt"):
        hashes = image.lock_hashes(ROOT / "requirements" / lock)
        assert len(hashes) > 50 and all(hashes.values()), lock


def test_the_entrypoint_passes_commands_through_and_maps_subcommands_to_cxr():
    script = DOCKER / "entrypoint.sh"
    out = subprocess.run(["sh", str(script), "sh", "-c", "echo kfp-command"], capture_output=True, text=True)
    assert out.stdout.strip() == "kfp-command"
    out = subprocess.run(["sh", str(script), "spec", "--help"], capture_output=True, text=True, env=env())
    assert out.returncode == 0 and "usage: cxr spec" in out.stdout


def cxr(*args: str, **extra: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cxr", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env(**extra), timeout=120)


def test_build_without_docker_exits_5_naming_what_to_install(tmp_path):
    # a PATH with python but no docker
    (tmp_path / "bin").mkdir()
    os.symlink(sys.executable, tmp_path / "bin" / "python")
    proc = subprocess.run([sys.executable, "-m", "cxr", "image", "build", "cpu"], capture_output=True, text=True,
                          cwd=ROOT, env={**env(), "PATH": str(tmp_path / "bin")}, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "docker not found" in proc.stderr and "dockerd" in proc.stderr


def test_build_with_the_daemon_down_exits_5_naming_what_to_start(tmp_path):
    if not (Path("/usr/bin/docker").exists() or Path("/usr/local/bin/docker").exists()):
        pytest.skip("no docker command on this machine (the test above covers that)")
    proc = cxr("image", "build", "mlflow", DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock")
    assert proc.returncode == 5, proc.stderr
    assert "Docker daemon is not running" in proc.stderr and "systemctl start docker" in proc.stderr


def test_run_local_with_a_missing_image_names_the_build_command(tmp_path):
    if not (Path("/usr/bin/docker").exists() or Path("/usr/local/bin/docker").exists()):
        pytest.skip("no docker command on this machine")
    proc = cxr("pipeline", "run-local", "--runner", "docker", "--image", "cxr-mlops:no-such-tag",
               "--root", str(tmp_path))
    if "Docker daemon is not running" in proc.stderr:
        pytest.skip("no Docker daemon here: the missing-image error needs one to ask")
    assert proc.returncode == 4, proc.stderr
    assert "cxr-mlops:no-such-tag is not in the local Docker" in proc.stderr and "cxr image build cpu" in proc.stderr
