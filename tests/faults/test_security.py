"""Security: path traversal, safe model loading, MLflow basic auth with credentials from the
environment (never written anywhere), and a secret scan of the repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pandas as pd
import pytest
import requests

from benchmarks.processes import BIN, ROOT, env, free_port, stop, wait_http
from components.core.contract.errors import CxrError
from components.core.model import models
from components.core.registry import registry
from serving import predict
from tests.imagegen import encode, gray
from tests.support import train_params, write_params


def test_csv_paths_cannot_escape_the_root(tiny_model_dir, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(encode(gray()))
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode(gray(seed=9)))
    pd.DataFrame({"path": ["ok.png", "../secret.png", str(secret), "sub/../../secret.png"]}).to_csv(
        root / "list.csv", index=False)
    bundle = registry.load(str(tiny_model_dir))
    summary = predict.run(bundle, root / "list.csv", tmp_path / "preds.csv")
    df = pd.read_csv(tmp_path / "preds.csv").set_index("path")
    assert summary["predicted"] == 1 and pd.isna(df.loc["ok.png", "error"])
    for p in ("../secret.png", str(secret), "sub/../../secret.png"):
        assert df.loc[p, "error"].startswith("outside_root") and pd.isna(df.loc[p, "predicted_label"])


def test_models_load_in_safe_mode_lambda_layers_are_refused(tmp_path):
    inp = keras.Input((8,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)  # arbitrary Python code inside a model file
    keras.Model(inp, out).save(tmp_path / "evil.keras")
    with pytest.raises(CxrError, match="cannot load model"):
        models.load_model(tmp_path / "evil.keras")


@pytest.mark.slow
def test_mlflow_basic_auth_refuses_anonymous_and_accepts_env_credentials(tiny_shards, tmp_path):
    password = "S3cure-Pa55-" + os.urandom(6).hex()  # pragma: allowlist secret
    port = free_port()
    # MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: MLflow's GenAI job runner (8 more processes, seconds of start-up,
    # unused here and unrelated to auth) stays off, as tests.support.MlflowServer keeps it
    server_env = {"MLFLOW_PORT": str(port), "MLFLOW_SERVER_DIR": str(tmp_path / "server"),
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp_path / "server.log"
    proc = subprocess.Popen(["bash", str(ROOT / "mlflow" / "serve.sh"), "--auth"], cwd=tmp_path,
                            env=env(**server_env), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(uri + "/health", proc, log=log)
        anon = requests.get(uri + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10)
        assert anon.status_code == 401
        wrong = requests.get(uri + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                             auth=("admin", "nope"), timeout=10)
        assert wrong.status_code == 401

        # one epoch: every authenticated request costs the server a password hash check (~0.5 s of CPU), and
        # each epoch is one more request (its metrics)
        p = train_params(phases=[{"epochs": 1, "trainable": "all", "lr": 0.003}])
        pf = write_params(tmp_path / "params.yaml", p)
        def train_cmd(out: str, state: str) -> list[str]:
            return [sys.executable, "-m", "cxr", "train", "--params", str(pf), "--shards", str(tiny_shards),
                    "--out", str(tmp_path / out), "--state", str(tmp_path / state)]

        # the anonymous `cxr train` runs alongside the authenticated one (each spends seconds importing first)
        anon_cli = subprocess.Popen(train_cmd("m2", "s2"),
                                    env=env(MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        creds = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        try:
            run = subprocess.run(train_cmd("models", "state"), env=env(**creds), capture_output=True, text=True,
                                 timeout=600, cwd=tmp_path)
            _, anon_err = anon_cli.communicate(timeout=300)
        finally:
            if anon_cli.poll() is None:
                anon_cli.kill()
                anon_cli.wait()
        assert run.returncode == 0, run.stderr[-2000:]
        run_id = json.loads((tmp_path / "models" / "train_summary.json").read_text())["run_id"]
        got = requests.get(uri + "/api/2.0/mlflow/runs/get", params={"run_id": run_id}, auth=("admin", password),
                           timeout=10).json()["run"]
        everything = json.dumps(got) + run.stdout + run.stderr + pf.read_text() + log.read_text()
        everything += "".join(f.read_text(errors="ignore") for f in (tmp_path / "models").glob("*.json"))
        assert password not in everything  # never in params, tags, metrics, logs or outputs
        assert anon_cli.returncode != 0 and "Traceback" not in anon_err
    finally:
        stop(proc)


def test_repository_has_no_secrets(tmp_path):
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    # generated files: the compiled pipelines (from pipelines/pipeline.py, scanned: they only name secret *keys*)
    # and the Trainer CRD schema (from kubeflow-trainer-api by tests/infra/schemas/trainer_schema.py, scanned; its
    # regex patterns look like high-entropy strings)
    generated = ("pipelines/compiled/cxr_training.yaml", "pipelines/compiled/cxr_monitor.yaml",
                 "tests/infra/schemas/kubeflow-trainer-v1alpha1.schema.json")
    files = [f for f in files if (ROOT / f).is_file() and not f.endswith((".lock", ".ipynb")) and f not in generated]
    # The lock files (requirements/*.txt) are ~20,000 lines, three fifths of the scan's time, and mostly the same
    # lines (each variant pins many of the same packages and hashes). detect-secrets judges each line alone (its
    # plugins and filters see the line, the secret and the file's name and type), so every distinct line of them is
    # scanned once, in one .txt file; a lock file with an allowlist pragma (`allowlist nextline` would then cover
    # another line) is scanned as it is. A canary line proves that file is scanned: detect-secrets skips,
    # silently, a file outside its working directory.
    locks = [f for f in files if f.startswith("requirements/") and f.endswith(".txt")
             and "allowlist" not in (ROOT / f).read_text(errors="ignore")]
    distinct = dict.fromkeys(line for f in locks for line in (ROOT / f).read_text(errors="ignore").splitlines())
    lines = [*distinct, "AKIA" + "Q" * 16]  # the canary, last: the shape of an AWS access key id
    (tmp_path / "lock-lines.txt").write_text("\n".join(lines) + "\n")
    scans = [subprocess.Popen([str(BIN / "detect-secrets"), "scan", *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args, cwd in (([f for f in files if f not in locks], ROOT), (["lock-lines.txt"], tmp_path))]
    findings = {}
    for scan in scans:
        out, err = scan.communicate(timeout=600)
        assert scan.returncode == 0, err[-2000:]
        findings.update(json.loads(out)["results"])
    flagged = findings.pop("lock-lines.txt", [])
    canary = [f for f in flagged if f["line_number"] == len(lines) and f["type"] == "AWS Access Key"]
    assert canary, "the lock files' lines were not scanned"
    for f in flagged:
        if f not in canary:  # named by the line and the lock files it is in
            line = lines[f["line_number"] - 1]
            where = [lock for lock in locks if line in (ROOT / lock).read_text(errors="ignore").splitlines()]
            findings.setdefault("requirements/*.txt", []).append({**f, "line": line, "in": where})
    assert findings == {}, json.dumps(findings, indent=1)[:3000]


def test_deployment_secrets_are_templates_only():
    text = (ROOT / "infra" / "k8s" / "secrets" / "secrets.template.yaml").read_text()
    assert "REPLACE_ME" in text
    assert not list(Path(ROOT / "infra").rglob("*.env"))
