"""kill -9 of `cxr validate` and `cxr preprocess` mid-way: nothing is left where the next step or DVC
would take it for complete, and a rerun completes (clearing the dead run's temporary folder)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.processes import env
from components import ingest, split
from components.core.data import manifest, shards
from tests.support import tiny_params, write_params

pytestmark = pytest.mark.slow


def params():
    # enough images that each step runs for seconds, small enough to stay quick
    return tiny_params(data={"demo": {"patients_per_class": 120, "max_images_per_patient": 2, "min_side": 200,
                                      "max_side": 400}},
                       train={"image_size": 96, "backbone": "small_cnn", "weights": "none"},
                       validate={"workers": 2, "bias_audit": {"enabled": False}})


def kill_when(cmd: list[str], ready, timeout: float = 180) -> float:
    """Start ``cmd``; SIGKILL its process group as soon as ``ready()``; return seconds until the kill."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    start = time.time()
    try:
        while time.time() - start < timeout:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[3]} finished (rc {proc.returncode}) before it could be killed")
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                return time.time() - start
            time.sleep(0.01)
        raise AssertionError("never reached the point to kill at")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def tmp_siblings(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.tmp-*"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    p = params()
    ingest.run(p, root / "raw")
    return root, write_params(root / "params.yaml", p)


def test_kill_validate_mid_way_then_rerun(data):
    root, pf = data
    out = root / "validated"
    cmd = [sys.executable, "-m", "cxr", "validate", "--params", str(pf), "--raw", str(root / "raw"),
           "--out", str(out), "--reports", str(root / "reports")]
    # kill while Great Expectations builds the Data Docs (facts done, outputs not yet renamed)
    kill_when(cmd, lambda: bool(tmp_siblings(root / "reports" / "data_docs")))
    assert not out.exists() and not (out / "manifest.csv").exists()
    assert not (root / "reports" / "data_docs").exists()
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(manifest.read(out / "manifest.csv")) == len(manifest.read(root / "raw" / "manifest.csv"))
    assert not tmp_siblings(root / "reports" / "data_docs") and not tmp_siblings(out)


def test_kill_preprocess_mid_way_then_rerun(data):
    root, pf = data
    p = params()
    if not (root / "validated").exists():
        pytest.skip("needs the validated manifest of the previous test")
    split.run(p, root / "validated" / "manifest.csv", root / "splits", root / "split-report")
    out = root / "shards"
    cmd = [sys.executable, "-m", "cxr", "preprocess", "--params", str(pf), "--splits", str(root / "splits"),
           "--images", str(root / "raw"), "--out", str(out)]
    # kill after the first shard file is written (in the parts' scratch folder), before the output exists
    kill_when(cmd, lambda: any(next(w.glob("*part-*/*/x-*.npy"), None) for w in out.parent.glob(".shards.parts-*")))
    assert not out.exists() and list(out.parent.glob(".shards.parts-*"))  # the killed run's scratch is left
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "meta.json").is_file() and (out / shards.shard_name("test", 0)).is_file()
    assert len(shards.load_split(out, "test").y) > 0
    assert not tmp_siblings(out) and not list(out.parent.glob(".shards.parts-*"))  # the rerun cleared it
