"""The compiled pipeline spec (built by `cxr pipeline compile`, never committed): reproducible,
GPU/toleration/secrets/gate condition in place."""

from pathlib import Path

import pytest
import yaml

from pipelines import client, ops
from tests.e2e.kfp_fake import FakeKfp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "cxr_training.yaml"
    ops.compile_pipeline(out, ROOT / "params.yaml")
    return out


def docs(path):
    pipeline, platform = list(yaml.safe_load_all(path.read_text()))
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_compiling_twice_gives_the_same_file(spec, tmp_path):
    again = tmp_path / "again.yaml"
    ops.compile_pipeline(again, ROOT / "params.yaml")
    assert again.read_text() == spec.read_text()  # reproducible: an image build or a release can rebuild it


def test_train_task_requests_a_gpu_on_gpu_nodes(spec):
    pipeline, executors = docs(spec)
    resources = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    accelerator = resources["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
    assert resources["cpuLimit"] and resources["memoryLimit"]
    train = executors["exec-train"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train["tolerations"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        assert executor["container"]["resources"].get("memoryLimit"), name


def test_secrets_security_context_retries_and_caching(spec):
    pipeline, executors = docs(spec)
    kaggle = executors["exec-ingest"]["secretAsEnv"][0]
    assert kaggle["secretName"] == "kaggle-credentials"  # pragma: allowlist secret
    assert {e["envVar"] for e in kaggle["keyToEnv"]} == {"KAGGLE_USERNAME", "KAGGLE_KEY"}
    for name in ("exec-train", "exec-register"):
        env = {e["envVar"] for s in executors[name]["secretAsEnv"] for e in s["keyToEnv"]}
        assert env == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    for name, ex in executors.items():
        assert ex["securityContext"]["runAsNonRoot"] is True, name
    tasks = pipeline["root"]["dag"]["tasks"]
    # no KFP retry policy anywhere: it would re-run a usage/params/data error; the task retries transient failures
    assert not [n for n, t in tasks.items() if "retryPolicy" in t]
    assert tasks["ingest"]["cachingOptions"]["enableCache"] is True
    assert tasks["gate"]["cachingOptions"].get("enableCache", False) is False
    (cond,) = [c for n, c in pipeline["components"].items() if n.startswith("comp-condition-")]
    register = cond["dag"]["tasks"]["register"]
    assert "retryPolicy" not in register and not register["cachingOptions"].get("enableCache", False)


def test_register_is_behind_a_bool_gate_condition(spec):
    pipeline, _ = docs(spec)
    (cond,) = [t for n, t in pipeline["root"]["dag"]["tasks"].items() if n.startswith("condition-")]
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    outputs = pipeline["components"]["comp-gate"]["outputDefinitions"]["parameters"]
    assert outputs == {"Output": {"parameterType": "BOOLEAN"}}


def test_pipeline_parameters_mirror_params_yaml(spec):
    pipeline, _ = docs(spec)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    assert set(params) <= set(inputs) and "data_uri" in inputs
    assert inputs["train"]["defaultValue"]["backbone"] == params["train"]["backbone"]
    assert inputs["split"]["defaultValue"]["seed"] == params["split"]["seed"]


def test_submit_and_schedule_against_the_kfp_rest_api(tmp_path, spec):
    fake = FakeKfp()
    try:
        sub = client.submit(fake.host, spec, experiment="cxr", run_name="try-1")
        assert sub["run_id"] in fake.runs
        run = fake.runs[sub["run_id"]]
        assert run["display_name"] == "try-1"
        assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "cxr-training"
        assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
        first = client.schedule(fake.host, "0 3 * * 1", name="weekly", package=spec)
        second = client.schedule(fake.host, "0 4 * * 1", name="weekly", package=spec)
        assert len(fake.recurring) == 1 and second["replaced"] == [first["recurring_run_id"]]
        (rr,) = fake.recurring.values()
        assert rr["display_name"] == "weekly" and rr["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1"
        assert rr["max_concurrency"] in (1, "1") and rr["no_catchup"] is True
        assert len(fake.experiments) == 1  # the experiment is reused, not duplicated
        posted = [r for r in fake.requests if r["method"] == "POST"]
        assert [r["path"] for r in posted].count("/apis/v2beta1/recurringruns") == 2
    finally:
        fake.close()


def test_bad_cron_and_unreachable_host(tmp_path, spec):
    from components.core.contract.errors import CxrError, ServiceError

    with pytest.raises(CxrError, match="5 fields"):
        client.schedule("http://127.0.0.1:9", "every monday", package=spec)
    with pytest.raises(ServiceError):
        client.submit("http://127.0.0.1:9", spec)


def test_partitioned_steps_fan_out_with_a_bounded_parallel_for_and_merge(spec):
    """validate and preprocess: a partitions task gives the part numbers, a ParallelFor (parallelism from
    scale.parallelism) runs one task per part, and the step's own task merges the collected parts."""
    pipeline, executors = docs(spec)
    tasks = pipeline["root"]["dag"]["tasks"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    loops = {}
    for name, task in tasks.items():
        if "iteratorPolicy" in task:
            assert task["iteratorPolicy"]["parallelismLimit"] == params["scale"]["parallelism"]
            it = task["parameterIterator"]
            assert it["items"]["inputParameter"] == "pipelinechannel--partitions-Output"
            (inner,) = pipeline["components"][task["componentRef"]["name"]]["dag"]["tasks"].values()
            loops[name] = inner["componentRef"]["name"]
    assert sorted(loops.values()) == ["comp-preprocess-partition", "comp-validate-partition"]
    for step in ("validate", "preprocess"):
        merge = tasks[step]
        loop = next(n for n, c in loops.items() if c == f"comp-{step}-partition")
        partials = merge["inputs"]["artifacts"]["partials"]["taskOutputArtifact"]
        assert partials == {"outputArtifactKey": "pipelinechannel--" + f"{step}-partition-partial",
                            "producerTask": loop}
        assert pipeline["components"][f"comp-{step}"]["inputDefinitions"]["artifacts"]["partials"]["isArtifactList"]
        assert executors[f"exec-{step}-partition"]["securityContext"]["runAsNonRoot"] is True
    # the merge of preprocess does not download the image folder; its parts do
    assert "images" not in pipeline["components"]["comp-preprocess"]["inputDefinitions"]["artifacts"]
    assert "images" in pipeline["components"]["comp-preprocess-partition"]["inputDefinitions"]["artifacts"]
    assert pipeline["deploymentSpec"]["executors"]["exec-preprocess-partition"]["container"]["resources"][
        "memoryLimit"]


def test_with_several_workers_the_train_task_launches_a_trainjob(tmp_path):
    """Compiled for train.workers > 1: the train task carries the TrainJob settings (runtime, image, GPUs per
    worker, the shared volume) and mounts that volume; it asks for no GPU itself (the workers do)."""
    from pipelines.pipeline import ClusterConfig

    out = tmp_path / "multi.yaml"
    ops.compile_pipeline(out, ROOT / "params.yaml", ClusterConfig(train_workers=4, gpus=2, image="img:1"))
    pipeline, executors = docs(out)
    container = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CXR_TRAINJOB_RUNTIME"] == "cxr-tensorflow-multiworker" and env["CXR_TRAINJOB_IMAGE"] == "img:1"
    assert env["CXR_TRAINJOB_GPUS"] == "2" and env["CXR_TRAINJOB_PVC"] == "cxr-train-shared"
    assert "accelerator" not in container["resources"]
    assert executors["exec-train"]["pvcMount"][0]["mountPath"] == env["CXR_TRAINJOB_PATH"]
    assert {e["envVar"] for s in executors["exec-train"]["secretAsEnv"] for e in s["keyToEnv"]} == \
        {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    # the task's code hands over to the TrainJob launcher when train.workers > 1 and those settings are there
    from pipelines import runtime
    assert "trainjob.run(" in Path(runtime.__file__).read_text()


def test_a_setter_on_a_pipeline_task_still_names_itself():
    """pipelines/pipeline.py gives kfp a cheap ``inspect.stack`` (a compile took 10 s under pytest): kfp's error for
    a setter on a task that is a whole pipeline still names the setter."""
    from kfp import dsl

    from pipelines import pipeline

    assert pipeline.pipeline_task.inspect.stack is pipeline._CallerNameOnly.stack

    @dsl.component
    def leaf() -> None:
        pass

    @dsl.pipeline
    def inner() -> None:
        leaf()

    @dsl.pipeline
    def outer() -> None:
        with pytest.raises(ValueError, match=r"^set_cpu_limit can only be used on single-step components"):
            inner().set_cpu_limit("1")

    assert outer
