"""A loopback HTTP server speaking the subset of the Kubernetes API that `cxr deploy` uses: GET and PATCH
of an InferenceService (JSON merge patch) and of Deployments (JSON patch), recording every request; and
what the pipeline's train task uses: POST, GET and DELETE of Kubeflow Trainer TrainJobs, whose "controller"
is a function the test gives (``trainjob_controller``, run in a thread; it returns the status conditions).
No cluster runs here; the real `kubernetes` client talks to this over real HTTP (via a kubeconfig).

It plays the controllers too, just enough: a PATCH that changes ``spec`` bumps ``generation``,
``resourceVersion`` and the InferenceService's revision, and the status follows at once (ready), unless
``ready=False``. A merge patch carrying a stale ``metadata.resourceVersion`` gets 409 and a JSON patch
whose ``test`` fails gets 422, as from the real API server.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.support import reply_json, serve_http

ISVC = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices/(?P<name>[^/]+)$")
DEPLOY = re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)$")
TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/(?P<ns>[^/]+)/trainjobs(/(?P<name>[^/]+))?$")


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class PatchTestFailed(Exception):
    pass


def json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902: add, replace, remove, test (enough for cxr deploy)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        leaf = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "test":
            if parent[leaf] != op["value"]:
                raise PatchTestFailed(f"{op['path']} is {parent[leaf]!r}, not {op['value']!r}")
        elif op["op"] in ("add", "replace"):
            parent[leaf] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[leaf]
    return doc


class FakeK8s:
    def __init__(self, ready: bool = True) -> None:
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}
        self.ready = ready
        self.trainjob_controller = None  # obj -> list of status conditions (runs in a thread)
        self._rv = 100
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"null") if n else None
                fake.requests.append({"method": self.command, "path": self.path.split("?")[0], "body": body,
                                      "content_type": self.headers.get("content-type"),
                                      "authorization": self.headers.get("authorization")})
                status, out = fake.route(self.command, self.path.split("?")[0], body,
                                         self.headers.get("content-type") or "")
                reply_json(self, status, out)

            do_GET = do_PATCH = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server, self.host = serve_http(Handler)

    def close(self) -> None:
        self.server.shutdown()

    def kubeconfig(self, path: Path, token: str = "test-token") -> Path:  # pragma: allowlist secret
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": {"server": self.host}}],
               "users": [{"name": "fake", "user": {"token": token}}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}
        path.write_text(json.dumps(cfg))
        return path

    # ------------------------------------------------------------------ objects
    def add(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "cxr-mlops")
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        self._settle(obj)
        self.objects[self._key(obj["kind"], meta["namespace"], meta["name"])] = obj
        return obj

    def get(self, kind: str, name: str, ns: str = "cxr-mlops") -> dict:
        return self.objects[self._key(kind, ns, name)]

    def patches(self, name: str | None = None) -> list[dict]:
        return [r for r in self.requests if r["method"] == "PATCH" and (name is None or r["path"].endswith("/" + name))]

    @staticmethod
    def _key(kind: str, ns: str, name: str) -> str:
        return f"{kind}/{ns}/{name}"

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _settle(self, obj: dict) -> None:
        """What the controllers would do: revisions and status."""
        gen = obj["metadata"]["generation"]
        name = obj["metadata"]["name"]
        if obj["kind"] == "InferenceService":
            created = f"{name}-predictor-{gen:05d}"
            prev = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
            ready_rev = created if self.ready else prev.get("latestReadyRevision", f"{name}-predictor-00001")
            pct = obj["spec"]["predictor"].get("canaryTrafficPercent")
            obj["status"] = {
                "observedGeneration": gen,
                "conditions": [{"type": "Ready", "status": "True" if self.ready else "False"}],
                "components": {"predictor": {"latestCreatedRevision": created, "latestReadyRevision": ready_rev,
                                             "traffic": [{"revisionName": created, "latestRevision": True,
                                                          "percent": 100 if pct is None else pct}]}}}
        else:
            want = obj["spec"].get("replicas", 1)
            n = want if self.ready else 0
            obj["status"] = {"observedGeneration": gen, "replicas": want, "updatedReplicas": n, "readyReplicas": n,
                             "availableReplicas": n}

    # ------------------------------------------------------------------ the API
    def _trainjobs(self, method: str, ns: str, name: str | None, body) -> tuple[int, dict]:
        if method == "POST" and name is None:
            name = body["metadata"]["name"]
            key = self._key("TrainJob", ns, name)
            with self._lock:
                if key in self.objects:
                    return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists",
                                 "message": f'trainjobs.trainer.kubeflow.org "{name}" already exists'}
                obj = copy.deepcopy(body)
                obj["metadata"].update(namespace=ns, resourceVersion=self._next_rv(), generation=1)
                obj["status"] = {"conditions": [{"type": "Created", "status": "True", "reason": "JobSetCreated"}]}
                self.objects[key] = obj

            def control():
                conditions = self.trainjob_controller(copy.deepcopy(obj)) if self.trainjob_controller else []
                with self._lock:
                    if key in self.objects:
                        self.objects[key]["status"]["conditions"] += conditions

            threading.Thread(target=control, daemon=True).start()
            return 201, obj
        key = self._key("TrainJob", ns, name or "")
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound",
                             "message": f'trainjobs.trainer.kubeflow.org "{name}" not found'}
            if method == "DELETE":
                del self.objects[key]
                return 200, {"kind": "Status", "status": "Success"}
            return 200, copy.deepcopy(obj)

    def route(self, method: str, path: str, body, content_type: str) -> tuple[int, dict]:
        tj = TRAINJOBS.match(path)
        if tj:
            return self._trainjobs(method, tj["ns"], tj["name"], body)
        m = ISVC.match(path) or DEPLOY.match(path)
        if not m:
            return 404, {"kind": "Status", "code": 404, "message": f"{method} {path} is not part of the fake"}
        kind = "InferenceService" if ISVC.match(path) else "Deployment"
        key = self._key(kind, m["ns"], m["name"])
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound",
                             "message": f'{kind.lower()}s "{m["name"]}" not found'}
            if method == "GET":
                return 200, obj
            try:
                if content_type.startswith("application/merge-patch+json"):
                    rv = (body.get("metadata") or {}).get("resourceVersion")
                    if rv is not None and rv != obj["metadata"]["resourceVersion"]:
                        return 409, {"kind": "Status", "code": 409, "reason": "Conflict",
                                     "message": "the object has been modified; please apply your changes to the "
                                                "latest version and try again"}
                    new = merge_patch(obj, body)
                elif content_type.startswith("application/json-patch+json"):
                    new = json_patch(obj, body)
                else:
                    return 415, {"kind": "Status", "code": 415, "message": f"unsupported patch {content_type}"}
            except PatchTestFailed as err:
                return 422, {"kind": "Status", "code": 422, "reason": "Invalid", "message": str(err)}
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            new["status"] = obj.get("status")
            self._settle(new)
            self.objects[key] = new
            return 200, new
