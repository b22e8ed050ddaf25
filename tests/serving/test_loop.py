"""Closing the loop in the server (issue 16): OOD fields, /metrics parsed with prometheus-client's own parser,
the prediction log and POST /feedback, and a hot swap under load on a real uvicorn server."""

import json
import threading
import time

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.processes import free_port
from components.core.data import synthetic
from components.core.registry import registry
from serving.app import Settings, create_app
from serving.follow import AliasFollower, ModelHolder
from serving.predlog import PredictionLog
from tests.imagegen import encode, gray

SHIFTED = {"contrast": 0.6, "brightness": 0.15, "noise": 3.0}


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return registry.load(str(tiny_model_dir))


def demo_images(n: int, seed: int, style=None) -> list[bytes]:
    return [data for *_, data in synthetic.generate(["COVID19", "NORMAL", "PNEUMONIA"], n, 1, 64, 96, seed,
                                                    style=style)]


def post(c, data: bytes, **kw):
    return c.post("/predict", files={"file": ("x.png", data)}, **kw)


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total(found: dict, name: str, **labels) -> float:
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_predictions_carry_request_id_and_ood_fields(bundle):
    c = TestClient(create_app(bundle, Settings()))
    r = post(c, demo_images(1, 3)[0])
    body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == body["request_id"] and len(body["request_id"]) == 32
    assert isinstance(body["ood_score"], float) and isinstance(body["unlike_training_data"], bool)
    assert body["ood"]["threshold"] == pytest.approx(bundle.ood.threshold, abs=1e-3)
    assert body["unlike_training_data"] == (body["ood_score"] > body["ood"]["threshold"])
    assert 0 <= body["ood"]["percentile"] <= 1 and body["ood"]["method"].startswith("mahalanobis")
    assert c.get("/model").json()["ood"]["false_alarm"] == 0.05


def test_metrics_count_requests_errors_predictions_and_ood_flags(bundle):
    c = TestClient(create_app(bundle, Settings(token="t0k")), raise_server_exceptions=False)
    ok = {"Authorization": "Bearer t0k"}
    images = demo_images(3, 4) + demo_images(3, 5, SHIFTED)
    bodies = [post(c, img, headers=ok).json() for img in images]
    assert post(c, b"%PDF-1.4 not an image" * 10, headers=ok).status_code == 415
    assert post(c, images[0]).status_code == 401
    assert c.get("/health").status_code == 200
    resp = c.get("/metrics")  # open like /health: Prometheus scrapes it without the API token
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    m = samples(resp.text)
    v = bundle.version
    assert total(m, "cxr_requests_total", endpoint="/predict", code="200", model_version=v) == len(images)
    assert total(m, "cxr_request_errors_total", endpoint="/predict", code="415", error="not_an_image") == 1
    assert total(m, "cxr_request_errors_total", endpoint="/predict", code="401", error="unauthorized") == 1
    assert total(m, "cxr_predictions_total", model_version=v) == len(images)
    for label in {b["label"] for b in bodies}:
        assert total(m, "cxr_predictions_total", label=label) == sum(b["label"] == label for b in bodies)
    flagged = sum(b["unlike_training_data"] for b in bodies)
    assert flagged >= 3 and total(m, "cxr_ood_flags_total", model_version=v) == flagged  # the shifted site
    assert total(m, "cxr_ood_score_ratio_count", model_version=v) == len(images)
    assert total(m, "cxr_request_duration_seconds_count", endpoint="/predict") == len(images) + 2
    (info,) = m["cxr_model_info"]
    assert info.value == 1 and info.labels["version"] == v and info.labels["uri"] == bundle.uri


def test_prediction_log_and_feedback(bundle, tmp_path):
    log = PredictionLog(tmp_path / "log")
    c = TestClient(create_app(bundle, Settings(), prediction_log=log))
    body = post(c, encode(gray(120, 90, seed=1), "JPEG")).json()
    r = c.post("/feedback", json={"request_id": body["request_id"], "label": "PNEUMONIA"})
    assert r.status_code == 200 and r.json()["prediction"] == {"model_version": bundle.version, "label": body["label"]}
    assert c.post("/feedback", json={"request_id": body["request_id"], "label": "CAT"}).json()["detail"]["error"] == \
        "unknown_label"
    assert c.post("/feedback", json={"request_id": "../../etc", "label": "NORMAL"}).status_code == 422
    log.close()
    (f,) = log.files
    pred, fb = (json.loads(line) for line in f.read_text().splitlines())
    assert pred["type"] == "prediction" and pred["request_id"] == body["request_id"] and pred["label"] == body["label"]
    assert pred["image"]["width"] == 120 and pred["image"]["height"] == 90 and 0 <= pred["image"]["mean"] <= 255
    assert pred["ood_score"] == body["ood_score"] and pred["unlike_training_data"] == body["unlike_training_data"]
    assert set(pred) >= {"ts", "time", "model", "probabilities", "decision", "ood_threshold", "latency_ms"}
    assert len(f.read_text()) < 2000  # no pixel data in the log
    assert fb == {**fb, "type": "feedback", "request_id": body["request_id"], "label": "PNEUMONIA"}
    off = TestClient(create_app(bundle, Settings()))
    assert off.post("/feedback", json={"request_id": "a" * 32, "label": "NORMAL"}).status_code == 409


def test_page_shows_the_ood_warning(bundle):
    html = TestClient(create_app(bundle, Settings())).get("/").text
    assert 'id="ood"' in html and "j.unlike_training_data === true" in html
    assert "unlike the images the model was trained on" in html


class Server:
    """The app on a real uvicorn server in a thread (HTTP over loopback, a real thread pool)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def hammer(url: str, images: list[bytes], stop: threading.Event, seen: list, failures: list) -> None:
    with requests.Session() as s:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = s.post(url + "/predict", files={"file": ("x.png", images[i % len(images)])}, timeout=30)
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    seen.append(r.json()["model"]["version"])
            except requests.RequestException as err:
                failures.append(repr(err))


def test_hot_swap_under_load_drops_no_request(tiny_model_dir):
    first, second = registry.load(str(tiny_model_dir)), registry.load(str(tiny_model_dir))
    first.version, second.version = "1", "2"
    holder = ModelHolder(first)
    app = create_app(holder, Settings())
    srv = Server(app)
    stop, failures = threading.Event(), []
    seen: list[list[str]] = [[] for _ in range(4)]
    images = demo_images(2, 6)
    threads = [threading.Thread(target=hammer, args=(srv.url, images, stop, seen[k], failures)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = sum(map(len, seen))
        holder.swap(second)  # warms the new model up beside the old one, then one reference assignment
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        m = samples(requests.get(srv.url + "/metrics", timeout=10).text)
    finally:
        stop.set()
        srv.stop()
    n = sum(map(len, seen))
    print(f"hot swap under load (in-process): {n} requests, {len(failures)} failed, {before} before the swap")
    assert failures == [] and before > 0 and n > before
    for versions in seen:
        assert set(versions) <= {"1", "2"} and versions[-1] == "2"
        assert versions == sorted(versions)  # once a thread saw v2 it never saw v1 again
    assert total(m, "cxr_model_swaps_total", result="ok") == 1
    assert [s.labels["version"] for s in m["cxr_model_info"]] == ["2"]  # the old version's info series is gone
    assert total(m, "cxr_predictions_total", model_version="1") + total(m, "cxr_predictions_total",
                                                                        model_version="2") == n


def test_follower_keeps_serving_when_the_registry_is_down(bundle, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    holder = ModelHolder(bundle)
    failed = threading.Event()
    follower = AliasFollower(holder, "cxr-classifier", "champion", poll_seconds=0.05,
                             on_failure=lambda err: failed.set())
    follower.start()
    try:
        assert failed.wait(20)
    finally:
        follower.stop()
        follower.join(10)
        mlflow.set_tracking_uri(previous)
    assert holder.current is bundle and holder.swaps == 0
    np.testing.assert_equal(holder.current.infer_ood(np.zeros((1, 32, 32, 1), np.uint8))[0].shape, (1, 3))


def test_batch_predict_writes_the_ood_columns(tiny_model_dir, tmp_path):
    import pandas as pd

    from serving import predict

    d = tmp_path / "in"
    d.mkdir()
    for i, data in enumerate(demo_images(2, 7) + demo_images(2, 8, SHIFTED)):
        (d / f"{'shifted' if i >= 6 else 'same'}-{i:02d}.png").write_bytes(data)
    (d / "broken.png").write_bytes(b"not an image")
    summary = predict.run(registry.load(str(tiny_model_dir)), d, tmp_path / "preds.csv", workers=1)
    df = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False).set_index("path")
    assert list(df.columns[-4:]) == ["ood_score", "unlike_training_data", "error", "note"]
    shifted = df[df.index.str.startswith("shifted")]
    assert (shifted["unlike_training_data"] == "True").all() and summary["unlike_training_data"] >= len(shifted)
    assert df.loc["broken.png", "ood_score"] == "" and df.loc["broken.png", "error"].startswith("not_an_image")
