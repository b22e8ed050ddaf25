"""Shared fixtures: tiny params, image factories, the shared real sample."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.core.contract.config import Params, parse_params

ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "cxr-sample"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser):
    parser.addoption("--containers", action="store_true",
                     help="run the tests marked `container` (tests/containers: Docker images, pipeline and server in "
                          "containers); .ci/run runs them as a stage of their own after building the images")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``container`` run only with ``--containers`` (whatever ``-m`` says), so the main run and
    ``-m "not slow"`` never start Docker."""
    if config.getoption("--containers"):
        return
    deselected = [item for item in items if item.get_closest_marker("container")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("container")]


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


def gray(w: int = 64, h: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def png_16bit(w: int = 64, h: int = 48) -> bytes:
    arr = (np.arange(w * h, dtype=np.uint16).reshape(h, w) * 7) % 4096
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # uint16 → 16-bit grayscale PNG
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares ``w``×``h`` with almost no pixel data (a decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def film(w: int = 128, h: int = 128) -> np.ndarray:
    """A smooth film-like pattern (JPEG damage shows in it; random noise would hide it)."""
    yy, xx = np.mgrid[:h, :w]
    return ((np.sin(xx / 9) + np.cos(yy / 13)) * 60 + 128).astype(np.uint8)


def garbled_jpeg(w: int = 128, h: int = 128) -> bytes:
    """A JPEG with 100 zeroed bytes in its entropy-coded data: Pillow decodes it (garbled rows), libjpeg warns
    "Corrupt JPEG data: premature end of data segment"."""
    data = bytearray(encode(film(w, h), "JPEG"))
    mid = len(data) // 2
    data[mid:mid + 100] = bytes(100)
    return bytes(data)


def half_transparent_png(w: int = 64, h: int = 64) -> bytes:
    """An RGBA film whose left half has alpha 0."""
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, : w // 2] = 0
    return encode(np.dstack([film(w, h)] * 3 + [alpha]))


def multipage_tiff(pages: int = 3, w: int = 64, h: int = 64) -> bytes:
    frames = [Image.fromarray(np.roll(film(w, h), 7 * i, axis=0)) for i in range(pages)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def float_tiff_with_nan(w: int = 64, h: int = 64) -> bytes:
    """A 32-bit float TIFF with a 16×16 block of NaN (missing data)."""
    arr = np.linspace(0, 1000, w * h, dtype=np.float32).reshape(h, w)
    arr[:16, :16] = np.nan
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, format="TIFF")
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


TRAIN_TINY = {
    "backbone": "small_cnn", "weights": "none", "image_size": 32, "batch_size": 16,
    "phases": [{"epochs": 2, "trainable": "head", "lr": 0.003}, {"epochs": 2, "trainable": "all", "lr": 0.003}],
    "head": {"dense_units": 16, "dropout": 0.1}, "early_stopping": {"patience": 5}, "freeze_batchnorm": False,
}


def train_params(**train) -> Params:
    return tiny_params(train={**TRAIN_TINY, **train},
                       data={"demo": {"patients_per_class": 10, "max_images_per_patient": 2,
                                      "min_side": 64, "max_side": 96}})


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


@contextlib.contextmanager
def _tracking_uri(uri: str):
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


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, _migrated_mlflow_db):
    """A fresh, isolated tracking store under ``tmp_path`` (artifacts land in ``tmp_path/mlruns``)."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copy(_migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    with _tracking_uri(uri):
        yield uri


@contextlib.contextmanager
def sqlite_tracking(root: Path, migrated_db: Path):
    """Point MLflow at a copy of the migrated sqlite store under ``root`` (and chdir there) for a block:
    module-scoped fixtures use it, where the function-scoped ``mlflow_store`` cannot be."""
    import shutil

    shutil.copy(migrated_db, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp, _tracking_uri(f"sqlite:///{root / 'mlflow.db'}") as uri:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        yield mp


@contextlib.contextmanager
def served_tracking(root: Path):
    """A real ``mlflow server`` under ``root``, MLflow pointed at it (and chdir there) for a block."""
    from tests.support import MlflowServer

    srv = MlflowServer(root).start()
    try:
        with pytest.MonkeyPatch.context() as mp, _tracking_uri(srv.uri):
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


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_shards, tmp_path_factory) -> Path:
    """A tiny trained model folder (model.keras + train_summary.json), no MLflow."""
    from components import train

    out = tmp_path_factory.mktemp("tiny-model")
    train.run(train_params(), tiny_shards, out / "models", out / "state", track=False)
    return out / "models"
