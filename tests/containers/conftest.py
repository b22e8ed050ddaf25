"""Docker for the container tests: the daemon (skip without it on a laptop, fail under CI), this checkout's images
(built when missing: offline where debootstrap is there, else from the public base), and one real pipeline run
in containers shared by the pipeline and serving tests.

Run them with ``pytest tests/containers --containers`` (.ci/run does, after building the images)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.processes import env, tiny_pipeline_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def docker_ready() -> None:
    from components.core.contract.errors import ServiceError
    from pipelines import containers

    try:
        containers.require_daemon()
    except ServiceError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the container tests and needs Docker: {err} (.ci/system-deps.sh installs and "
                        "starts it)")
        pytest.skip(f"no Docker here: {err}")


def _image(name: str) -> str:
    from cxr import image
    from pipelines import containers

    tag = image.local_tag(name)
    if not containers.image_exists(tag):
        if os.environ.get("CI"):
            pytest.fail(f"image {tag} is missing: .ci/run builds it first (`cxr image build {name} --offline`)")
        offline = shutil.which("debootstrap") is not None
        tag = image.build(name, offline=offline)["image"]
    return tag


@pytest.fixture(scope="session")
def cpu_image(docker_ready) -> str:
    return _image("cpu")


@pytest.fixture(scope="session")
def mlflow_image(docker_ready) -> str:
    return _image("mlflow")


def tiny_params_file(path: Path, **overrides) -> Path:
    """The demo, tiny (32 px, 4 epochs) with the gate's minimums at 0: a run ends with a challenger."""
    return tiny_pipeline_params(path, **overrides)


def cxr(*args: str, timeout: float = 1200, **extra: str | None) -> subprocess.CompletedProcess:
    """``python -m cxr ARGS`` from the repository root; its output captured."""
    return subprocess.run([sys.executable, "-m", "cxr", *args], cwd=ROOT, env=env(**extra), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def docker_pipeline(cpu_image, mlflow_image, tmp_path_factory) -> dict:
    """One ``cxr pipeline run-local --runner docker`` of the tiny demo: every task in a container of the CPU
    image, an MLflow server from the MLflow image on the run's own network."""
    root = tmp_path_factory.mktemp("docker-run")
    params = tiny_params_file(root / "params.yaml")
    started = time.time()
    proc = cxr("pipeline", "run-local", "--runner", "docker", "--image", cpu_image, "--mlflow-image", mlflow_image,
               "--params", str(params), "--root", str(root / "kfp"), CXR_PROGRESS_SECONDS="5")
    seconds = time.time() - started
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1:] if "\n{" in proc.stdout else proc.stdout)
    return {"root": root, "result": result, "log": proc.stdout + proc.stderr, "seconds": seconds,
            "image": cpu_image, "mlflow_image": mlflow_image}
