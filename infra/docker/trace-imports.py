"""Record which library modules the CPU image's roles import, for the image's bytecode (``warm-imports.txt``).

    python infra/docker/trace-imports.py > infra/docker/warm-imports.txt     # about 3 minutes

The image keeps compiled bytecode (``__pycache__``) only for the modules its roles import: a module without it
is compiled in memory each time a process imports it (correct, only slower), and bytecode for modules nothing
imports is dead weight (about half of the 304 MB the lock's install compiles). This runs the roles here, in
this checkout's venv (the same lock), with a ``sitecustomize`` that writes ``sys.modules`` at each process's
exit, and prints the library modules they imported, as the few that import all the others:

- the tiny demo pipeline under kfp.local (every step as a KFP task, logging to an ``mlflow server``);
- ``cxr serve`` on the model it registered: /health, /metrics, /predict on a PNG and on DICOMs (uncompressed,
  JPEG 2000, JPEG-LS, JPEG lossless), so pydicom's decoder plugins load;
- ``cxr --help``, ``cxr pipeline compile``, ``dvc status`` in a repository (the DVC path runs the same step
  commands as the tasks).

The image build imports each listed module once (infra/docker/slim-venv.py); tests/containers checks that a step
in the image finds bytecode for what it imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import requests
from pydicom.uid import JPEGLosslessSV1, JPEGLSLossless

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.processes import MlflowServer, env, free_port, start_cxr_serve, stop, tiny_pipeline_params  # noqa: E402
from tests import imagegen  # noqa: E402

HOOK = textwrap.dedent("""
    import atexit, os, sys, threading, time

    def _write():
        folder = os.environ.get("CXR_IMPORT_TRACE")
        if folder:
            path = os.path.join(folder, f"{os.getpid()}.txt")
            modules = sys.modules.copy()  # one atomic copy: other threads import meanwhile
            with open(path + ".tmp", "w") as f:
                f.write("\\n".join(f"{n}\\t{getattr(m, '__file__', '') or ''}" for n, m in modules.items()))
            os.replace(path + ".tmp", path)

    def _every_second():  # a server stopped by a signal may never run atexit
        while True:
            time.sleep(1)
            try:
                _write()
            except Exception:
                pass

    atexit.register(_write)
    threading.Thread(target=_every_second, daemon=True).start()
""")


def run(cmd: list[str], trace: dict[str, str], cwd: Path = ROOT, timeout: float = 1800) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env(**trace), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def workloads(work: Path, trace: dict[str, str]) -> None:
    cxr = [sys.executable, "-m", "cxr"]
    run([*cxr, "--help"], trace)
    run([*cxr, "pipeline", "compile", "--output", str(work / "cxr_training.yaml"),
         "--monitor-output", str(work / "cxr_monitor.yaml")], trace)
    params = tiny_pipeline_params(work / "params.yaml")
    server = MlflowServer(work / "mlflow").start()  # the tracking server is the mlflow image's role: not traced
    try:
        run([*cxr, "pipeline", "run-local", "--params", str(params), "--root", str(work / "kfp"), "--no-cache",
             "--tracking-uri", server.uri], trace)
        port = free_port()
        serve = start_cxr_serve(["--model", "models:/cxr-classifier@challenger"], port, work / "serve.log",
                                MLFLOW_TRACKING_URI=server.uri, **trace)
        try:
            url = f"http://127.0.0.1:{port}"
            film = sorted((work / "kfp").rglob("ingest/out/**/*.png"))[0]
            pixels = imagegen.deep(64, 72)
            uploads = {"x.png": film.read_bytes(), "x.dcm": imagegen.dicom(pixels),
                       "j2k.dcm": imagegen.dicom_j2k(pixels),
                       # declared, not encoded: the JPEG decoders (pylibjpeg-libjpeg) load and reject it
                       "jls.dcm": imagegen.dicom_with_syntax(pixels, JPEGLSLossless),
                       "jpeg.dcm": imagegen.dicom_with_syntax(pixels, JPEGLosslessSV1)}
            for name, data in uploads.items():
                r = requests.post(url + "/predict", files={"file": (name, data)}, timeout=60)
                if r.status_code != 200 and not (name in ("jls.dcm", "jpeg.dcm") and r.status_code < 500):
                    raise SystemExit(f"/predict {name}: {r.status_code} {r.text[:300]}")
            requests.get(url + "/metrics", timeout=10)
        finally:
            stop(serve)
    finally:
        server.stop()
    repo = work / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], trace, cwd=repo)
    run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], trace, cwd=repo)
    run([str(Path(sys.executable).parent / "dvc"), "status"], trace, cwd=repo)


ROOTS = """
import importlib, json, sys
roots, covered, failed = [], set(), []
for name in sys.stdin.read().split():
    if name in covered:
        continue
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception as err:  # what it imported before failing is not covered: those stay on the list
        failed.append(f"{name} ({type(err).__name__})")
        continue
    roots.append(name)
    covered |= set(sys.modules) - before | {name}
print(json.dumps({"roots": roots, "failed": failed}))
"""


def roots(modules: list[str], trace: dict[str, str]) -> tuple[list[str], list[str]]:
    """The modules that, imported in this order, import all the others (the rest come with them), and those that
    did not import here (outside the process that imported them)."""
    extra = {k: None for k in trace}
    proc = subprocess.run([sys.executable, "-c", ROOTS], input="\n".join(modules), capture_output=True, text=True,
                          env=env(**extra), cwd=ROOT, timeout=1800, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["roots"], result["failed"]


def main() -> None:
    site = str(Path(requests.__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hook, out = work / "hook", work / "trace"
        hook.mkdir()
        out.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        trace = {"PYTHONPATH": str(hook), "CXR_IMPORT_TRACE": str(out)}
        workloads(work, trace)
        modules: dict[str, None] = {}  # in import order (sys.modules keeps it), first process first
        for f in sorted(out.glob("*.txt"), key=lambda f: f.stat().st_mtime):
            for line in f.read_text().splitlines():
                name, _, path = line.partition("\t")
                top = name.split(".")[0]
                if (path.startswith(site) and top not in {"components", "pipelines", "serving", "cxr", "tests"}
                        and name != "__main__" and not name.endswith(".__main__") and "__editable__" not in name):
                    modules[name] = None
        processes = len(list(out.glob("*.txt")))
    names, failed = roots(list(modules), trace)
    print(f"# The library modules the CPU image's roles import ({len(modules)} modules in {processes} processes),\n"
          f"# as the {len(names)} that import them all. Made by: python infra/docker/trace-imports.py\n"
          "# The image build imports each once, so they keep their bytecode (infra/docker/slim-venv.py).")
    if failed:
        print(f"# Left out: {len(failed)} that import only inside the process that imported them: "
              + ", ".join(failed)[:600])
    print("\n".join(names))


if __name__ == "__main__":
    main()
