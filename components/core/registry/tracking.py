"""MLflow set-up shared by train, evaluate, gate and register.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` or ``mlflow.tracking_uri`` (default
``sqlite:///mlflow.db``). A remote server is checked *before* any long work starts, and HTTP
retries are bounded so a dead server gives a clear error in seconds, not a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from components.core.contract.errors import ServiceError

# Bounded retries with backoff for every MLflow HTTP call (MLflow reads these at request time).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def tracking_uri(params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.mlflow.tracking_uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`ServiceError` when an http(s) tracking server does not answer ``/health``."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        raise ServiceError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}). Start it "
            "(`bash mlflow/serve.sh`), or point MLFLOW_TRACKING_URI / mlflow.tracking_uri at a running one."
        ) from None
    if resp.status_code >= 500:
        raise ServiceError(f"MLflow tracking server {uri} is unhealthy: HTTP {resp.status_code} on /health")


def setup(params, check: bool = True) -> str:
    """Point MLflow at the tracking store and experiment; return the URI."""
    for k, v in _HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    uri = tracking_uri(params)
    if check:
        check_reachable(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(params.mlflow.experiment)
    except Exception as err:
        raise ServiceError(f"MLflow at {uri}: cannot open experiment {params.mlflow.experiment!r}: {err}") from None
    return uri


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | dict) else v
    return out


def git_commit(cwd: str | Path = ".") -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_hash(params) -> str:
    """A short hash of the params a step declared (its view's ``declared_dump``)."""
    blob = json.dumps(params.declared_dump(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def tracked_run(run_id: str | None, run_name: str, params: dict[str, Any] | None = None,
                tags: dict[str, Any] | None = None, system_metrics: bool = True) -> Iterator[Any]:
    """An MLflow run around a block: started (or resumed by ``run_id``), ended FINISHED on success and
    FAILED on any exception (even when the server is the reason). Params and tags are logged once,
    when the run is new; CPU/memory/GPU system metrics are sampled while it runs."""
    import mlflow

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    try:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics) if run_id else \
            mlflow.start_run(run_name=run_name, log_system_metrics=system_metrics)
        if not run_id:
            if params:
                mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            if tags:
                mlflow.set_tags(tags)
    except Exception as err:
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise ServiceError(f"MLflow: cannot start the run: {type(err).__name__}: {str(err)[:300]}") from None
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be the reason we are here
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run()


def epoch_logger(enabled: bool) -> Callable[[dict], None]:
    """Log one epoch's metrics to the active run; a dead server is a clear, resumable error."""
    if not enabled:
        return lambda row: None
    import mlflow

    def log_row(row: dict) -> None:
        try:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        except Exception as err:
            raise ServiceError(
                f"MLflow stopped answering during training (epoch {row['epoch']}): {type(err).__name__}: "
                f"{str(err)[:300]}. The epochs saved so far are kept: start the tracking server again and re-run the "
                "same command to resume after the last saved one.") from None

    return log_row
