"""Offline checks of multi-worker training on Kubeflow Trainer (infra/k8s/trainer and the TrainJob the pipeline
creates): every Kubernetes object against the 1.37 schemas, the TrainingRuntime and the TrainJob against the
Trainer v1alpha1 schema generated from kubeflow-trainer-api 2.3.0 (infra/k8s/schemas/trainer_schema.py), and
their pod templates as real Kubernetes Jobs/Pods."""

import copy
import json

import jsonschema
import kubernetes_validate
import pytest

from components.core.model import distributed
from pipelines import trainjob
from tests.infra.test_infra import K8S, objects

SCHEMA = json.loads((K8S / "schemas" / "kubeflow-trainer-v1alpha1.schema.json").read_text())


def kind_schema(kind: str) -> dict:
    return {**SCHEMA, "oneOf": [SCHEMA["x-kinds"][kind]]}


@pytest.fixture(scope="module")
def rendered():
    return {o["kind"]: o for o in objects(K8S / "trainer")}


def test_the_schema_is_the_generated_trainer_one():
    assert "kubeflow-trainer-api==2.3.0" in SCHEMA["x-source"]
    spec = SCHEMA["$defs"]["TrainerV1alpha1Trainer"]["properties"]
    assert {"numNodes", "resourcesPerNode", "image", "command", "args", "env"} <= set(spec)


def test_kubernetes_objects_validate(rendered):
    assert set(rendered) == {"TrainingRuntime", "PersistentVolumeClaim", "Role", "RoleBinding"}
    for kind in ("PersistentVolumeClaim", "Role", "RoleBinding"):
        kubernetes_validate.validate(rendered[kind], "1.37.0", strict=True)
    assert rendered["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    (rule, _) = rendered["Role"]["rules"]
    assert rule["apiGroups"] == ["trainer.kubeflow.org"] and {"create", "get", "delete"} <= set(rule["verbs"])


def test_training_runtime_validates_and_builds_tf_config_from_the_jobset(rendered):
    rt = rendered["TrainingRuntime"]
    jsonschema.validate(rt, kind_schema("TrainingRuntime"))
    assert rt["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    (rj,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == distributed.REPLICATED_JOB and rj["template"]["spec"]["completionMode"] == "Indexed"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": rj["template"]["spec"]}
    kubernetes_validate.validate(job, "1.37.0", strict=True)
    pod = rj["template"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["CXR_TF_CONFIG_FROM"]["value"] == "jobset"
    assert env["CXR_JOBSET_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['jobset.sigs.k8s.io/jobset-name']"
    assert int(env["CXR_WORKER_PORT"]["value"]) == c["ports"][0]["containerPort"] == distributed.DEFAULT_PORT
    (shared,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert shared["persistentVolumeClaim"]["claimName"] == rendered["PersistentVolumeClaim"]["metadata"]["name"] \
        == trainjob.TrainJobConfig().shared_pvc
    assert {"name": shared["name"], "mountPath": trainjob.TrainJobConfig().shared_path} in c["volumeMounts"]


def test_the_trainjob_the_pipeline_creates_validates(rendered):
    cfg = trainjob.TrainJobConfig(image="ghcr.io/x/cxr:gpu-1", tracking_uri="http://mlflow:5000", gpus_per_worker=2)
    tj = trainjob.manifest(cfg, trainjob.job_name("fp"), "kubeflow-user-example-com", 4, "/mnt/cxr-shared/j",
                           track=True)
    jsonschema.validate(tj, kind_schema("TrainJob"))
    assert tj["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                        "name": rendered["TrainingRuntime"]["metadata"]["name"]}
    t = tj["spec"]["trainer"]
    assert t["numNodes"] == 4 and t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e for e in t["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-credentials"
    assert env["CXR_NUM_WORKERS"]["value"] == "4"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "node", "image": t["image"], "command": t["command"], "args": t["args"],
                                    "env": t["env"], "resources": t["resourcesPerNode"]}]}}
    kubernetes_validate.validate(pod, "1.37.0", strict=True)  # what the Trainer merges into the runtime's container


def test_the_schema_rejects_what_the_trainer_api_rejects():
    tj = trainjob.manifest(trainjob.TrainJobConfig(), "cxr-train-x", "ns", 2, "/mnt/j", track=False)
    for path, value in ((("spec", "trainer", "replicas"), 2), (("spec", "trainer", "numNodes"), "two"),
                        (("spec", "runtimeRef", "nam"), "x")):
        bad = copy.deepcopy(tj)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, kind_schema("TrainJob"))
