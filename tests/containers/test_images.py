"""The built images as KFP and Kubernetes use them: a fast `cxr --help`, a non-root user, a writable HOME for any
uid, the lock's exact packages (less what the trim uninstalls), no wheelhouse or project sources left behind, one
step run from the README, bytecode for what a step imports, DVC working, and the CPU image within its size budget."""

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from components import catalog
from cxr import image as images
from pipelines import containers

pytestmark = pytest.mark.container
ROOT = Path(__file__).resolve().parents[2]
# the CPU image (every pipeline step and the model server), as `docker images` counts it (decimal GB)
CPU_IMAGE_BUDGET_BYTES = 1.6e9


def trimmed_away() -> set[str]:
    """The distributions infra/docker/slim-venv.py uninstalls from the lock's install."""
    spec = importlib.util.spec_from_file_location("slim_venv", ROOT / "infra" / "docker" / "slim-venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {images._norm(name) for name in module.UNUSED}


def run(img: str, *cmd: str, user: str | None = None, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none"]
    if ":mlflow-" in img:
        args += ["--entrypoint", ""]  # the MLflow image's entrypoint is `mlflow` (a server image, not a task image)
    if user:
        args += ["--user", user]
    for v in volumes:
        args += ["-v", v]
    return subprocess.run([*args, img, *cmd], capture_output=True, text=True, timeout=300)


def test_cxr_help_answers_in_under_2_seconds_inside_the_container(cpu_image):
    timing = run(cpu_image, "python", "-c", "import subprocess, time; t = time.perf_counter(); "
                 "subprocess.run(['cxr', '--help'], check=True, capture_output=True); print(time.perf_counter() - t)")
    assert timing.returncode == 0, timing.stderr
    assert float(timing.stdout) < 2.0


def test_non_root_and_any_uid_has_a_writable_home(cpu_image):
    assert run(cpu_image, "id", "-u").stdout.strip() == "1000"
    probe = run(cpu_image, "sh", "-c", 'touch "$HOME/x" && mkdir -p "$KERAS_HOME" "$MPLCONFIGDIR" && '
                "python -c 'import matplotlib.pyplot' && echo ok", user="4242:4242")
    assert probe.stdout.strip() == "ok", probe.stderr


def test_the_kfp_command_passes_through_the_entrypoint(cpu_image):
    assert run(cpu_image, "sh", "-c", "echo from-kfp").stdout.strip() == "from-kfp"
    assert "usage: cxr spec" in run(cpu_image, "spec", "--help").stdout  # `IMAGE serve …` style args still work


@pytest.mark.parametrize("name,lock", [("cpu", "cpu.txt"), ("mlflow", "server.txt")])
def test_the_image_holds_exactly_the_locked_packages(name, lock, cpu_image, mlflow_image):
    img = {"cpu": cpu_image, "mlflow": mlflow_image}[name]
    frozen = run(img, "python", "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check").stdout
    have = {images._norm(n): v for n, v in (ln.split("==") for ln in frozen.split())}
    text = (ROOT / "requirements" / lock).read_text()
    want = {images._norm(n): v for n, v in re.findall(r"^([A-Za-z0-9][\w.-]*)==([^\s\\;]+)", text, re.M)}
    gone = trimmed_away() & set(want)  # uninstalled where the lock has them (the trim runs in both images)
    assert not gone & set(have)
    assert {k: have.get(k) for k in want if k not in gone and have.get(k) != want[k]} == {}
    # beyond the lock: the project, and what `python -m venv` bootstraps (pip; setuptools where no lock pins it)
    assert set(have) - set(want) <= {"pip", "setuptools", "cxr-mlops"}


def test_the_runtime_carries_no_wheelhouse_or_sources(cpu_image, mlflow_image):
    for img in (cpu_image, mlflow_image):
        probe = run(img, "sh", "-c", "ls /tmp/wheels /wheels /src /dist 2>/dev/null | wc -l")
        assert probe.stdout.strip() == "0", img


def test_the_cpu_image_fits_its_size_budget(cpu_image):
    size = int(containers.docker("image", "inspect", "-f", "{{.Size}}", cpu_image).stdout)
    print(f"{cpu_image}: {size / 1e9:.3f} GB (budget {CPU_IMAGE_BUDGET_BYTES / 1e9:.1f} GB)")
    assert size <= CPU_IMAGE_BUDGET_BYTES, (
        f"{cpu_image} is {size / 1e9:.3f} GB, over its {CPU_IMAGE_BUDGET_BYTES / 1e9:.1f} GB budget: see what grew "
        "with `docker history` and BENCHMARKS.md § 16 (the sizes per layer and package, and the commands)")


# imports every step's module, the server, and the libraries the steps import when they run (inside their
# functions), runs `cxr ingest`, then lists the modules it imported from the venv that had no bytecode to load
# (each is compiled in memory at every start). KFP's executor_main runs as __main__, which Python never caches.
COVERAGE = """
import importlib, json, os, runpy, sys
for name in sys.argv[1].split():
    importlib.import_module(name)
sys.argv = ["cxr", *sys.argv[2:]]
try:
    runpy.run_module("cxr", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
mods = [m for m in list(sys.modules.values()) if (getattr(m, "__cached__", None) or "").startswith("/opt/venv/")]
missing = sorted(m.__name__ for m in mods if not os.path.exists(m.__cached__))
print(json.dumps({"imported": len(mods), "missing": missing}))
"""
STEP_MODULES = " ".join([*(f"components.{m}" for m in catalog.STEP_MODULES),  # every step, from the one list
                         "serving.app", "pipelines.components", "kfp.dsl.executor", "tensorflow", "keras", "mlflow",
                         "mlflow.keras", "great_expectations", "pydicom"])


def test_a_step_finds_bytecode_for_what_it_imports(cpu_image, tmp_path):
    """The venv keeps bytecode only for what the roles import (infra/docker/warm-imports.txt): a step that
    imported modules without it would compile them at every start (seconds per KFP task)."""
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    # 3 patients per class: params are checked whole, and so few cannot keep params.yaml's 0.85 in evaluate
    proc = run(cpu_image, "python", "-c", COVERAGE, STEP_MODULES, "ingest", "--set", "data.demo.patients_per_class=3",
               "--set", "evaluate.target_sensitivity={COVID19: 0.5, PNEUMONIA: 0.5}",
               "--out", "/work/raw", "--reports", "/work/reports", volumes=(f"{work}:/work",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{report['imported']} modules imported, {len(report['missing'])} without bytecode: {report['missing'][:20]}")
    assert report["imported"] > 3000  # TensorFlow, Keras, MLflow, GX, KFP: the trace covers them
    assert len(report["missing"]) <= 0.01 * report["imported"], report["missing"][:50]


def test_dvc_tracks_data_in_the_image(cpu_image):
    """DVC (and the git it drives) work in the runtime image: init, add, status."""
    script = ("set -e; cd /tmp && git init -q repo && cd repo && dvc init -q && echo 1,2 > data.csv "
              "&& dvc add -q data.csv && git add data.csv.dvc .gitignore && dvc status")
    proc = run(cpu_image, "sh", "-c", script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout.lower() or "nothing to commit" in proc.stdout.lower(), proc.stdout


def test_one_step_runs_in_the_image_as_the_readme_says(cpu_image, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    user = f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000"
    work.chmod(0o777)
    # 3 patients per class: params are checked whole, and so few cannot keep params.yaml's 0.85 in evaluate
    proc = run(cpu_image, "cxr", "ingest", "--set", "data.demo.patients_per_class=3",
               "--set", "evaluate.target_sensitivity={COVID19: 0.5, PNEUMONIA: 0.5}", "--out", "/work/raw",
               "--reports", "/work/reports", user=user, volumes=(f"{work}:/work",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "raw" / "manifest.csv").is_file() and '"images"' in proc.stdout


def test_tags_are_the_content_tags_of_this_checkout(cpu_image, mlflow_image):
    assert cpu_image in (images.plan("cpu", offline=True).tag, images.plan("cpu").tag)
    assert mlflow_image in (images.plan("mlflow", offline=True).tag, images.plan("mlflow").tag)
