"""The storage layer against a real S3-compatible server on loopback (moto_server from the moto[server] dev
dependency), and ingest by reference: an s3:// CSV manifest whose images stay in the bucket, validated and
preprocessed from there into the same shards as from a local copy."""

import os
import socket
import subprocess
import time

import numpy as np
import pytest
import requests

from components import ingest, preprocess, split, validate
from components.core.data import manifest, storage
from benchmarks.processes import BIN
from tests.support import tiny_params, train_params


@pytest.fixture(scope="module")
def s3_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # its first answer can take seconds on a busy 2-core box
    while True:
        try:
            requests.get(url, timeout=10)
            break
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto_server did not answer on {url} within 60 s (exit code {proc.poll()})")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    storage._s3_client_of.cache_clear()
    bucket = f"b{time.monotonic_ns()}"
    storage._s3_client().create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    storage._s3_client_of.cache_clear()


def test_files_and_arrays_round_trip_through_s3_and_locally(s3, tmp_path):
    for base in (s3 + "/data", str(tmp_path / "data")):
        storage.write_bytes(storage.join(base, "a/x.bin"), b"hello")
        assert storage.read_bytes(storage.join(base, "a/x.bin")) == b"hello"
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
        storage.save_array(storage.join(base, "a/x.npy"), arr)
        back = storage.load_array(storage.join(base, "a/x.npy"))
        assert (back == arr).all() and back.dtype == np.uint8
        assert storage.exists(storage.join(base, "a/x.npy")) and not storage.exists(storage.join(base, "a/nope"))
        assert [p.rsplit("/", 1)[-1] for p in storage.list_files(storage.join(base, "a"))] == ["x.bin", "x.npy"]
        with pytest.raises(FileNotFoundError):
            storage.read_bytes(storage.join(base, "missing.png"))
    assert storage.join("s3://b/raw", "A/x.png") == "s3://b/raw/A/x.png"
    assert storage.join("data/raw", "s3://b/A/x.png") == "s3://b/A/x.png"  # a URI in a manifest stays one
    assert isinstance(storage.load_array(str(tmp_path / "data" / "a" / "x.npy")), np.memmap)


def test_ingest_by_reference_from_s3_gives_the_shards_of_a_local_copy(s3, tmp_path):
    # the demo set, once as local files and once uploaded to the bucket with a CSV manifest beside it
    p = tiny_params()
    ingest.run(p, tmp_path / "local" / "raw")
    rows = manifest.read(tmp_path / "local" / "raw" / "manifest.csv")
    for rel in rows["path"]:
        storage.write_bytes(f"{s3}/films/{rel}", (tmp_path / "local" / "raw" / rel).read_bytes())
    # paths relative to the CSV's prefix, as in a folder
    storage.write_bytes(f"{s3}/films/manifest.csv",
                        rows[["path", "label", "patient_id", "source"]].to_csv(index=False).encode())
    ref = tiny_params(data={"source": "dir", "path": f"{s3}/films/manifest.csv"})
    summary = ingest.run(ref, tmp_path / "s3" / "raw", tmp_path / "s3" / "reports")
    assert summary["images"] == len(rows)
    assert [f.name for f in (tmp_path / "s3" / "raw").iterdir()] == ["manifest.csv"]  # nothing copied
    raw = manifest.read(tmp_path / "s3" / "raw" / "manifest.csv")
    assert raw["path"].str.startswith(f"{s3}/films/").all()
    tp = train_params()
    tp = tp.model_copy(update={"scale": tp.scale.model_copy(update={"partitions": 2}),
                               "preprocess": tp.preprocess.model_copy(update={"shard_mb": 8 * 32 * 32 / 2**20})})
    for name in ("local", "s3"):
        d = tmp_path / name
        validate.run(tp, d / "raw", d / "validated", d / "rv")
        split.run(tp, d / "validated" / "manifest.csv", d / "splits", d / "rs")
        preprocess.run(tp, d / "splits", d / "raw", d / "shards")
    local_v = manifest.read(tmp_path / "local" / "validated" / "manifest.csv")
    s3_v = manifest.read(tmp_path / "s3" / "validated" / "manifest.csv")
    assert list(s3_v["sha256"]) == list(local_v["sha256"])  # the same bytes were read through S3
    shard_files = sorted(p.relative_to(tmp_path / "local" / "shards")
                         for p in (tmp_path / "local" / "shards").rglob("x-*.npy"))
    assert len(shard_files) > 3
    for rel in shard_files:
        assert (tmp_path / "s3" / "shards" / rel).read_bytes() == (tmp_path / "local" / "shards" / rel).read_bytes()
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
