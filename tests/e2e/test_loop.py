"""The loop end to end on loopback: a real `cxr serve --follow-alias champion` process serving a registered
model (sqlite MLflow store shared with this test), in-distribution requests (the split's own test images and
fresh films from the same demo site) against a shifted demo site, /metrics parsed, `cxr monitor` judging
each window (and submitting retraining to the fake KFP REST API), feedback, and a hot swap under load."""

import json
import shutil
import threading
import time

import numpy as np
import pytest
import requests

from benchmarks.processes import ROOT, free_port, start_cxr_serve, stop
from components import train
from components.core.data import shards, synthetic
from components.core.model import ood
from tests.e2e.kfp_fake import FakeKfp
from tests.serving.test_loop import SHIFTED, samples, total
from tests.support import train_params, write_params

pytestmark = pytest.mark.slow
NAME = "cxr-classifier"
CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def register(model_dir, run_id=None) -> str:
    """Log the trained folder as the train step does (model with its preprocessing record + OOD reference) and
    register a gated version."""
    import mlflow

    from components.core.model import models

    if run_id is None:
        with mlflow.start_run() as run:
            prep = models.Preprocessing.load(model_dir)
            mlflow.keras.log_model(models.load_model(model_dir / "model.keras"), name="model",
                                   metadata=prep.mlflow_metadata(), pip_requirements=train.pip_requirements())
            mlflow.log_artifact(str(model_dir / ood.REFERENCE_FILE), artifact_path=ood.ARTIFACT_DIR)
            run_id = run.info.run_id
    mv = mlflow.register_model(f"runs:/{run_id}/model", NAME, tags={"gate_passed": "true", "run_id": run_id})
    return str(mv.version), run_id


@pytest.fixture(scope="module")
def loop(tiny_model_dir, tiny_shards, tmp_path_factory, _migrated_mlflow_db):
    import mlflow

    root = tmp_path_factory.mktemp("loop")
    shutil.copy(_migrated_mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("cxr")
        v1, run_id = register(tiny_model_dir)
        resize = json.loads((tiny_model_dir / "train_summary.json").read_text())["resize"]
        mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", v1)
        p = train_params()
        p = p.model_copy(update={"monitor": p.monitor.model_copy(update={
            "min_predictions": 30, "max_ood_rate": 0.5, "retrain_on": ["ood_rate", "image_drift"]})})
        params = write_params(root / "params.yaml", p)
        port = free_port()
        started = time.perf_counter()
        proc = start_cxr_serve(["--params", str(params), "--follow-alias", "champion", "--poll-seconds", "0.5",
                                "--prediction-log", str(root / "predictions")], port, root / "serve.log",
                               MLFLOW_TRACKING_URI=uri)
        state = {"root": root, "url": f"http://127.0.0.1:{port}", "params": params, "run_id": run_id, "v1": v1,
                 "resize": resize,
                 "startup_s": round(time.perf_counter() - started, 1)}
        try:
            yield state
        finally:
            stop(proc)
            mlflow.set_tracking_uri(None)


def predict_all(url: str, images: list[bytes]) -> list[dict]:
    out = []
    with requests.Session() as s:
        for data in images:
            r = s.post(url + "/predict", files={"file": ("x.png", data)}, timeout=60)
            assert r.status_code == 200, r.text
            out.append(r.json())
    return out


def test_shifted_site_is_flagged_far_more_than_in_distribution_images(loop, tiny_shards):
    test = shards.load_split(tiny_shards, "test")
    raw = tiny_shards.parent / "raw"
    own = [(raw / p).read_bytes() for p in test.rows["path"]]  # the split's own test images, as files
    fresh = [d for *_, d in synthetic.generate(CLASSES, 14, 1, 64, 96, seed=101)]  # same site, new patients
    shifted = [d for *_, d in synthetic.generate(CLASSES, 14, 1, 64, 96, seed=102, style=SHIFTED)]
    loop["t0"] = time.time() - 0.05
    inside = predict_all(loop["url"], own + fresh)
    time.sleep(0.1)
    loop["t1"] = time.time()  # in the gap between the two phases: the windows do not overlap
    time.sleep(0.1)
    outside = predict_all(loop["url"], shifted)
    loop["t2"] = time.time() + 0.05
    loop["inside"], loop["outside"] = inside, outside
    rate_in = float(np.mean([b["unlike_training_data"] for b in inside]))
    rate_out = float(np.mean([b["unlike_training_data"] for b in outside]))
    loop["rates"] = {"in_distribution": round(rate_in, 3), "shifted_site": round(rate_out, 3),
                     "n_in": len(inside), "n_out": len(outside)}
    print("OOD flag rate via cxr serve:", loop["rates"])
    assert all(b["model"]["version"] == loop["v1"] and b["model"]["alias"] == "champion" for b in inside + outside)
    assert rate_out >= 0.8 and rate_out - rate_in >= 0.4


def test_metrics_match_what_was_served(loop):
    m = samples(requests.get(loop["url"] + "/metrics", timeout=10).text)
    served = loop["inside"] + loop["outside"]
    v = loop["v1"]
    assert total(m, "cxr_predictions_total", model_version=v) == len(served)
    assert total(m, "cxr_ood_flags_total", model_version=v) == sum(b["unlike_training_data"] for b in served)
    assert total(m, "cxr_requests_total", endpoint="/predict", code="200", model_version=v) == len(served)
    (info,) = m["cxr_model_info"]
    assert info.labels["version"] == v and info.labels["alias"] == "champion"


def test_feedback_then_monitor_judges_each_window(loop, capsys):
    from cxr.cli import main

    with requests.Session() as s:
        for b in loop["inside"][:10]:
            r = s.post(loop["url"] + "/feedback", json={"request_id": b["request_id"], "label": "NORMAL"}, timeout=10)
            assert r.status_code == 200
    from pipelines import ops

    package = loop["root"] / "compiled" / "cxr_training.yaml"  # compiled pipelines are built, not committed
    ops.compile_pipeline(package, ROOT / "params.yaml")
    fake = FakeKfp()
    verdicts = {}
    try:
        for name, start, end in (("in_distribution", loop["t0"], loop["t1"]), ("shifted", loop["t1"], loop["t2"])):
            hours = (end - start) / 3600  # the window is [now - hours, now)
            code = main(["monitor", "--params", str(loop["params"]), "--log", str(loop["root"] / "predictions"),
                         "--out", str(loop["root"] / f"monitor-{name}"), "--now", repr(end),
                         "--set", f"monitor.window_hours={hours}", "--kfp-host", fake.host,
                         "--package", str(package)])
            assert code == 0
            verdicts[name] = json.loads(capsys.readouterr().out)
        runs = list(fake.runs.values())
    finally:
        fake.close()
    inside, shifted = verdicts["in_distribution"], verdicts["shifted"]
    print("monitor, in-distribution window:",
          json.dumps({k: inside[k] for k in ("verdict", "predictions", "feedback")}))
    print("monitor, shifted window:", json.dumps({k: shifted[k] for k in ("verdict", "reasons", "predictions")}))
    assert inside["verdict"] == "ok" and inside["retraining"]["submitted"] is False and inside["feedback"] == 10
    assert inside["predictions"] == len(loop["inside"]) and shifted["predictions"] == len(loop["outside"])
    assert shifted["verdict"] == "retraining_due" and any("OOD rate" in r for r in shifted["reasons"])
    assert len(runs) == 1 and shifted["retraining"]["run_id"] == runs[0]["run_id"]  # one retraining, not two
    summary = json.loads((loop["root"] / "monitor-shifted" / "summary.json").read_text())
    assert summary["model"]["version"] == loop["v1"] and summary["checks"]["image_drift"]["mean"]["p_value"] < 1e-3


def test_hot_swap_under_load_drops_no_request(loop, tiny_shards):
    import mlflow

    from tests.serving.test_loop import hammer

    v2, _ = register(None, loop["run_id"])  # the same run registered again: a new version
    images = [d for *_, d in synthetic.generate(CLASSES, 2, 1, 64, 96, seed=103)]
    stop_event, failures = threading.Event(), []
    seen: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=hammer, args=(loop["url"], images, stop_event, seen[k], failures))
               for k in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        moved = time.time()
        mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", v2)
        deadline = time.time() + 90
        while not all(v and v[-1] == v2 for v in seen) and time.time() < deadline:
            time.sleep(0.2)
        swapped_after = round(time.time() - moved, 1)
        time.sleep(0.5)
    finally:
        stop_event.set()
        for t in threads:
            t.join(60)
    n = sum(map(len, seen))
    m = samples(requests.get(loop["url"] + "/metrics", timeout=10).text)
    print(f"hot swap under load (cxr serve process): {n} requests, {len(failures)} failed, new version answering "
          f"{swapped_after} s after the alias moved")
    assert failures == []
    for versions in seen:
        assert set(versions) == {loop["v1"], v2} and versions == sorted(versions, key=int)  # never back to v1
    assert total(m, "cxr_model_swaps_total", result="ok") == 1
    assert [s.labels["version"] for s in m["cxr_model_info"]] == [v2]
    assert requests.get(loop["url"] + "/health", timeout=10).json()["model"]["version"] == v2
