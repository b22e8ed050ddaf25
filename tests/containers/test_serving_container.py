"""`cxr serve` in the CPU image on the model the container pipeline registered: /health, /predict (PNG and DICOM:
uncompressed, JPEG baseline, JPEG 2000) and /metrics answer, the image's HEALTHCHECK passes, and SIGTERM lets the
requests in flight finish (none fails); then the cxr-monitor pipeline, in a container too, reads the prediction log
the server wrote."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from pipelines import containers
from tests import imagegen
from tests.containers.conftest import cxr

pytestmark = pytest.mark.container


def dicoms() -> dict[str, bytes]:
    """DICOMs the image must read: its decoders (pydicom, Pillow, pylibjpeg-openjpeg) load and decode them."""

    import numpy as np
    film = imagegen.deep(64, 72)
    return {"plain.dcm": imagegen.dicom(film), "jpeg.dcm": imagegen.dicom_jpeg((film // 16).astype(np.uint8)),
            "j2k.dcm": imagegen.dicom_j2k(film)}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


class Server:
    """``docker run IMAGE cxr serve`` on the registry of ``store`` (its MLflow server on a network of its own)."""

    def __init__(self, image: str, mlflow_image: str, store: Path, *docker_args: str) -> None:
        self.image, self.mlflow_image, self.store, self.docker_args = image, mlflow_image, store, docker_args
        self.name = ""

    def __enter__(self) -> Server:
        self._net = containers.run_network("cxr-run-serve")
        network = self._net.__enter__()
        self.mlflow = containers.MlflowContainer(self.mlflow_image, network, self.store).start()
        self.name = f"{network}-serve"
        self.started = time.time()
        docker("run", "-d", "--name", self.name, "--network", network, "--user", containers.run_user(),
               "-e", f"MLFLOW_TRACKING_URI={self.mlflow.uri}", "-p", "127.0.0.1::8000", *self.docker_args,
               self.image, "cxr", "serve", "--host", "0.0.0.0", "--port", "8000",
               "--model", "models:/cxr-classifier@challenger")
        self.url = "http://127.0.0.1:" + docker("port", self.name, "8000/tcp").split(":")[-1]
        return self

    def __exit__(self, *exc) -> None:
        docker("rm", "-f", self.name)
        self.mlflow.stop()
        self._net.__exit__(None, None, None)

    def logs(self) -> str:
        proc = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return proc.stdout + proc.stderr

    def predict(self, image: bytes, timeout: float = 60, **params) -> requests.Response:
        return requests.post(self.url + "/predict", files={"file": ("x.png", image, "image/png")}, params=params,
                             timeout=timeout)

    def first_predict(self, image: bytes, timeout: float = 240) -> float:
        """Seconds from `docker run` to the first 200 of /predict (the cold start)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(requests.RequestException):
                if self.predict(image, timeout=10).status_code == 200:
                    return time.time() - self.started
            if docker("inspect", "-f", "{{.State.Running}}", self.name) != "true":
                break
            time.sleep(0.25)
        raise AssertionError(f"no /predict answer from {self.name}:\n{self.logs()[-3000:]}")


@pytest.fixture(scope="module")
def served(docker_pipeline) -> dict:
    run_dir = Path(docker_pipeline["result"]["run_dir"])
    films = [p for p in sorted((run_dir / "ingest" / "out").rglob("*")) if p.suffix in (".png", ".jpg", ".jpeg")]
    log = containers.writable_by_containers(docker_pipeline["root"] / "prediction-log")
    return {"image": docker_pipeline["image"], "mlflow_image": docker_pipeline["mlflow_image"],
            "store": docker_pipeline["root"] / "kfp" / "mlflow", "film": films[0].read_bytes(), "films": films,
            "log": log, "root": docker_pipeline["root"]}


def test_the_server_answers_and_its_healthcheck_passes(served, record_property):
    with Server(served["image"], served["mlflow_image"], served["store"], "-e",
                "CXR_PREDICTION_LOG=/predictions",  # pragma: allowlist secret
                "-v", f"{served['log']}:/predictions") as srv:
        cold = srv.first_predict(served["film"])
        record_property("serve_cold_start_seconds", round(cold, 1))
        print(f"serve container cold start to the first /predict: {cold:.1f} s")
        body = srv.predict(served["film"]).json()
        assert body["model"]["version"] and set(body["probabilities"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
        for film in served["films"][:20]:
            assert srv.predict(film.read_bytes()).status_code == 200
        for name, data in dicoms().items():
            r = requests.post(srv.url + "/predict", files={"file": (name, data, "application/dicom")}, timeout=60)
            assert r.status_code == 200, (name, r.text[:300])
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200
        metrics = requests.get(srv.url + "/metrics", timeout=10).text
        assert "cxr_model_info" in metrics and 'endpoint="/predict"' in metrics
        deadline = time.time() + 90
        while (status := docker("inspect", "-f", "{{.State.Health.Status}}", srv.name)) == "starting" \
                and time.time() < deadline:
            time.sleep(1)
        assert status == "healthy", docker("inspect", "-f", "{{json .State.Health}}", srv.name)


def test_sigterm_drains_the_requests_in_flight(served):
    # a third of a core: the requests queue up, so SIGTERM arrives while they are being served
    with Server(served["image"], served["mlflow_image"], served["store"], "--cpus", "0.3") as srv:
        srv.first_predict(served["film"])
        results: list[tuple[int, float]] = []

        def call() -> None:
            try:
                r = srv.predict(served["film"], timeout=120, gradcam="true")
                results.append((r.status_code, time.time()))
            except requests.RequestException as err:
                results.append((repr(err), time.time()))

        threads = [threading.Thread(target=call) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # every request is sent; few if any answered
        sigterm_at = time.time()
        docker("kill", "--signal", "TERM", srv.name)
        for t in threads:
            t.join()
        exit_code = docker("wait", srv.name)
        assert [code for code, _ in results] == [200] * 12, results
        assert sum(at > sigterm_at for _, at in results) >= 3, "the requests should still be in flight at SIGTERM"
        assert exit_code == "0"
        with pytest.raises(requests.RequestException):
            srv.predict(served["film"], timeout=5)  # and it is gone


def test_the_monitor_pipeline_runs_in_a_container_on_the_servers_log(served):
    assert list(served["log"].glob("*.jsonl")), "the server wrote no prediction log"
    proc = cxr("pipeline", "run-local", "--monitor", "--log", str(served["log"]), "--model",
               "models:/cxr-classifier@challenger", "--runner", "docker", "--image", served["image"],
               "--mlflow-image", served["mlflow_image"], "--params", str(served["root"] / "params.yaml"),
               "--root", str(served["root"] / "kfp"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1:])
    summary = json.loads((Path(result["run_dir"]) / "cxr-monitor" / "summary").read_text())
    assert summary["predictions"] >= 20 and summary["verdict"]
    assert (Path(result["run_dir"]) / "cxr-monitor" / "report").read_text().lstrip().startswith("<")
