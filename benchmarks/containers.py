"""Containers: image sizes, build times, the pipeline in containers vs in this environment, serve cold start.

    python -m benchmarks.containers                  # everything below, in one run (about 20 minutes)
    python -m benchmarks.containers --skip-builds    # sizes, pipeline ratio and cold start only

- image sizes: ``docker image inspect`` (uncompressed, what ``docker images`` shows) and the gzip size of
  ``docker save`` (about what a registry stores and a node pulls);
- builds, offline (``cxr image build NAME --offline``): *cold* = nothing of the project in Docker (every image
  and the build cache removed; the base tarball and the wheelhouse still cached, as on a CI machine's second run),
  *warm* = nothing changed, *code change* = one source file touched;
- the tiny demo pipeline (tests/containers' parameters) under kfp.local, SubprocessRunner (tasks logging to an
  ``mlflow server`` on loopback) then DockerRunner (tasks logging to the MLflow container), back to back in this
  run, no cache, as a ratio;
- serve cold start: ``docker run … cxr serve`` on the challenger it registered, to the first 200 of /predict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, check=True, **kw)


def cxr(*args: str) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "cxr", *args)


def timed_build(name: str) -> tuple[float, str]:
    t = time.perf_counter()
    tag = cxr("image", "build", name, "--offline").stdout.strip()
    return time.perf_counter() - t, tag


def sizes(tag: str) -> tuple[float, float]:
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag).stdout)
    saved = subprocess.run(f"docker save {tag} | gzip -1 | wc -c", shell=True, capture_output=True, text=True,
                           check=True)
    return size / 1e9, int(saved.stdout) / 1e9


def builds() -> dict:
    out: dict = {}
    project = [line for line in sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
               if line.startswith(("cxr-mlops:", "cxr-mlops-wheels:"))]
    if project:
        subprocess.run(["docker", "rmi", "-f", *project], capture_output=True)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
    for name in ("mlflow", "cpu"):
        out[f"{name}_cold_s"], _ = timed_build(name)
    for name in ("mlflow", "cpu"):
        out[f"{name}_warm_s"], _ = timed_build(name)
    touched = ROOT / "cxr" / "__init__.py"
    original = touched.read_text()
    try:
        touched.write_text(original + "# benchmark: a code change\n")
        out["cpu_code_change_s"], _ = timed_build("cpu")
    finally:
        touched.write_text(original)
    return out


def pipeline_ratio(cpu: str, mlflow_image: str, work: Path) -> dict:
    from benchmarks.processes import MlflowServer, tiny_pipeline_params

    params = tiny_pipeline_params(work / "params.yaml")
    server = MlflowServer(work / "mlflow-sub").start()  # both runs log to an MLflow server, as on a cluster
    try:
        t = time.perf_counter()
        cxr("pipeline", "run-local", "--params", str(params), "--root", str(work / "sub"), "--no-cache",
            "--tracking-uri", server.uri)
        sub = time.perf_counter() - t
    finally:
        server.stop()
    t = time.perf_counter()
    cxr("pipeline", "run-local", "--runner", "docker", "--image", cpu, "--mlflow-image", mlflow_image,
        "--params", str(params), "--root", str(work / "docker"), "--no-cache")
    dock = time.perf_counter() - t
    return {"subprocess_s": sub, "docker_s": dock, "ratio": dock / sub}


def serve_cold_start(cpu: str, mlflow_image: str, store: Path, film: Path) -> float:
    from pipelines import containers

    with containers.run_network("cxr-run-bench") as net:
        server = containers.MlflowContainer(mlflow_image, net, store).start()
        name = f"{net}-serve"
        try:
            t = time.perf_counter()
            sh("docker", "run", "-d", "--name", name, "--network", net, "--user", containers.run_user(),
               "-e", f"MLFLOW_TRACKING_URI={server.uri}", "-p", "127.0.0.1::8000", cpu, "cxr", "serve", "--host",
               "0.0.0.0", "--port", "8000", "--model", "models:/cxr-classifier@challenger")
            url = "http://127.0.0.1:" + sh("docker", "port", name, "8000/tcp").stdout.strip().split(":")[-1]
            while time.perf_counter() - t < 300:
                try:
                    r = requests.post(url + "/predict", files={"file": ("x.png", film.read_bytes())}, timeout=10)
                    if r.status_code == 200:
                        return time.perf_counter() - t
                except requests.RequestException:
                    pass
                time.sleep(0.25)
            raise SystemExit("the serve container did not answer /predict in 300 s")
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-builds", action="store_true")
    args = ap.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    report: dict = {"loadavg_before": load}
    if not args.skip_builds:
        report["builds"] = builds()
    cpu = cxr("image", "tag", "cpu", "--offline").stdout.strip()
    mlflow_image = cxr("image", "tag", "mlflow", "--offline").stdout.strip()
    report["sizes_gb"] = {name: sizes(tag) for name, tag in (("cpu", cpu), ("mlflow", mlflow_image))}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        report["pipeline"] = pipeline_ratio(cpu, mlflow_image, work)
        film = next(p for p in sorted((work / "docker").rglob("ingest/out/**/*.png")))
        report["serve_cold_start_s"] = serve_cold_start(cpu, mlflow_image, work / "docker" / "mlflow", film)
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(report, indent=2, default=lambda x: round(x, 2) if isinstance(x, float) else x))


if __name__ == "__main__":
    main()
