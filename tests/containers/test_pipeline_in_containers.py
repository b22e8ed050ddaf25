"""The whole training pipeline under kfp.local's DockerRunner: every task in a container of the CPU image, a real
MLflow server from the MLflow image on the run's own Docker network, the tasks given its URI in their environment
as the cluster gives it; and the retry policy (only transient failures) inside those containers."""

import json
import re
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from tests.containers.conftest import cxr, tiny_params_file

pytestmark = pytest.mark.container


def test_the_whole_pipeline_runs_in_containers_and_registers_a_challenger(docker_pipeline):
    result, log = docker_pipeline["result"], docker_pipeline["log"]
    assert result["runner"] == "docker" and result["image"] == docker_pipeline["image"]
    assert result["tracking_uri"] == "http://mlflow:5000"  # the server's name on the run's network
    steps = ("ingest", "validate", "split", "preprocess", "train", "external", "evaluate", "gate", "register")
    for step in steps:  # each task ran in the image (kfp.local prints the image it runs) and logged its step
        assert re.search(rf"components\.{step}: start {step}", log), step
    assert log.count(f"Found image '{docker_pipeline['image']}'") >= len(steps)
    run_dir = Path(result["run_dir"])
    gate = json.loads((run_dir / "gate" / "decision").read_text())
    assert gate["passed"] is True
    assert (run_dir / "register" / "model_card").is_file()
    # the registry is the MLflow container's store, kept in the run root
    client = mlflow.MlflowClient(result["mlflow_store"])
    version = client.get_model_version_by_alias("cxr-classifier", "challenger")
    assert version.tags["gate_passed"] == "true"
    run = client.get_run(version.run_id)
    assert run.data.params  # training logged through the server, its artifacts proxied into the store
    assert list((docker_pipeline["root"] / "kfp" / "mlflow" / "artifacts").rglob("MLmodel"))


def test_the_run_leaves_no_container_or_network_behind(docker_pipeline):
    ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    nets = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True).stdout
    assert not [n for n in ps.split() if n.startswith("cxr-run-")]
    assert not [n for n in nets.split() if n.startswith("cxr-run-")]


def test_a_data_error_in_a_container_fails_the_run_at_once(cpu_image, tmp_path):
    params = tiny_params_file(tmp_path / "params.yaml", **{"data.source": "dir", "data.path": "/no/such/folder"})
    started = time.time()
    proc = cxr("pipeline", "run-local", "--runner", "docker", "--image", cpu_image, "--params", str(params),
               "--root", str(tmp_path / "kfp"), "--tracking-uri", "http://127.0.0.1:9", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "step ingest failed: exit 4" in out and "/no/such/folder" in out
    assert "retrying" not in out
    assert time.time() - started < 120


def test_a_service_error_in_a_container_is_retried(cpu_image, tmp_path):
    params = tiny_params_file(tmp_path / "params.yaml")
    proc = cxr("pipeline", "run-local", "--runner", "docker", "--image", cpu_image, "--params", str(params),
               "--root", str(tmp_path / "kfp"), "--tracking-uri", "http://127.0.0.1:9",
               "--data-uri", f"dvc://{tmp_path}/no-repo@v1", CXR_RETRY_BACKOFF_SECONDS="0.1", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("service unavailable (exit 5) (attempt") == 3
    assert "step ingest failed: exit 5, service unavailable (exit 5), after 4 attempts" in out
