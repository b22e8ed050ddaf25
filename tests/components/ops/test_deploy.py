"""`cxr deploy` against a fake Kubernetes API (real `kubernetes` client over HTTP, tests/e2e/k8s_fake.py),
a real MLflow registry (sqlite) and canary metrics served in Prometheus' text format by the server's own
metrics code (serving/metrics.py) while a thread plays the canary's traffic."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from components.core.contract.errors import CxrError, RefusedError, ServiceError
from components.ops import deploy
from serving.metrics import ServingMetrics
from tests.e2e.k8s_fake import FakeK8s
from tests.infra.test_infra import K8S, objects
from tests.support import serve_http, tiny_params

ROOT = Path(__file__).resolve().parents[3]
NAME = "cxr-classifier"


class MetricsServer:
    """``/metrics`` of a canary pod; ``traffic()`` plays requests for a model version in a thread."""

    def __init__(self) -> None:
        self.metrics = ServingMetrics()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data = outer.metrics.render()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server, base = serve_http(Handler)
        self.url = f"{base}/metrics"
        self.stop = threading.Event()

    def traffic(self, version: str, error_every: int = 0, ood_every: int = 0, per_second: float = 200) -> None:
        def play():
            i = 0
            while not self.stop.is_set():
                i += 1
                failed = error_every and i % error_every == 0
                self.metrics.requests.labels("/predict", "POST", "500" if failed else "200", version).inc()
                if not failed:
                    self.metrics.observe_prediction(version, "NORMAL", bool(ood_every and i % ood_every == 0), 0.5)
                time.sleep(1 / per_second)

        threading.Thread(target=play, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()


@pytest.fixture
def registry(mlflow_store, tmp_path):
    """Versions 1 and 2 (both gated; 2 is champion) and 3 (never gated) in a real MLflow registry."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_store)  # an earlier test may have pointed MLflow elsewhere
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    src = tmp_path / "artifact"
    src.mkdir()
    for v, gated in (("1", True), ("2", True), ("3", False)):
        mv = client.create_model_version(NAME, src.as_uri(), tags={"gate_passed": "true"} if gated else {})
        assert str(mv.version) == v
    client.set_registered_model_alias(NAME, "champion", "2")
    return client


@pytest.fixture
def k8s(tmp_path):
    fake = FakeK8s()
    rendered = objects(K8S / "serving" / "kserve") + objects(K8S / "serving" / "plain")
    for obj in rendered:
        if obj["kind"] in ("InferenceService", "Deployment"):
            fake.add(obj)
    fake.config = fake.kubeconfig(tmp_path / "kubeconfig")
    yield fake
    fake.close()


@pytest.fixture
def canary():
    srv = MetricsServer()
    yield srv
    srv.close()


def policy(**kw) -> deploy.Policy:
    base = {"traffic_percent": 10, "analysis_seconds": 1.0, "max_error_rate": 0.02, "max_ood_rate": 0.25,
            "min_requests": 20, "interval": 0.2, "ready_timeout": 5}
    return deploy.Policy(**{**base, **kw})


def run(k8s, canary, target="kserve", **kw):
    return deploy.deploy(tiny_params(), target=target, policy=kw.pop("policy", policy()),
                         source=deploy.ScrapeSource([canary.url]), kubeconfig=str(k8s.config), **kw)


def test_healthy_canary_on_kserve_is_promoted(registry, k8s, canary):
    canary.traffic("2", ood_every=20)  # 5% flagged: below max_ood_rate
    out = run(k8s, canary)
    assert out["status"] == "promoted" and out["model"] == f"models:/{NAME}/2" and out["previous_version"] == "1"
    first, second = k8s.patches("cxr-serve")
    assert first["content_type"] == "application/merge-patch+json" and first["authorization"] == "Bearer test-token"
    pred = first["body"]["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10 and first["body"]["metadata"]["resourceVersion"]
    assert deploy.model_arg(pred["containers"][0]["args"]) == f"models:/{NAME}/2"
    assert second["body"]["spec"]["predictor"] == {"canaryTrafficPercent": None}  # all traffic to the new one
    isvc = k8s.get("InferenceService", "cxr-serve")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert deploy.model_arg(isvc["spec"]["predictor"]["containers"][0]["args"]) == f"models:/{NAME}/2"
    assert isvc["metadata"]["annotations"]["cxr-mlops.io/deploy-status"] == "promoted"
    assert out["analysis"]["counts"]["predictions"] >= 20 and out["analysis"]["passed"]
    # deploying the same version again changes nothing
    assert run(k8s, canary)["status"] == "unchanged" and len(k8s.patches("cxr-serve")) == 2


@pytest.mark.parametrize(("errors", "ood", "reason"), [(0, 2, "OOD rate"), (5, 0, "error rate")])
def test_bad_canary_on_kserve_is_rolled_back(registry, k8s, canary, errors, ood, reason):
    canary.traffic("2", error_every=errors, ood_every=ood)
    started = time.monotonic()
    out = run(k8s, canary, policy=policy(analysis_seconds=30))
    assert out["status"] == "rolled-back" and reason in out["analysis"]["reasons"][0]
    assert time.monotonic() - started < 10  # rolled back as soon as the limit was crossed, not after 30 s
    rollback = k8s.patches("cxr-serve")[-1]["body"]
    assert rollback["spec"]["predictor"]["canaryTrafficPercent"] == 0  # KServe: all traffic to the previous one
    isvc = k8s.get("InferenceService", "cxr-serve")
    assert deploy.model_arg(isvc["spec"]["predictor"]["containers"][0]["args"]) == f"models:/{NAME}/1"
    ann = isvc["metadata"]["annotations"]
    assert ann["cxr-mlops.io/deploy-status"] == "rolled-back" and ann["cxr-mlops.io/rolled-back-version"] == "2"


def test_a_canary_without_traffic_is_not_promoted(registry, k8s, canary):
    canary.traffic("1")  # only the old version gets requests
    out = run(k8s, canary, policy=policy(analysis_seconds=0.6))
    assert out["status"] == "rolled-back" and "fewer than min_requests" in out["analysis"]["reasons"][0]


def test_two_deployments_canary_then_stable(registry, k8s, canary):
    canary.traffic("2")
    out = run(k8s, canary, target="deployment")
    assert out["status"] == "promoted" and out["canary_percent"] == 33  # 1 canary pod beside 2 stable ones
    c_patch, s_patch, scale = [(r["path"].rsplit("/", 1)[1], r["body"]) for r in k8s.patches()]
    assert c_patch[0] == "cxr-serve-canary" and c_patch[1][0]["op"] == "test"  # guarded by resourceVersion
    assert {o["path"]: o["value"] for o in c_patch[1]}["/spec/replicas"] == 1
    assert k8s.requests[-1]["content_type"] == "application/json-patch+json"
    assert s_patch[0] == "cxr-serve" and scale == ("cxr-serve-canary", [{"op": "replace", "path": "/spec/replicas",
                                                                        "value": 0}])
    stable = k8s.get("Deployment", "cxr-serve")
    assert deploy.model_arg(stable["spec"]["template"]["spec"]["containers"][0]["args"]) == f"models:/{NAME}/2"
    assert k8s.get("Deployment", "cxr-serve-canary")["spec"]["replicas"] == 0


def test_canary_pods_that_never_get_ready_are_rolled_back(registry, k8s, canary):
    k8s.ready = False
    out = run(k8s, canary, target="deployment", policy=policy(ready_timeout=0.5))
    assert out["status"] == "rolled-back" and "not ready" in out["analysis"]["reasons"][0]
    stable = k8s.get("Deployment", "cxr-serve")
    assert deploy.model_arg(stable["spec"]["template"]["spec"]["containers"][0]["args"]) == f"models:/{NAME}/1"
    assert k8s.get("Deployment", "cxr-serve-canary")["spec"]["replicas"] == 0


def test_refusals_and_api_errors(registry, k8s, canary):
    with pytest.raises(RefusedError, match="no passed gate"):
        run(k8s, canary, version="3")
    with pytest.raises(CxrError, match=r"not found.*infra/k8s/serving"):
        run(k8s, canary, name="nope")
    cluster = deploy.Cluster("cxr-mlops", str(k8s.config))
    with pytest.raises(ServiceError, match="changed meanwhile"):
        cluster.patch_isvc("cxr-serve", {"metadata": {"resourceVersion": "1"}, "spec": {"predictor": {"timeout": 1}}})
    assert len(k8s.patches()) == 1  # the refused one, recorded but not applied
    with pytest.raises(CxrError, match="--prometheus URL"):
        deploy.deploy(tiny_params(), kubeconfig=str(k8s.config), source=None)


def test_prometheus_source_builds_the_queries(canary):
    asked = []

    class Prom(BaseHTTPRequestHandler):
        def do_GET(self):
            from urllib.parse import parse_qs, urlparse

            q = parse_qs(urlparse(self.path).query)["query"][0]
            asked.append(q)
            value = 3 if 'code=~"5.."' in q else 40 if "cxr_ood_flags" in q else 100
            data = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                             "result": [{"metric": {}, "value": [0, str(value)]}]}})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args):
            pass

    srv, base = serve_http(Prom)
    try:
        src = deploy.PrometheusSource(base)
        c = src.read("7")
        assert (c.requests, c.errors, c.ood) == (100, 3, 40) and c.error_rate == 0.03 and c.ood_rate == 0.4
        assert all('model_version="7"' in q and q.startswith("sum(increase(") for q in asked)
        verdict = deploy.analyse(src, "7", policy(analysis_seconds=0.2, interval=0.1))
        assert not verdict["passed"] and len(verdict["reasons"]) == 2
    finally:
        srv.shutdown()


def test_cli_deploy_dry_run_and_rollout(registry, k8s, canary, capsys):
    from cxr.cli import main

    args = ["deploy", "--params", str(ROOT / "params.yaml"), "--kubeconfig", str(k8s.config)]
    assert main([*args, "--dry-run"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["status"] == "dry-run" and planned["patches"][0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert not k8s.patches()
    canary.traffic("2", ood_every=2)
    code = main([*args, "--metrics-url", canary.url, "--analysis-seconds", "2", "--interval", "0.2"])
    assert code == 6 and json.loads(capsys.readouterr().out)["status"] == "rolled-back"
