"""Docker for local runs: the daemon and image checks, and an MLflow tracking server running from the MLflow
image on a Docker network of its own (what ``cxr pipeline run-local --runner docker`` starts and stops).

Everything goes through the ``docker`` command, so the errors are the ones a user sees in a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from components.core.contract.errors import CxrError, ServiceError

log = logging.getLogger(__name__)

MLFLOW_ALIAS = "mlflow"  # the MLflow container's name on the run's network (a cluster has its Service name)
MLFLOW_PORT = 5000


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``docker ARGS`` with its output captured; :class:`ServiceError` (exit 5) when Docker is not there."""
    exe = shutil.which("docker")
    if exe is None:
        raise ServiceError("docker not found: install Docker (Debian: `apt-get install docker.io`) and start its "
                           "daemon (`sudo systemctl start docker`, or `sudo dockerd &`)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CxrError(f"docker {' '.join(args[:3])}… failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


def require_daemon() -> None:
    """:class:`ServiceError` (exit 5) naming what to start when the Docker daemon does not answer."""
    proc = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
    if proc.returncode != 0:
        raise ServiceError("the Docker daemon is not running (`docker version` could not reach it): start it with "
                           "`sudo systemctl start docker` (or `sudo dockerd &`), and make sure this user may use it "
                           f"(the docker group). docker said: {proc.stderr.strip()[-300:]}")


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False, timeout=30).returncode == 0


def require_image(image: str, build_command: str) -> None:
    """A clear error naming the build command when ``image`` is not in the local Docker."""
    require_daemon()
    if not image_exists(image):
        raise CxrError(f"image {image} is not in the local Docker: build it with `{build_command}` "
                       "(it prints the tag), or pull it from your registry")


def run_user() -> str:
    """The user the containers run as: this user (files stay theirs), or the images' own non-root user (1000)
    when this is root."""
    uid = os.getuid()
    return f"{uid}:{os.getgid()}" if uid != 0 else "1000:1000"


def writable_by_containers(path: Path) -> Path:
    """Create ``path``; when this process is root the containers run as uid 1000, so the folder is opened to
    them (a scratch folder of local runs: pipeline outputs, the local MLflow store)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        path.chmod(0o777)
    return path


class MlflowContainer:
    """``mlflow server`` from the MLflow image, on network ``network`` as ``mlflow:5000`` (no basic auth: the
    network is the run's own), its store in ``data_dir`` (kept between runs), published on a free loopback port
    so this machine can read it (``host_uri``)."""

    def __init__(self, image: str, network: str, data_dir: Path) -> None:
        self.image, self.network, self.data_dir = image, network, data_dir
        self.name = f"{network}-mlflow"
        self.uri = f"http://{MLFLOW_ALIAS}:{MLFLOW_PORT}"  # what the task containers use
        self.host_uri = ""

    def start(self, timeout: float = 120) -> MlflowContainer:
        writable_by_containers(self.data_dir)
        docker("run", "-d", "--name", self.name, "--network", self.network, "--network-alias", MLFLOW_ALIAS,
               "--user", run_user(), "-v", f"{self.data_dir.resolve()}:/var/lib/mlflow", "-p",
               f"127.0.0.1::{MLFLOW_PORT}", self.image, "server", "--host=0.0.0.0", f"--port={MLFLOW_PORT}",
               "--backend-store-uri=sqlite:////var/lib/mlflow/mlflow.db",
               "--artifacts-destination=/var/lib/mlflow/artifacts", "--serve-artifacts",
               f"--allowed-hosts={MLFLOW_ALIAS},{MLFLOW_ALIAS}:*,localhost:*,127.0.0.1:*", "--workers=1")
        port = docker("port", self.name, f"{MLFLOW_PORT}/tcp").stdout.split(":")[-1].strip()
        self.host_uri = f"http://127.0.0.1:{port}"
        self._wait(timeout)
        log.info("MLflow server %s from %s: %s on network %s, %s from this machine", self.name, self.image,
                 self.uri, self.network, self.host_uri)
        return self

    def _wait(self, timeout: float) -> None:
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.host_uri + "/health", timeout=2).status_code == 200:
                    return
            if docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() == "false":
                break
            time.sleep(0.5)
        logs = docker("logs", "--tail", "40", self.name, check=False)
        raise ServiceError(f"the MLflow container {self.name} ({self.image}) did not answer /health in {timeout:.0f} s:"
                           f"\n{(logs.stdout + logs.stderr)[-2000:]}")

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)


@contextlib.contextmanager
def run_network(prefix: str = "cxr-run"):
    """A Docker network of its own for one run; removed afterwards."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    docker("network", "create", name)
    try:
        yield name
    finally:
        docker("network", "rm", name, check=False)
