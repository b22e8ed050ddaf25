"""A loopback HTTP server speaking the subset of the KFP v2beta1 REST API that `cxr pipeline submit`
and `schedule` use (health, experiments, runs, recurring runs), recording every request.
No Kubeflow cluster runs here; the real `kfp.Client` talks to this over real HTTP."""

from __future__ import annotations

import itertools
import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.support import reply_json, serve_http

API = "/apis/v2beta1"


class FakeKfp:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self._ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}") if n else {}
                url = urlparse(self.path)
                fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                      "body": body})
                status, out = fake.route(self.command, url.path, parse_qs(url.query), body)
                reply_json(self, status, out)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server, self.host = serve_http(Handler)

    def close(self) -> None:
        self.server.shutdown()

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments" and method == "GET":
            found = list(self.experiments.values())
            for pred in json.loads(query.get("filter", ["{}"])[0]).get("predicates", []):
                found = [e for e in found if e.get(pred["key"]) == pred.get("stringValue", pred.get("string_value"))]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == f"{API}/experiments" and method == "POST":
            exp = {"experiment_id": self._id("exp"), "display_name": body["display_name"]}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{API}/runs" and method == "POST":
            run = {**body, "run_id": self._id("run"), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if path == f"{API}/recurringruns" and method == "GET":
            exp = query.get("experiment_id", [None])[0]
            found = [r for r in self.recurring.values() if exp is None or r.get("experiment_id") == exp]
            return 200, {"recurringRuns": found, "total_size": len(found)}
        if path == f"{API}/recurringruns" and method == "POST":
            rr = {**body, "recurring_run_id": self._id("rr"), "status": "ENABLED"}
            self.recurring[rr["recurring_run_id"]] = rr
            return 200, rr
        if path.startswith(f"{API}/recurringruns/") and method == "DELETE":
            rid = path.rsplit("/", 1)[1]
            if self.recurring.pop(rid, None) is None:
                return 404, {"error": f"recurring run {rid} not found", "code": 5}
            return 200, {}
        return 404, {"error": f"{method} {path} is not part of the fake", "code": 5}
