"""The one-task cxr-monitor pipeline: reproducible spec, volume/secrets/no cache, and
`cxr pipeline schedule --monitor` against the fake KFP REST API."""

from pathlib import Path

import pytest
import yaml

from pipelines import ops
from tests.e2e.kfp_fake import FakeKfp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "cxr_monitor.yaml"
    ops.compile_monitor_pipeline(out, ROOT / "params.yaml")
    return out


def test_compiling_the_monitor_twice_gives_the_same_file(spec, tmp_path):
    again = tmp_path / "again.yaml"
    ops.compile_monitor_pipeline(again, ROOT / "params.yaml")
    assert again.read_text() == spec.read_text()


def test_monitor_task_mounts_the_log_reads_mlflow_and_is_never_cached(spec):
    pipeline, platform = list(yaml.safe_load_all(spec.read_text()))
    assert pipeline["pipelineInfo"]["name"] == "cxr-monitor"
    (task,) = pipeline["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"].get("enableCache", False) is False
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    assert inputs["kfp_host"]["defaultValue"].startswith("http://ml-pipeline.kubeflow")
    assert inputs["training_package"]["defaultValue"] == "/app/pipelines/compiled/cxr_training.yaml"
    assert inputs["monitor"]["defaultValue"]["max_ood_rate"] == yaml.safe_load(
        (ROOT / "params.yaml").read_text())["monitor"]["max_ood_rate"]
    (executor,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    (mount,) = executor["pvcMount"]
    assert mount["mountPath"] == inputs["log_dir"]["defaultValue"] == "/var/log/cxr/predictions"
    assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "cxr-prediction-log"
    env = {e["envVar"] for s in executor["secretAsEnv"] for e in s["keyToEnv"]}
    assert env == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert executor["securityContext"]["runAsNonRoot"] is True


def test_schedule_monitor_hourly_and_idempotent(spec, capsys):
    from cxr.cli import main

    fake = FakeKfp()
    try:
        for _ in range(2):
            assert main(["pipeline", "schedule", "--monitor", "--host", fake.host, "--package", str(spec)]) == 0
        (rr,) = fake.recurring.values()
        assert rr["display_name"] == "cxr-monitor-hourly" and rr["trigger"]["cron_schedule"]["cron"] == "0 0 * * * *"
        assert rr["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "cxr-monitor"
    finally:
        fake.close()
