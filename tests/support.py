"""Real processes for tests and benchmarks: a copy of the repository, commands with clear failures,
an MLflow tracking server and ``cxr serve`` on free loopback ports.

Tests and ``benchmarks/`` both import this module (benchmarks never import ``tests``). Nothing
here is used by the pipeline itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def serve_http(handler: type) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``handler`` (a ``BaseHTTPRequestHandler``) on a free 127.0.0.1 port in a daemon thread: the
    server (``shutdown()`` it) and its base URL. For the fake APIs of tests (Kubernetes, KFP, Prometheus)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def reply_json(handler: BaseHTTPRequestHandler, status: int, obj) -> None:
    """Send ``obj`` as a JSON response from inside a request handler."""
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


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
    from components.core.contract.config import apply_overrides, parse_params

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


def push_bias(model_dir: Path, out: Path, shift: dict[int, float] | None = None, negate: bool = False) -> Path:
    """A copy of a model folder (``model.keras`` and everything beside it: lineage, train summary, preprocessing
    record) whose last layer is changed: its bias moved by ``shift`` (class index -> amount), or (``negate``) its
    logits negated, so that it predicts what the model found least likely (wrong wherever the model was right).
    The same training run and run id, other weights."""
    from components.core.model import models

    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    model = models.load_model(out / "model.keras")
    kernel, bias = model.get_layer(models.LOGITS_NAME).weights[:2]
    k, b = kernel.numpy(), bias.numpy()
    for i, amount in (shift or {}).items():
        b[i] += amount
    if negate:
        k, b = -k, -b
    kernel.assign(k)
    bias.assign(b)
    model.save(out / "model.keras")
    return out
