"""Hooks and shared fixtures (tiny params, the shared real sample, a tiny trained model, MLflow stores); the helpers
they use are plain modules: tests/support.py, tests/imagegen.py, benchmarks/processes.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from components.core.contract.params.schema import Params
from tests.support import tiny_params, tracking_uri, train_params

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / "tests" / "durations.json"  # written by .ci/record-durations.py
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "cxr-sample"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser):
    parser.addoption("--containers", action="store_true",
                     help="run the tests marked `container` (tests/containers: Docker images, pipeline and server in "
                          "containers); .ci/run runs them as a stage of their own after building the images")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``container`` run only with ``--containers`` (whatever ``-m`` says), so the main run and
    ``-m "not slow"`` never start Docker. The modules go longest first (tests/durations.json), so that under
    ``--dist loadfile --no-loadscope-reorder`` the workers do not end with one long module running alone."""
    if not config.getoption("--containers"):
        deselected = [item for item in items if item.get_closest_marker("container")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker("container")]
    items[:] = longest_first(items)


def longest_first(items: list) -> list:
    """``items`` with whole modules ordered by their recorded seconds, longest first; a module not recorded keeps
    its place after them (Python's sort is stable, and a module's own tests keep their order)."""
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    key = {item: -seconds.get(Path(str(item.path)).relative_to(ROOT).as_posix(), 0.0) for item in items}
    return sorted(items, key=key.__getitem__)


@pytest.fixture
def params() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def shared_sample() -> Path:
    """The shared real sample; CI must have it (fail), a laptop may not (skip)."""
    if not (SHARED_SAMPLE / "MANIFEST.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the shared real sample is missing at {SHARED_SAMPLE} (CI must provide ../shared)")
        pytest.skip(f"shared sample not found at {SHARED_SAMPLE}")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """Demo data ingested, split and preprocessed at 32 px by the real steps (no GX: faster)."""
    from components import ingest, preprocess, split

    root = tmp_path_factory.mktemp("shards")
    p = train_params()
    ingest.run(p, root / "raw")
    split.run(p, root / "raw" / "manifest.csv", root / "splits", root / "reports")
    preprocess.run(p, root / "splits", root / "raw", root / "shards")
    return root / "shards"


@pytest.fixture(autouse=True)
def _mlflow_uri_restored():
    """Whatever a test does to MLflow's tracking URI (``mlflow.set_tracking_uri`` also sets the environment
    variable) ends with it: the next test, and the ``dvc repro`` / ``cxr`` children it starts, see the URI
    that was there before (a leaked URI once sent a ``dvc repro`` test's runs into another test's store)."""
    import sys

    before = os.environ.get("MLFLOW_TRACKING_URI")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
    yield
    if experiment is None:  # mlflow.set_experiment exports it; a stale id points into another store
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment
    if "mlflow" in sys.modules:  # the process-global URI outlives a monkeypatched variable
        sys.modules["mlflow"].set_tracking_uri(before)  # None unsets both the global and the variable
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow sqlite store migrated once; each test gets a copy (migrations take seconds)."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _migrated_mlflow_db):
    """A fresh, isolated tracking store under ``tmp_path`` (artifacts land in ``tmp_path/mlruns``)."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copy(_migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    with tracking_uri(uri):
        yield uri


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_shards, tmp_path_factory) -> Path:
    """A tiny trained model folder (model.keras + train_summary.json), no MLflow."""
    from components import train

    out = tmp_path_factory.mktemp("tiny-model")
    train.run(train_params(), tiny_shards, out / "models", out / "state", track=False)
    return out / "models"
