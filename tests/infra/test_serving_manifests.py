"""Offline checks of the serving manifests (infra/k8s/serving): rendered by `kubectl kustomize`, every
Kubernetes object validated against the 1.37 schemas, the KServe InferenceService against the vendored
KServe field schema plus Kubernetes' PodSpec, and the hardening of infra/k8s/base."""

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.infra.test_infra import K8S, objects

SERVING = K8S / "serving"
SCHEMA = json.loads((K8S / "schemas" / "kserve-inferenceservice-v1beta1.schema.json").read_text())
EXTENSION = set(SCHEMA["x-component-extension-fields"])
OVERLAYS = [SERVING / "kserve", SERVING / "plain"]


def pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "InferenceService":
        return [{k: v for k, v in obj["spec"]["predictor"].items() if k not in EXTENSION}]
    if obj["kind"] == "Deployment":
        return [obj["spec"]["template"]["spec"]]
    return []


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: p.name)
def rendered(request):
    return request.param.name, objects(request.param)


def test_kubernetes_objects_validate_against_1_37(rendered):
    name, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {"ServiceAccount", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds
    assert ({"InferenceService"} if name == "kserve" else {"Deployment", "Service", "HorizontalPodAutoscaler"}) <= kinds
    for obj in objs:
        assert obj["metadata"]["namespace"] == "cxr-mlops", obj["metadata"]["name"]
        if obj["kind"] != "InferenceService":
            kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_inference_service_validates_against_the_kserve_schema_and_the_podspec():
    (isvc,) = [o for o in objects(SERVING / "kserve") if o["kind"] == "InferenceService"]
    jsonschema.validate(isvc, SCHEMA)
    pred = isvc["spec"]["predictor"]
    assert 0 < pred["minReplicas"] <= pred["maxReplicas"] and pred["scaleMetric"] == "concurrency"
    (pod,) = pod_specs(isvc)  # everything that is not a KServe extension field must be a valid PodSpec
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
                                 "1.37.0", strict=True)
    (container,) = pod["containers"]
    assert container["name"] == "kserve-container" and len(container["ports"]) == 1  # Knative: one port
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_the_schema_rejects_what_kserve_rejects():
    (isvc,) = [o for o in objects(SERVING / "kserve") if o["kind"] == "InferenceService"]
    for bad in ({"scaleMetric": "gpu"}, {"canaryTrafficPercent": 120}, {"minReplicas": -1}):
        broken = json.loads(json.dumps(isvc))
        broken["spec"]["predictor"].update(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["containers"][0]["name"] = "server"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    broken["spec"]["transformer"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_model_server_pods_are_hardened_probed_and_scraped(rendered):
    _, objs = rendered
    for obj in objs:
        for pod in pod_specs(obj):
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "cxr-serve"
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            (c,) = pod["containers"]
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
            assert c["image"] == "ghcr.io/cxr-mlops/cxr-mlops:cpu-0.1.0"
            assert c["args"][:1] == ["serve"] and "--model" in c["args"]
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"]["path"] == "/health", probe
            env = {e["name"]: e for e in c["env"]}
            assert env["CXR_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cxr-api-token", "key": "token"}
            assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "cxr-serve-mlflow"
            assert env["CXR_PREDICTION_LOG"]["value"] == "/var/log/cxr/predictions"
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/var/log/cxr/predictions"} <= mounts
            claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
            assert claims == {"cxr-prediction-log"}
        if obj["kind"] == "InferenceService":
            ann = obj["spec"]["predictor"]["annotations"]
        elif obj["kind"] == "Deployment":
            ann = obj["spec"]["template"]["metadata"]["annotations"]
            assert obj["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        else:
            continue
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False
    (pvc,) = [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica writes its own files


def test_network_policy_admits_only_ingress_and_prometheus(rendered):
    _, objs = rendered
    (pol,) = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert pol["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "cxr-serve"}}
    sources = [r["from"] for r in pol["spec"]["ingress"]]
    assert [{"namespaceSelector": {"matchLabels": {"cxr-mlops.io/serving-ingress": "true"}}}] in sources
    metrics_rule = [r for r in pol["spec"]["ingress"] if r["from"][0]["namespaceSelector"]["matchLabels"] ==
                    {"cxr-mlops.io/metrics": "true"}]
    assert {p["port"] for p in metrics_rule[0]["ports"]} == {8080, 9091}


def test_plain_canary_is_the_stable_deployment_but_for_name_track_and_replicas():
    deps = {o["metadata"]["name"]: o for o in objects(SERVING / "plain") if o["kind"] == "Deployment"}
    stable, canary = deps["cxr-serve"], deps["cxr-serve-canary"]
    assert canary["spec"]["replicas"] == 0 and stable["spec"]["replicas"] >= 2

    def strip(d):
        d = json.loads(json.dumps(d).replace('"canary"', '"stable"').replace("cxr-serve-canary", "cxr-serve"))
        d["spec"].pop("replicas")
        return d

    assert strip(canary) == strip(stable)
    svc = next(o for o in objects(SERVING / "plain") if o["kind"] == "Service")
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "cxr-serve"}  # both tracks take traffic
    hpa = next(o for o in objects(SERVING / "plain") if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cxr-serve"  # the stable one only


def test_serving_secrets_are_in_the_template():
    docs = [d for d in yaml.safe_load_all((K8S / "secrets" / "secrets.template.yaml").read_text()) if d]
    names = {d["metadata"]["name"]: d for d in docs}
    assert names["cxr-api-token"]["stringData"] == {"token": "REPLACE_ME"}
    assert set(names["cxr-serve-mlflow"]["stringData"]) == {"username", "password"}


def test_deploy_edits_what_the_manifests_declare():
    """`cxr deploy` looks for the kserve-container's --model and the canary Deployment by these names."""
    from components.ops import deploy

    (isvc,) = [o for o in objects(SERVING / "kserve") if o["kind"] == "InferenceService"]
    assert deploy.model_arg(isvc["spec"]["predictor"]["containers"][0]["args"]) == "models:/cxr-classifier/1"
    names = {o["metadata"]["name"] for o in objects(SERVING / "plain") if o["kind"] == "Deployment"}
    assert names == {"cxr-serve", "cxr-serve-canary"}
    assert Path(deploy.__file__).is_file()
