"""Real server processes for tests: an MLflow tracking server, `cxr serve`, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.e2e.helpers import BIN, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited {proc.returncode}\n" + (log.read_text()[-3000:] if log else ""))
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {timeout}s\n" + (log.read_text()[-3000:] if log else ""))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class MlflowServer:
    """``mlflow server`` with a sqlite backend and a local artifact folder (as mlflow/serve.sh runs it)."""

    def __init__(self, root: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.extra_env, self.extra_args = extra_env or {}, extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "server.log"
        cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1", *self.extra_args]
        self.proc = subprocess.Popen(cmd, env=env(**self.extra_env), stdout=log.open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_http(self.uri + "/health", self.proc, log=log)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


def start_cxr_serve(args: list[str], port: int, log: Path, **extra_env: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cxr", "serve", "--port", str(port), *args], env=env(**extra_env),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/health", proc, log=log)
    return proc
