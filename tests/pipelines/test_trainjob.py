"""The train task with train.workers > 1: a TrainJob created through the real kubernetes client (against a
loopback fake of the API server whose "controller" runs the TrainJob's command as real worker processes),
awaited, and the chief's model copied out; a failed TrainJob fails the task with its reason."""

import json

import jsonschema
import pytest

from benchmarks.processes import BIN
from components.core.contract.errors import CxrError
from components.core.model import distributed
from pipelines import trainjob
from tests.components.core.model.test_distributed import _params
from tests.e2e.k8s_fake import FakeK8s
from tests.infra.test_trainer_manifests import kind_schema


@pytest.fixture
def k8s(tmp_path):
    fake = FakeK8s()
    yield fake, trainjob.Api(str(fake.kubeconfig(tmp_path / "kubeconfig")))
    fake.close()


def config(tmp_path):
    return trainjob.TrainJobConfig(shared_path=str(tmp_path / "shared"), namespace="kubeflow-user-example-com",
                                   poll_seconds=0.2, image="ghcr.io/x/cxr:gpu-1")


@pytest.mark.slow
def test_the_train_task_runs_a_trainjob_of_real_workers(tiny_shards, tmp_path, k8s):
    fake, api = k8s

    def jobset(obj):  # numNodes processes running the TrainJob's command, as the JobSet's pods would
        t = obj["spec"]["trainer"]
        argv = [str(BIN / "cxr") if t["command"][0] == "cxr" else t["command"][0], *t["command"][1:], *t["args"]]
        env = {e["name"]: e["value"] for e in t["env"] if "value" in e}
        try:
            distributed.launch_local(argv, t["numNodes"], tmp_path / "pods", env=env, timeout=600)
        except CxrError as err:
            return [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": str(err)[:300]}]
        return [{"type": "Complete", "status": "True", "reason": "JobSetCompleted", "message": "done"}]

    fake.trainjob_controller = jobset
    params = _params(2)
    summary = trainjob.run(params, tiny_shards, tmp_path / "out", tmp_path / "state",
                           track=False, cfg=config(tmp_path), api=api)
    assert summary["trainjob"]["workers"] == 2 and summary["device"]["workers"] == 2 and summary["epochs_run"] == 3
    assert (tmp_path / "out" / "model.keras").is_file()
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    (post,) = [r for r in fake.requests if r["method"] == "POST"]
    jsonschema.validate(post["body"], kind_schema("TrainJob"))
    assert post["path"] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user-example-com/trainjobs"
    name = post["body"]["metadata"]["name"]
    assert not (tmp_path / "shared" / name).exists()  # staged shards and checkpoints cleaned up
    assert [r["method"] for r in fake.requests if r["path"].endswith("/" + name)][-1] == "DELETE"


def test_a_failed_trainjob_fails_the_task_with_its_reason(tiny_shards, tmp_path, k8s):
    fake, api = k8s
    fake.trainjob_controller = lambda obj: [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}]
    with pytest.raises(trainjob.TrainJobFailed, match=r"failed: BackoffLimitExceeded: Job has reached the specified"):
        trainjob.run(_params(2), tiny_shards, tmp_path / "out", tmp_path / "state",
                     track=False, cfg=config(tmp_path), api=api)
    assert not (tmp_path / "out").exists()
    # a retried task replaces the failed TrainJob of the same name (its checkpoint folder stays for the resume)
    fake.trainjob_controller = lambda obj: [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                             "message": "x"}]
    with pytest.raises(trainjob.TrainJobFailed, match="DeadlineExceeded"):
        trainjob.run(_params(2), tiny_shards, tmp_path / "out", tmp_path / "state",
                     track=False, cfg=config(tmp_path), api=api)
    methods = [r["method"] for r in fake.requests if r["method"] in ("POST", "DELETE")]
    assert methods == ["POST", "DELETE", "POST"]


def test_the_task_reads_its_trainjob_settings_from_the_environment():
    cfg = trainjob.TrainJobConfig(image="img:1", gpus_per_worker=4, resources=("8", "16", "32G", "64G"))
    back = trainjob.TrainJobConfig.from_env({**cfg.env(), "MLFLOW_TRACKING_URI": "http://m:5000"})
    assert back == trainjob.TrainJobConfig(image="img:1", gpus_per_worker=4, resources=("8", "16", "32G", "64G"),
                                           tracking_uri="http://m:5000")
    assert trainjob.TrainJobConfig.from_env({}) is None
