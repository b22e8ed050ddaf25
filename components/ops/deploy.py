"""Deploy: roll a registered version out on the cluster behind a canary, and roll back on bad canary metrics.

``cxr deploy`` (after ``cxr promote``) points the model server at ``models:/<name>/<N>`` — a pinned
version, never an alias, so what runs is exactly what was rolled out — for the champion (default) or
``--version N`` (refused unless it carries a passed gate). Two targets, both in ``infra/k8s/serving``:

* ``kserve``: the InferenceService ``cxr-serve`` (serverless mode: the canary split is Knative's).
  1. merge-PATCH the ``kserve-container``'s ``--model`` and ``spec.predictor.canaryTrafficPercent``
     (with ``metadata.resourceVersion``: a concurrent edit makes the API answer 409, nothing is overwritten);
  2. wait until the new revision is ready (``latestReadyRevision == latestCreatedRevision``, Ready=True);
  3. analyse the canary (below); 4. pass: PATCH ``canaryTrafficPercent: null`` (KServe sends all
     traffic to the latest revision); fail: PATCH ``canaryTrafficPercent: 0`` — KServe's documented
     rollback, all traffic to the previous rolled-out revision — with the previous ``--model`` restored.
* ``deployment`` (no KServe): Deployments ``cxr-serve`` (stable, with an HPA) and ``cxr-serve-canary``
  (0 replicas at rest) behind one Service; the canary share is its share of the ready pods.
  1. JSON-PATCH the canary's ``--model`` and replicas (guarded by a ``test`` of its resourceVersion);
  2. wait until its pods are ready; 3. analyse; 4. pass: JSON-PATCH the stable Deployment's ``--model``,
     wait for its rolling update, scale the canary to 0; fail: scale the canary to 0.

**Canary analysis.** Every metric the server exports carries ``model_version`` (:mod:`serving.metrics`),
so the canary is the series of the new version. Sources: the Prometheus HTTP API (``--prometheus``:
``increase()`` of ``cxr_requests_total``, ``cxr_predictions_total`` and ``cxr_ood_flags_total`` over the
analysis so far) or the canary pods' own ``/metrics`` (``--metrics-url``, repeatable: counter
differences since the analysis began). Every ``interval`` the canary's error rate (5xx answers of
``/predict``; a 4xx is the client's upload) and OOD rate (predictions flagged ``unlike_training_data``)
are compared with ``monitor.canary.max_error_rate`` / ``max_ood_rate`` once it has served
``min_requests``: crossing either rolls back at once. At the end of ``analysis_seconds`` a canary with
fewer than ``min_requests`` predictions is rolled back too (fail closed: unverified is not good).

The registry's ``champion`` alias is not touched: after a rollback, ``cxr rollback`` moves it back.
The Kubernetes API is reached with the ``kubernetes`` client: a kubeconfig (``--kubeconfig``,
``--context``, else ``~/.kube/config``) or, inside a pod, the service account.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from components.core.contract.errors import CxrError, RefusedError, ServiceError
from components.core.registry import registry, tracking

log = logging.getLogger(__name__)

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
CONTAINER = "kserve-container"
ANNOTATION = "cxr-mlops.io/"
_VERSION_ARG = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


# ---------------------------------------------------------------------- canary metrics
@dataclass
class Counts:
    """What the canary version has served since the analysis began."""

    requests: float = 0.0      # /predict requests
    errors: float = 0.0        # of which 5xx
    predictions: float = 0.0
    ood: float = 0.0           # predictions flagged unlike_training_data

    def minus(self, other: Counts) -> Counts:
        return Counts(*(max(0.0, a - b) for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def ood_rate(self) -> float | None:
        return self.ood / self.predictions if self.predictions else None


def parse_metrics(text: str, version: str) -> Counts:
    """Sum the canary's series (``model_version=version``) in a ``/metrics`` page."""
    from prometheus_client.parser import text_string_to_metric_families

    c = Counts()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_total") or s.labels.get("model_version") != version:
                continue
            if s.name == "cxr_requests_total" and s.labels.get("endpoint") == "/predict":
                c.requests += s.value
                c.errors += s.value if s.labels.get("code", "").startswith("5") else 0.0
            elif s.name == "cxr_predictions_total":
                c.predictions += s.value
            elif s.name == "cxr_ood_flags_total":
                c.ood += s.value
    return c


class ScrapeSource:
    """The canary pods' own ``/metrics`` pages: counter differences since :meth:`start`."""

    def __init__(self, urls: list[str], timeout: float = 10.0) -> None:
        self.urls, self.timeout = list(urls), timeout
        self.base = Counts()

    def _total(self, version: str) -> Counts:
        import requests

        total = Counts()
        for url in self.urls:
            try:
                resp = requests.get(url, timeout=self.timeout)
                resp.raise_for_status()
            except requests.RequestException as err:
                raise ServiceError(f"canary metrics {url}: {type(err).__name__}: {str(err)[:200]}") from None
            got = parse_metrics(resp.text, version)
            total = Counts(*(a + b for a, b in zip(asdict(total).values(), asdict(got).values(), strict=True)))
        return total

    def start(self, version: str) -> None:
        self.base = self._total(version)

    def read(self, version: str) -> Counts:
        return self._total(version).minus(self.base)


class PrometheusSource:
    """The Prometheus HTTP API: ``increase()`` over the time since :meth:`start`."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout, self.started = url.rstrip("/"), timeout, time.time()

    def _query(self, expr: str) -> float:
        import requests

        try:
            resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout)
            resp.raise_for_status()
            body = resp.json()
        except (requests.RequestException, ValueError) as err:
            raise ServiceError(f"Prometheus {self.url}: {type(err).__name__}: {str(err)[:200]}") from None
        if body.get("status") != "success":
            raise ServiceError(f"Prometheus {self.url}: {body.get('error', body)}")
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def start(self, version: str) -> None:
        self.started = time.time()

    def read(self, version: str) -> Counts:
        w = f"{max(1, int(time.time() - self.started))}s"
        v = f'model_version="{version}"'
        return Counts(
            requests=self._query(f'sum(increase(cxr_requests_total{{endpoint="/predict",{v}}}[{w}]))'),
            errors=self._query(f'sum(increase(cxr_requests_total{{endpoint="/predict",code=~"5..",{v}}}[{w}]))'),
            predictions=self._query(f"sum(increase(cxr_predictions_total{{{v}}}[{w}]))"),
            ood=self._query(f"sum(increase(cxr_ood_flags_total{{{v}}}[{w}]))"))


@dataclass
class Policy:
    traffic_percent: int
    analysis_seconds: float
    max_error_rate: float
    max_ood_rate: float
    min_requests: int
    interval: float = 15.0
    ready_timeout: float = 600.0


def analyse(source, version: str, policy: Policy, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> dict:
    """Watch the canary for ``policy.analysis_seconds``; the verdict and the numbers it rests on."""
    source.start(version)
    started = clock()
    samples = []
    while True:
        sleep(min(policy.interval, max(0.0, policy.analysis_seconds - (clock() - started))))
        c = source.read(version)
        elapsed = round(clock() - started, 1)
        samples.append({"seconds": elapsed, **asdict(c)})
        enough = c.predictions >= policy.min_requests or c.requests >= policy.min_requests
        reasons = []
        if enough and c.error_rate is not None and c.error_rate > policy.max_error_rate:
            reasons.append(f"error rate {c.error_rate:.1%} ({int(c.errors)} of {int(c.requests)} /predict answered "
                           f"5xx) > {policy.max_error_rate:.1%}")
        if enough and c.ood_rate is not None and c.ood_rate > policy.max_ood_rate:
            reasons.append(f"OOD rate {c.ood_rate:.1%} ({int(c.ood)} of {int(c.predictions)} flagged "
                           f"unlike_training_data) > {policy.max_ood_rate:.1%}")
        if reasons:
            return {"passed": False, "reasons": reasons, "counts": asdict(c), "samples": samples}
        if elapsed >= policy.analysis_seconds:
            if c.predictions < policy.min_requests:
                return {"passed": False, "counts": asdict(c), "samples": samples,
                        "reasons": [f"the canary served {int(c.predictions)} predictions in {elapsed:.0f} s, fewer "
                                    f"than min_requests={policy.min_requests}: not verified, so not promoted"]}
            return {"passed": True, "reasons": [], "counts": asdict(c), "samples": samples}


# ---------------------------------------------------------------------- Kubernetes
def _api_error(what: str, err: Exception) -> CxrError:
    status = getattr(err, "status", None)
    body = str(getattr(err, "body", "") or err)[:300]
    if status == 404:
        return CxrError(f"{what}: not found ({body}). Apply the serving manifests first (infra/k8s/serving).")
    if status in (409, 422):
        return ServiceError(f"{what}: the object changed meanwhile (HTTP {status}: {body}); nothing was overwritten: "
                            "run `cxr deploy` again")
    return ServiceError(f"{what}: {type(err).__name__} {status or ''}: {body}")


class Cluster:
    """The few Kubernetes calls a roll-out needs (``kubernetes`` client; errors become CxrErrors)."""

    def __init__(self, namespace: str, kubeconfig: str | None = None, context: str | None = None,
                 timeout: float = 30.0) -> None:
        from kubernetes import client, config

        try:
            if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                api = config.new_client_from_config(config_file=kubeconfig, context=context)
            else:
                config.load_incluster_config()
                api = client.ApiClient()
        except Exception as err:  # no kubeconfig, unknown context
            raise ServiceError(f"no Kubernetes API configured: {type(err).__name__}: {str(err)[:200]} "
                               "(pass --kubeconfig/--context, or run inside the cluster)") from None
        self.namespace, self.timeout = namespace, timeout
        self.custom, self.apps = client.CustomObjectsApi(api), client.AppsV1Api(api)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs, _request_timeout=self.timeout)
        except Exception as err:
            raise _api_error(what, err) from None

    def get_isvc(self, name: str) -> dict:
        return self._call(f"InferenceService {self.namespace}/{name}", self.custom.get_namespaced_custom_object,
                          *KSERVE[:2], self.namespace, KSERVE[2], name)

    def patch_isvc(self, name: str, body: dict) -> dict:
        return self._call(f"PATCH InferenceService {self.namespace}/{name}",
                          self.custom.patch_namespaced_custom_object, *KSERVE[:2], self.namespace, KSERVE[2], name,
                          body)

    def get_deployment(self, name: str) -> dict:
        obj = self._call(f"Deployment {self.namespace}/{name}", self.apps.read_namespaced_deployment, name,
                         self.namespace)
        return self.apps.api_client.sanitize_for_serialization(obj)

    def patch_deployment(self, name: str, ops: list[dict]) -> dict:
        obj = self._call(f"PATCH Deployment {self.namespace}/{name}", self.apps.patch_namespaced_deployment, name,
                         self.namespace, ops)
        return self.apps.api_client.sanitize_for_serialization(obj)


def model_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--model" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--model="):
            return a.split("=", 1)[1]
    return None


def with_model_arg(args: list[str], uri: str) -> list[str]:
    out = list(args)
    for i, a in enumerate(out):
        if a == "--model" and i + 1 < len(out):
            out[i + 1] = uri
            return out
        if a.startswith("--model="):
            out[i] = f"--model={uri}"
            return out
    return [*out, "--model", uri]


def _version_of(uri: str | None) -> str | None:
    m = _VERSION_ARG.match(uri or "")
    return m["version"] if m else None


def _container(pod_spec: dict, name: str | None = None) -> tuple[int, dict]:
    containers = pod_spec.get("containers") or []
    for i, c in enumerate(containers):
        if name is None or c.get("name") == name:
            return i, c
    raise CxrError(f"no container {name or ''} in the pod spec (containers: {[c.get('name') for c in containers]})")


def _wait(what: str, ready: Callable[[], bool], timeout: float, sleep: Callable[[float], None],
          clock: Callable[[], float], interval: float = 2.0) -> bool:
    deadline = clock() + timeout
    while clock() < deadline:
        if ready():
            return True
        sleep(min(interval, max(0.05, timeout / 10)))
    log.warning("%s not ready after %.0f s", what, timeout)
    return False


def isvc_ready(obj: dict) -> bool:
    status, meta = obj.get("status") or {}, obj.get("metadata") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    cond = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (status.get("observedGeneration", 0) >= meta.get("generation", 0) and cond.get("Ready") == "True"
            and bool(pred.get("latestCreatedRevision"))
            and pred.get("latestReadyRevision") == pred.get("latestCreatedRevision"))


def deployment_ready(obj: dict) -> bool:
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    want = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= meta.get("generation", 0)
            and (status.get("updatedReplicas") or 0) == want and (status.get("readyReplicas") or 0) == want)


# ---------------------------------------------------------------------- the roll-out
def resolve_version(params, version: str | None, alias: str | None) -> tuple[str, str]:
    """(model name, version) to deploy: ``version`` (gated) or the version behind ``alias`` (champion)."""
    tracking.setup(params)
    name = params.registry.model_name
    mv = registry.get_version(name, version) if version else registry.version_by_alias(name, alias or registry.CHAMPION)
    if mv is None:
        raise CxrError(f"model {name} has no alias {alias or registry.CHAMPION!r}: `cxr promote` first, or --version")
    if (mv.tags or {}).get(registry.GATE_TAG) != "true":
        raise RefusedError(f"{name} v{mv.version} has no passed gate (tag {registry.GATE_TAG}=true): "
                           "refusing to deploy")
    return name, str(mv.version)


def deploy(params, *, version: str | None = None, alias: str | None = None, target: str = "kserve",
           namespace: str = "cxr-mlops", name: str = "cxr-serve", policy: Policy | None = None, source=None,
           kubeconfig: str | None = None, context: str | None = None, cluster: Cluster | None = None,
           dry_run: bool = False, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> dict:
    """Roll ``models:/<name>/<N>`` out behind a canary; promote it or roll it back. Returns what happened."""
    if target not in ("kserve", "deployment"):
        raise CxrError(f"--target {target!r}: expected kserve or deployment")
    if source is None and not dry_run:
        raise CxrError("the canary analysis needs metrics: --prometheus URL (the Prometheus HTTP API) or "
                       "--metrics-url URL of the canary pods' /metrics (repeatable)")
    c = params.monitor.canary
    policy = policy or Policy(c.traffic_percent, c.analysis_seconds, c.max_error_rate, c.max_ood_rate, c.min_requests)
    model_name, new = resolve_version(params, version, alias)
    uri = f"models:/{model_name}/{new}"
    cluster = cluster or Cluster(namespace, kubeconfig, context)
    run = _kserve if target == "kserve" else _deployments
    result = run(cluster, name, uri, new, policy, source, dry_run, sleep, clock)
    result.update({"target": target, "namespace": namespace, "name": name, "model": uri, "version": new,
                   "policy": asdict(policy)})
    return result


def _annotations(**kv: str) -> dict[str, str]:
    return {ANNOTATION + k.replace("_", "-"): str(v) for k, v in kv.items()}


def _kserve(cluster: Cluster, name: str, uri: str, new: str, policy: Policy, source, dry_run: bool, sleep, clock):
    obj = cluster.get_isvc(name)
    pred = obj["spec"]["predictor"]
    containers = [dict(x) for x in pred.get("containers") or []]
    i, container = _container(pred, CONTAINER) if any(x.get("name") == CONTAINER for x in containers) else \
        _container(pred)
    old_uri = model_arg(container.get("args") or [])
    old = _version_of(old_uri)
    if old == new and pred.get("canaryTrafficPercent") in (None, 100):
        return {"changed": False, "status": "unchanged", "previous_version": old}
    containers[i] = {**container, "args": with_model_arg(container.get("args") or [], uri)}
    patch = {"metadata": {"resourceVersion": obj["metadata"].get("resourceVersion"),
                          "annotations": _annotations(model_version=new, previous_model_version=old or "",
                                                      deploy_status="canary")},
             "spec": {"predictor": {"canaryTrafficPercent": policy.traffic_percent, "containers": containers}}}
    if dry_run:
        return {"changed": False, "status": "dry-run", "previous_version": old, "patches": [patch]}
    cluster.patch_isvc(name, patch)
    log.info("InferenceService %s: v%s at %d%% of traffic (previous v%s)", name, new, policy.traffic_percent, old)
    ready = _wait(f"InferenceService {name} v{new}", lambda: isvc_ready(cluster.get_isvc(name)), policy.ready_timeout,
                  sleep, clock)
    verdict = analyse(source, new, policy, sleep, clock) if ready else {
        "passed": False, "reasons": [f"the new revision was not ready within {policy.ready_timeout:.0f} s"]}
    if verdict["passed"]:
        cluster.patch_isvc(name, {"metadata": {"annotations": _annotations(deploy_status="promoted")},
                                  "spec": {"predictor": {"canaryTrafficPercent": None}}})
        log.info("InferenceService %s: canary v%s promoted to all traffic", name, new)
        return {"changed": True, "status": "promoted", "previous_version": old, "analysis": verdict}
    restored = [dict(x) for x in containers]
    restored[i] = {**container, "args": container.get("args") or []}
    notes = _annotations(deploy_status="rolled-back", rolled_back_version=new, model_version=old or "")
    cluster.patch_isvc(name, {"metadata": {"annotations": notes},
                              "spec": {"predictor": {"canaryTrafficPercent": 0, "containers": restored}}})
    log.warning("InferenceService %s: canary v%s rolled back to v%s: %s", name, new, old, "; ".join(verdict["reasons"]))
    return {"changed": True, "status": "rolled-back", "previous_version": old, "analysis": verdict}


def _deployments(cluster: Cluster, name: str, uri: str, new: str, policy: Policy, source, dry_run: bool, sleep, clock):
    canary_name = f"{name}-canary"
    stable, canary = cluster.get_deployment(name), cluster.get_deployment(canary_name)
    _, s_container = _container(stable["spec"]["template"]["spec"])
    ci, c_container = _container(canary["spec"]["template"]["spec"])
    old = _version_of(model_arg(s_container.get("args") or []))
    if old == new:
        return {"changed": False, "status": "unchanged", "previous_version": old}
    stable_replicas = max(1, int(stable["spec"].get("replicas") or 1))
    share = policy.traffic_percent / 100
    canary_replicas = max(1, round(stable_replicas * share / (1 - share)))
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": canary["metadata"]["resourceVersion"]},
           {"op": "replace", "path": f"/spec/template/spec/containers/{ci}/args",
            "value": with_model_arg(c_container.get("args") or [], uri)},
           {"op": "replace", "path": "/spec/replicas", "value": canary_replicas},
           {"op": "add", "path": "/metadata/annotations", "value": {
               **(canary["metadata"].get("annotations") or {}),
               **_annotations(model_version=new, previous_model_version=old or "", deploy_status="canary")}}]
    if dry_run:
        return {"changed": False, "status": "dry-run", "previous_version": old, "patches": [ops]}
    cluster.patch_deployment(canary_name, ops)
    actual = round(100 * canary_replicas / (canary_replicas + stable_replicas))
    log.info("Deployment %s: v%s on %d pod(s) (~%d%% of traffic) beside v%s", canary_name, new, canary_replicas,
             actual, old)
    ready = _wait(f"Deployment {canary_name}", lambda: deployment_ready(cluster.get_deployment(canary_name)),
                  policy.ready_timeout, sleep, clock)
    verdict = analyse(source, new, policy, sleep, clock) if ready else {
        "passed": False, "reasons": [f"the canary pods were not ready within {policy.ready_timeout:.0f} s"]}
    scale_down = [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    if verdict["passed"]:
        si, _ = _container(stable["spec"]["template"]["spec"])
        fresh = cluster.get_deployment(name)
        cluster.patch_deployment(name, [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh["metadata"]["resourceVersion"]},
            {"op": "replace", "path": f"/spec/template/spec/containers/{si}/args",
             "value": with_model_arg(s_container.get("args") or [], uri)}])
        rolled = _wait(f"Deployment {name}", lambda: deployment_ready(cluster.get_deployment(name)),
                       policy.ready_timeout, sleep, clock)
        cluster.patch_deployment(canary_name, scale_down)
        return {"changed": True, "status": "promoted" if rolled else "promoted-not-ready", "previous_version": old,
                "canary_percent": actual, "analysis": verdict}
    cluster.patch_deployment(canary_name, scale_down)
    log.warning("Deployment %s: canary v%s scaled to 0, v%s keeps serving: %s", canary_name, new, old,
                "; ".join(verdict["reasons"]))
    return {"changed": True, "status": "rolled-back", "previous_version": old, "canary_percent": actual,
            "analysis": verdict}


def metrics_source(prometheus: str | None, urls: list[str] | None) -> Any:
    """The canary's metrics: the Prometheus HTTP API, or the canary pods' /metrics pages (None: neither given)."""
    if prometheus and urls:
        raise CxrError("give either --prometheus or --metrics-url, not both")
    if prometheus:
        return PrometheusSource(prometheus)
    return ScrapeSource(urls) if urls else None
