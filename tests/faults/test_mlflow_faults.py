"""MLflow faults with real processes: the tracking server killed during training, racing registers,
and a registered model whose artifact is corrupted or missing."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks.processes import MlflowServer, env, free_port, start_cxr_serve, stop
from components import evaluate, gate, register, train
from components.core.registry import registry
from tests.support import train_params, write_params

pytestmark = pytest.mark.slow

EPOCHS = 8  # the kill comes after epoch 3: the rest is the margin the training is still running in


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tracking server for the module (an `mlflow server` takes seconds to start): the kill test kills it and
    starts it again (same port, same store); the registry tests take it as that left it, started if it is down."""
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow") / "server")
    yield srv
    srv.stop()


def running(srv: MlflowServer) -> MlflowServer:
    if srv.proc is None or srv.proc.poll() is not None:
        srv.start()
    return srv


def test_server_killed_during_training_then_resume(tiny_shards, tmp_path, server):
    srv = running(server)
    p = train_params(phases=[{"epochs": EPOCHS, "trainable": "all", "lr": 0.003}], early_stopping={"patience": 100})
    pf = write_params(tmp_path / "params.yaml", p)
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "cxr", "train", "--params", str(pf), "--shards", str(tiny_shards),
           "--out", str(tmp_path / "models"), "--state", str(state)]
    # two retries of every request, without the backoff sleeps (MLflow's factor is an integer: 1 gives 1 s, 2 s
    # and up to 1 s of jitter each, for every request the dying run still makes): bounded, the error in seconds
    extra = {"MLFLOW_TRACKING_URI": srv.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.Popen(cmd, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                if json.loads((state / "state.json").read_text())["epoch"] >= 3:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        os.killpg(srv.proc.pid, signal.SIGKILL)  # the tracking server dies mid-training
        t = time.time()
        _, err = proc.communicate(timeout=180)
        gave_up_after = time.time() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, err[-2000:]  # service unavailable
    assert "MLflow stopped answering during training" in err and "Traceback" not in err
    assert gave_up_after < 90  # bounded retries, then a clear error
    saved = json.loads((state / "state.json").read_text())["epoch"]
    assert saved >= 3 and not (tmp_path / "models").exists()

    srv.start()  # same port, same store: the run continues where it stopped
    done = subprocess.run(cmd, env=env(**extra), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["resumed_from_epoch"] >= saved
    assert list(pd.read_csv(tmp_path / "models" / "history.csv")["epoch"]) == list(range(1, EPOCHS + 1))
    import mlflow

    client = mlflow.MlflowClient(srv.uri)
    steps = {m.step for m in client.get_metric_history(summary["run_id"], "val_loss")}
    # every epoch is logged: the ones before the kill by the first run (each before its checkpoint), the one
    # whose log failed and those after it by the resumed run
    assert steps == set(range(1, EPOCHS + 1))


@pytest.fixture(scope="module")
def registered(tiny_shards, tmp_path_factory, server):
    tmp = tmp_path_factory.mktemp("reg")
    srv = running(server)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", srv.uri)
        mp.chdir(tmp)
        p = train_params(phases=[{"epochs": 2, "trainable": "all", "lr": 0.003}])  # one phase: one compile
        p = p.model_copy(update={"gate": p.gate.model_copy(update={"on_incomparable": "thresholds_only"})})
        train.run(p, tiny_shards, tmp / "models", tmp / "state")
        evaluate.run(p, tmp / "models", tiny_shards, tmp / "eval", tmp / "metrics.json")
        gate.run(p, tmp / "metrics.json", tmp / "models", tiny_shards, tmp / "gate.json")
        yield p, tmp, srv


def test_racing_registers_leave_only_complete_versions(registered):
    p, tmp, srv = registered
    pf = write_params(tmp / "params.yaml", p)
    procs = [subprocess.Popen([sys.executable, "-m", "cxr", "register", "--params", str(pf), "--gate-report",
                               str(tmp / "gate.json"), "--model-dir", str(tmp / "models"), "--metrics",
                               str(tmp / "metrics.json"), "--out", str(tmp / f"reg{i}")],
                              env=env(MLFLOW_TRACKING_URI=srv.uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    versions = []
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    for i in range(2):
        versions.append(json.loads((tmp / f"reg{i}" / "registration.json").read_text())["version"])
    import mlflow

    client = mlflow.MlflowClient(srv.uri)
    # two registers of one training run racing: one version each, or one reused; never a version without tags
    every = client.search_model_versions(f"name='{p.registry.model_name}'")
    assert {v.version for v in every} == set(versions) and 1 <= len(every) <= 2
    for mv in every:
        assert mv.tags[registry.GATE_TAG] == "true" and mv.tags["gate_report"] and mv.description
        assert mv.tags["gated_against"] == "none" and mv.tags["lineage.seen_digest"]
    assert client.get_model_version_by_alias(p.registry.model_name, "challenger").version in versions
    # once the race is over, registering the same run again reuses its version: no duplicates
    again = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp / "reg-again")
    assert again["reused_version"] is True and again["version"] == min(versions, key=int)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_model_artifact_is_refused_by_predict_and_serve(registered, shared_sample, damage, tmp_path):
    p, tmp, srv = registered
    r = register.run(p, tmp / "gate.json", tmp / "models", tmp / "metrics.json", tmp_path / "registration")
    import mlflow

    mv = mlflow.MlflowClient(srv.uri).get_model_version(p.registry.model_name, r["version"])
    model_id = mv.source.removeprefix("models:/")  # the logged model behind the version: models:/m-…
    (target,) = [f for f in (srv.root / "artifacts").rglob("*.keras") if model_id in f.parts]
    if damage == "corrupt":
        target.write_bytes(b"PK\x03\x04 this is not a keras archive")
    else:
        target.unlink()
    pf = write_params(tmp_path / "params.yaml", p)
    uri = f"models:/{p.registry.model_name}/{r['version']}"
    image = sorted((shared_sample / "NORMAL").iterdir())[0]
    # `cxr predict` and `cxr serve` at once (each spends seconds importing before it reaches the model)
    pred = subprocess.Popen([sys.executable, "-m", "cxr", "predict", "--params", str(pf), "--model", uri, "--input",
                             str(image), "--output", str(tmp_path / "preds.csv")], env=env(MLFLOW_TRACKING_URI=srv.uri),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = free_port()
        with pytest.raises(AssertionError, match="server exited"):
            proc = start_cxr_serve(["--params", str(pf), "--model", uri], port, tmp_path / "serve.log",
                                   MLFLOW_TRACKING_URI=srv.uri)
            stop(proc)
        _, pred_err = pred.communicate(timeout=180)
    finally:
        if pred.poll() is None:
            pred.kill()
            pred.wait()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
    assert pred.returncode != 0 and "Traceback" not in pred_err
    assert ("cannot load model" in pred_err) or ("missing or corrupted" in pred_err)
    assert not (tmp_path / "preds.csv").exists()
