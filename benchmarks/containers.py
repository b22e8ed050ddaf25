"""Containers: image sizes, build times, the pipeline in containers vs in this environment, serve cold start.

    python -m benchmarks.containers                  # everything below, in one run (about 20 minutes)
    python -m benchmarks.containers --skip-builds    # sizes, pipeline ratio and cold start only
    python -m benchmarks.containers --sizes IMAGE [IMAGE…]   # per layer and per package, side by side

- image sizes: ``docker image inspect`` (uncompressed, what ``docker images`` shows) and the gzip size of
  ``docker save`` (about what a registry stores and a node pulls); ``--sizes``: each layer (``docker history``)
  and each top-level entry of the venv's site-packages (``du``), plus the bytecode (``__pycache__``) and the base;
- builds, offline (``cxr image build NAME --offline``): *cold* = every step built again (``docker build
  --no-cache``; the base images, the wheelhouse and its image stay, as on a CI machine's second run; nothing is
  removed from the Docker daemon, which others share), *warm* = nothing changed, *code change* = one source file
  touched;
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


def timed_build(name: str, no_cache: bool = False) -> tuple[float, str]:
    from cxr import image

    t = time.perf_counter()
    tag = image.build(name, offline=True, no_cache=no_cache)["image"]
    return time.perf_counter() - t, tag


def sizes(tag: str) -> tuple[float, float]:
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag).stdout)
    saved = subprocess.run(f"docker save {tag} | gzip -1 | wc -c", shell=True, capture_output=True, text=True,
                           check=True)
    return size / 1e9, int(saved.stdout) / 1e9


SITE_DU = ("cd /opt/venv/lib/python3*/site-packages && du -sk --apparent-size * | sort -rn && "
           "echo \"$(find . -name '*.pyc' -printf '%s\\n' | awk '{s+=$1} END {print int(s/1024)}')\t"
           "(bytecode, in the above)\" && echo \"$(du -sk --apparent-size . | cut -f1)\t(site-packages)\"")


def layers(tag: str) -> list[tuple[int, str]]:
    """(bytes, instruction) of each layer with content, base first (``docker history --human=false``)."""
    out = sh("docker", "history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).stdout
    rows = [line.split("\t", 1) for line in reversed(out.splitlines())]
    return [(int(size), " ".join(cmd.replace("/bin/sh -c #(nop) ", "").split())[:70] or "(the base image)")
            for size, cmd in rows if int(size) > 0]


def packages(tag: str) -> dict[str, int]:
    """KiB per top-level entry of the venv's site-packages (apparent size), and the bytecode and total."""
    out = sh("docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", SITE_DU).stdout
    return {name: int(kib) for kib, name in (line.split("\t", 1) for line in out.splitlines() if "\t" in line)}


def size_tables(tags: list[str]) -> str:
    """Markdown: the layers of each image, then the site-packages entries over 2 MB in any, side by side (decimal
    MB, as `docker images` counts)."""
    lines = []
    for tag in tags:
        total = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag).stdout)
        lines += [f"\n`{tag}`: {total / 1e6:.0f} MB\n", "| layer | size |", "|---|---|"]
        lines += [f"| `{cmd}` | {size / 1e6:.1f} MB |" for size, cmd in layers(tag)]
    per = [packages(tag) for tag in tags]
    names = sorted({n for p in per for n, kib in p.items() if kib * 1024 > 2e6},
                   key=lambda n: -max(p.get(n, 0) for p in per))
    lines += ["", "| site-packages entry | " + " | ".join(f"`{t.split(':')[-1]}`" for t in tags) + " |",
              "|---|" + "---:|" * len(tags)]
    lines += [f"| {n} | " + " | ".join(f"{p[n] * 1024 / 1e6:.0f}" if n in p else "—" for p in per) + " |"
              for n in names]
    return "\n".join(lines)


def builds() -> dict:
    out: dict = {}
    for name in ("mlflow", "cpu"):
        out[f"{name}_cold_s"], _ = timed_build(name, no_cache=True)
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
    ap.add_argument("--sizes", nargs="+", metavar="IMAGE", help="only the layer and package tables of these images")
    args = ap.parse_args()
    if args.sizes:
        print(size_tables(args.sizes))
        return
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
