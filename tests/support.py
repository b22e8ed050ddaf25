"""Test helpers (a plain module; tests/conftest.py holds only hooks and fixtures): tiny params, MLflow tracking
stores pointed at for a block, shards rewritten in place, fake HTTP APIs. Real processes (a repository copy, an
MLflow server, ``cxr serve``) are the benchmarks' helpers, :mod:`benchmarks.processes`; image factories are in
:mod:`tests.imagegen`. The product never imports this module (``.importlinter``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from components.core.contract.params.schema import Params, parse_params


def tiny_params(**sections) -> Params:
    """Params for fast tests: a small demo set; ``sections`` merge into the defaults."""
    raw = {
        "data": {"demo": {"patients_per_class": 8, "max_images_per_patient": 2, "min_side": 64, "max_side": 96}},
        # test trees name their files freely (each file its own patient): accepted here, checked in test_validate
        "validate": {"workers": 1, "accept_missing_patient_ids": "test fixtures: synthetic files without patient ids"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_params(raw, "test params")


TRAIN_TINY = {
    "backbone": "small_cnn", "weights": "none", "image_size": 32, "batch_size": 16,
    "phases": [{"epochs": 2, "trainable": "head", "lr": 0.003}, {"epochs": 2, "trainable": "all", "lr": 0.003}],
    "head": {"dense_units": 16, "dropout": 0.1}, "early_stopping": {"patience": 5}, "freeze_batchnorm": False,
}


def train_params(**train) -> Params:
    return tiny_params(train={**TRAIN_TINY, **train},
                       data={"demo": {"patients_per_class": 10, "max_images_per_patient": 2,
                                      "min_side": 64, "max_side": 96}})


@contextlib.contextmanager
def tracking_uri(uri: str):
    """MLflow's process-global URI too: a step's ``tracking.setup`` sets it, and it would outlive the test and
    win over the next test's MLFLOW_TRACKING_URI (runs then land in, and are looked up in, the wrong store)."""
    import mlflow
    from mlflow.tracking import fluent

    # the active experiment is process-global too (mlflow.set_experiment also exports MLFLOW_EXPERIMENT_ID): one
    # set in another store fails the next run ("No Experiment with id=1 exists")
    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)  # back to unset (this also unsets the env var it had set)
        fluent._active_experiment_id = None
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@contextlib.contextmanager
def sqlite_tracking(root: Path, migrated_db: Path):
    """Point MLflow at a copy of the migrated sqlite store under ``root`` (and chdir there) for a block:
    module-scoped fixtures use it, where the function-scoped ``mlflow_store`` cannot be."""
    import shutil

    shutil.copy(migrated_db, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp, tracking_uri(f"sqlite:///{root / 'mlflow.db'}") as uri:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        yield mp


@contextlib.contextmanager
def served_tracking(root: Path):
    """A real ``mlflow server`` under ``root``, MLflow pointed at it (and chdir there) for a block."""
    from benchmarks.processes import MlflowServer

    srv = MlflowServer(root).start()
    try:
        with pytest.MonkeyPatch.context() as mp, tracking_uri(srv.uri):
            mp.setenv("MLFLOW_TRACKING_URI", srv.uri)
            mp.chdir(srv.root)
            yield srv
    finally:
        srv.stop()


def replace_split(shards_dir: Path, split: str, x: np.ndarray, y: np.ndarray, rows) -> None:
    """Rewrite one split of a shards folder (format 2) as a single shard file: tests that need other test or
    validation images than the real steps made (a class removed, a split tiled)."""
    import json
    import shutil

    from components.core.data import shards

    shutil.rmtree(shards_dir / split, ignore_errors=True)
    (shards_dir / split).mkdir()
    np.save(shards_dir / shards.shard_name(split, 0), np.asarray(x, np.uint8).reshape(len(x), *x.shape[1:3]))
    np.save(shards_dir / f"{split}_y.npy", np.asarray(y, np.int64))
    rows.to_csv(shards_dir / f"{split}.csv", index=False)
    meta = json.loads((shards_dir / "meta.json").read_text())
    meta["splits"][split] = {"images": len(x), "shards": 1}
    meta["shard_images"] = max(meta["shard_images"], len(x))
    (shards_dir / "meta.json").write_text(json.dumps(meta))


def write_params(path: Path, params: Params) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


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


def push_bias(model_dir: Path, out: Path, shift: dict[int, float] | None = None, negate: bool = False) -> Path:
    """A copy of a model folder (``model.keras`` and everything beside it: lineage, train summary, preprocessing
    record) whose last layer is changed: its bias moved by ``shift`` (class index -> amount), or (``negate``) its
    logits negated, so that it predicts what the model found least likely (wrong wherever the model was right).
    The same training run and run id, other weights."""
    import shutil

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
