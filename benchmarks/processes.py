"""Real processes, run as a user runs them: a copy of the repository in a new git repo, commands with clear
failures, tiny pipeline params, an MLflow tracking server and ``cxr serve`` on free loopback ports.

The benchmarks' own helpers; the tests use them too (tests may import benchmarks, benchmarks never import tests:
``.importlinter``). Nothing here is used by the pipeline itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(**extra: str | None) -> dict[str, str]:
    """The calling process's environment for a child, plus ``extra`` (a ``None`` value removes the variable)."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update({"DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "GIT_AUTHOR_NAME": "t",
              "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"})
    for key, value in extra.items():
        if value is None:
            e.pop(key, None)
        else:
            e[key] = value
    return e


def sh(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, **extra: str | None):
    """Run a command in a repository copy (:func:`copy_repo`). It uses that copy's own MLflow store (its
    params' ``mlflow.tracking_uri``) unless ``MLFLOW_TRACKING_URI`` is passed here: a URI the calling
    process happens to hold (a test's fixture) must not send the copy's runs elsewhere."""
    extra = {"MLFLOW_TRACKING_URI": None, **extra}
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(dest: Path, params_update: dict | None = None) -> Path:
    """Copy the project's files (tracked + untracked, not ignored) into a new git repo at ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    skip = ("dvc.lock", "reports/", "pipelines/compiled/")
    for rel in filter(None, files):
        if rel.startswith(skip) or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    if params_update:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        _merge(params, params_update)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "init"], dest)
    return dest


def _merge(base: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


TINY = {
    "data": {"demo": {"patients_per_class": 12, "max_images_per_patient": 2, "min_side": 64, "max_side": 96}},
    "train": {"image_size": 32, "batch_size": 16, "head": {"dense_units": 16, "dropout": 0.1},
              "phases": [{"epochs": 2, "trainable": "head", "lr": 0.003},
                         {"epochs": 2, "trainable": "all", "lr": 0.003}]},
    # 1-2 validation patients per class: the conformal operating point can keep 0.5, not params.yaml's 0.85
    "evaluate": {"gradcam_per_class": 1, "top_losses": 4, "target_sensitivity": {"COVID19": 0.5, "PNEUMONIA": 0.5}},
}


def tiny_pipeline_params(path: Path, **overrides) -> Path:
    """A params file for a whole pipeline run in seconds per step: the demo, tiny (:data:`TINY`: 32 px, 4 epochs),
    a small CNN, the gate's minimums at 0 (a run ends with a challenger); ``overrides`` as ``key.path=value``."""
    from components.core.contract.params.schema import apply_overrides, parse_params

    raw = apply_overrides(TINY, {
        "train.backbone": "small_cnn", "train.weights": "none", "train.freeze_batchnorm": False,
        "gate.min_accuracy": 0.0, "gate.min_macro_f1": 0.0, "gate.min_roc_auc": 0.0, "gate.min_sensitivity": {},
        "validate.workers": 1, **overrides})
    path.write_text(yaml.safe_dump(parse_params(raw).model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


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
        # MLflow's job runner (GenAI jobs, unused here) starts 8 extra processes per server
        extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env}
        self.proc = subprocess.Popen(cmd, env=env(**extra), stdout=log.open("a"), stderr=subprocess.STDOUT,
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
