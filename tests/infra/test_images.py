"""The image builds without building anything (fast, no Docker daemon needed): KFP-compatible Dockerfiles,
content tags, the wheelhouse check against the lock, the pass-through entrypoint, and `cxr image build`'s errors.
The builds themselves, and the containers they make, are tested in tests/containers (marker `container`)."""

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import env
from components.core.contract.errors import DataError
from cxr import image

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "infra" / "docker"


def stages(dockerfile: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    lines = [ln for ln in dockerfile.read_text().replace("\\\n", " ").splitlines() if ln and not ln.startswith("#")]
    out: list[list[str]] = [[]]
    for ln in lines:
        if ln.startswith("FROM "):
            out.append([])
        out[-1].append(ln)
    return out[1:]


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_task_images_do_not_capture_kfps_command(name):
    """KFP (and kfp.local's DockerRunner) passes `sh -c …` as the command: the entrypoint must run it as given."""
    runtime = stages(ROOT / image.IMAGES[name].dockerfile)[-1]
    (entrypoint,) = [ln for ln in runtime if ln.startswith("ENTRYPOINT")]
    assert entrypoint == 'ENTRYPOINT ["cxr-entrypoint"]'
    assert "USER 1000:1000" in runtime and any("chmod 1777 /home/cxr" in ln for ln in runtime)


@pytest.mark.parametrize("name", ["cpu", "mlflow", "gpu"])
def test_builds_are_multi_stage_with_a_base_arg_and_no_wheelhouse_in_the_runtime(name):
    text = (ROOT / image.IMAGES[name].dockerfile).read_text()
    default = {"gpu": "tensorflow/tensorflow:2.21.0-gpu"}.get(name, "python:3.11-slim-bookworm")
    assert f"ARG BASE_IMAGE={default}" in text and "ARG WHEELS=no-wheelhouse" in text
    # the venv is built on BUILD_BASE (binutils for strip, offline), the runtime is BASE_IMAGE (without them)
    assert "ARG BUILD_BASE=${BASE_IMAGE}" in text
    (deps,) = [s for s in stages(ROOT / image.IMAGES[name].dockerfile) if s[0].endswith(" AS deps")]
    assert deps[0] == "FROM ${BUILD_BASE} AS deps"
    runtime = stages(ROOT / image.IMAGES[name].dockerfile)[-1]
    assert runtime[0] == "FROM ${BASE_IMAGE}"
    assert not [ln for ln in runtime if "wheels" in ln.lower()], "the runtime stage must not see the wheelhouse"
    (install,) = [ln for s in stages(ROOT / image.IMAGES[name].dockerfile) for ln in s if "--require-hashes" in ln]
    assert "--no-index --find-links /tmp/wheels" in install


@pytest.mark.parametrize("name", ["cpu", "mlflow", "gpu"])
def test_the_code_hash_covers_every_file_the_build_copies(name):
    spec = image.IMAGES[name]
    text = (ROOT / spec.dockerfile).read_text()
    sources = set()
    for m in re.finditer(r"^COPY (?!--from)(.+)$", text, re.M):
        *srcs, _dest = m.group(1).split()
        sources |= {s for s in srcs if "${" not in s and not s.startswith("requirements/")}
    covered = set(spec.files)
    assert {s for s in sources if not any(s == c or s.startswith(c + "/") for c in covered)} == set()


def test_tags_follow_the_content(tmp_path):
    """Same inputs, same tag; a code change moves only the code part; a lock change moves the lock part."""
    for rel in (*image.IMAGES["mlflow"].files, image.IMAGES["mlflow"].dockerfile, "requirements/server.txt",
                "infra/docker/make-base.sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    first = image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert first == image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert re.fullmatch(r"cxr-mlops:mlflow-[0-9a-f]{12}-[0-9a-f]{12}", first)
    lock_part = hashlib.sha256((ROOT / "requirements/server.txt").read_bytes()).hexdigest()[:12]
    assert first.split("-")[2] == lock_part
    (tmp_path / image.IMAGES["mlflow"].dockerfile).write_text(
        (ROOT / image.IMAGES["mlflow"].dockerfile).read_text() + "\n# a change\n")
    second = image.plan("mlflow", base="some-base:1", root=tmp_path).tag
    assert second.split("-")[2] == lock_part and second != first
    assert image.plan("mlflow", base="other-base:1", root=tmp_path).tag != second
    with (tmp_path / "requirements/server.txt").open("a") as f:
        f.write("\n# relocked\n")
    assert image.plan("mlflow", base="some-base:1", root=tmp_path).tag.split("-")[2] != lock_part


def fake_lock(tmp_path) -> tuple[Path, Path]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    files = {"alpha-1.0-py3-none-any.whl": b"alpha wheel", "beta_pkg-2.0.tar.gz": b"beta sdist"}
    for name, data in files.items():
        (wheels / name).write_bytes(data)
    digest = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    lock = tmp_path / "lock.txt"
    lock.write_text(f"alpha==1.0 \\\n    --hash=sha256:{digest['alpha-1.0-py3-none-any.whl']}\n"
                    f"beta-pkg==2.0 \\\n    --hash=sha256:{'0' * 64} \\\n"
                    f"    --hash=sha256:{digest['beta_pkg-2.0.tar.gz']}\n    # via something\n")
    return wheels, lock


def test_the_wheelhouse_is_checked_against_the_lock(tmp_path):
    wheels, lock = fake_lock(tmp_path)
    assert image.verify_wheelhouse(wheels, lock) == 2
    (wheels / "alpha-1.0-py3-none-any.whl").write_bytes(b"a substituted wheel")
    with pytest.raises(DataError, match=r"alpha-1\.0-py3-none-any\.whl: sha256 [0-9a-f]{64} is not one of the hashes"):
        image.verify_wheelhouse(wheels, lock)
    (wheels / "alpha-1.0-py3-none-any.whl").unlink()
    with pytest.raises(DataError, match="no file for alpha"):
        image.verify_wheelhouse(wheels, lock)


def test_the_real_locks_parse_with_a_hash_for_every_package():
    for lock in ("cpu.txt", "server.txt", "gpu.txt"):
        hashes = image.lock_hashes(ROOT / "requirements" / lock)
        assert len(hashes) > 50 and all(hashes.values()), lock


def test_the_entrypoint_passes_commands_through_and_maps_subcommands_to_cxr():
    script = DOCKER / "entrypoint.sh"
    out = subprocess.run(["sh", str(script), "sh", "-c", "echo kfp-command"], capture_output=True, text=True)
    assert out.stdout.strip() == "kfp-command"
    out = subprocess.run(["sh", str(script), "spec", "--help"], capture_output=True, text=True, env=env())
    assert out.returncode == 0 and "usage: cxr spec" in out.stdout


def cxr(*args: str, **extra: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cxr", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env(**extra), timeout=120)


def test_build_without_docker_exits_5_naming_what_to_install(tmp_path):
    # a PATH with python but no docker
    (tmp_path / "bin").mkdir()
    os.symlink(sys.executable, tmp_path / "bin" / "python")
    proc = subprocess.run([sys.executable, "-m", "cxr", "image", "build", "cpu"], capture_output=True, text=True,
                          cwd=ROOT, env={**env(), "PATH": str(tmp_path / "bin")}, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "docker not found" in proc.stderr and "dockerd" in proc.stderr


def test_build_with_the_daemon_down_exits_5_naming_what_to_start(tmp_path):
    if not (Path("/usr/bin/docker").exists() or Path("/usr/local/bin/docker").exists()):
        pytest.skip("no docker command on this machine (the test above covers that)")
    proc = cxr("image", "build", "mlflow", DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock")
    assert proc.returncode == 5, proc.stderr
    assert "Docker daemon is not running" in proc.stderr and "systemctl start docker" in proc.stderr


def test_run_local_with_a_missing_image_names_the_build_command(tmp_path):
    if not (Path("/usr/bin/docker").exists() or Path("/usr/local/bin/docker").exists()):
        pytest.skip("no docker command on this machine")
    proc = cxr("pipeline", "run-local", "--runner", "docker", "--image", "cxr-mlops:no-such-tag",
               "--root", str(tmp_path))
    if "Docker daemon is not running" in proc.stderr:
        pytest.skip("no Docker daemon here: the missing-image error needs one to ask")
    assert proc.returncode == 4, proc.stderr
    assert "cxr-mlops:no-such-tag is not in the local Docker" in proc.stderr and "cxr image build cpu" in proc.stderr


def test_offline_builds_run_their_stages_on_the_base_with_binutils():
    offline = image.plan("cpu", offline=True)
    assert offline.build_base == image.base_image_name()
    assert offline.base == image.base_image_name(runtime=True) == offline.build_base + "-runtime"
    assert image.plan("cpu", offline=True, base="my/base:1").build_base == "my/base:1"  # --base: one image for both
    online = image.plan("cpu")
    assert online.base == online.build_base == image.PUBLIC_BASE


# ---------------------------------------------------------------- infra/docker/slim-venv.py
def slim_module():
    spec = importlib.util.spec_from_file_location("slim_venv", DOCKER / "slim-venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A real venv (no pip) holding two small packages with what the image's trim looks for."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    files = {
        "pkg_a/__init__.py": "from . import test  # a runtime module that happens to be called test\n",
        "pkg_a/test/__init__.py": "",
        "pkg_a/tests/__init__.py": "",
        "pkg_a/tests/test_a.py": "import pkg_a\n",
        "pkg_a/warm.py": "import pkg_a.dep\n",
        "pkg_a/dep.py": "X = 1\n",
        "pkg_a/cold.py": "Y = 2\n",
        "pkg_a/core.pyi": "X: int\n",
        "pkg_a/speedups.c": "int x;\n",
        "pkg_a/include/a.h": "int x;\n",
        "cffi/_cffi_include.h": "int x;\n",  # cffi compiles at run time: its headers stay
        "mlflow/server/js/build/index.html": "<html></html>\n",
        "pyarrow/libarrow_flight.so.2500": "not an ELF file\n",
        "botocore/data/endpoints.json": "{}\n",
        "botocore/data/s3/2006-03-01/service-2.json.gz": "s3\n",
        "botocore/data/ec2/2016-11-15/service-2.json.gz": "ec2\n",
    }
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    blob = os.urandom(70_000)
    for rel in ("pkg_a/data.bin", "pkg_b/data.bin"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(blob)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(site)], check=True)
    return venv, site


def test_slim_venv_removes_only_what_nothing_imports_and_keeps_bytecode_for_what_the_roles_import(tmp_path):
    venv, site = small_venv(tmp_path)
    warm = tmp_path / "warm-imports.txt"
    warm.write_text("# a comment\npkg_a.warm\n")
    proc = subprocess.run([sys.executable, str(DOCKER / "slim-venv.py"), str(venv), "--warm-imports", str(warm)],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"slim-venv: bytecode +- +[0-9.]+ MB", proc.stdout) and "site-packages" in proc.stdout
    gone = ["pkg_a/tests", "pkg_a/core.pyi", "pkg_a/speedups.c", "pkg_a/include", "mlflow/server/js",
            "pyarrow/libarrow_flight.so.2500", "botocore/data/ec2"]
    assert [rel for rel in gone if (site / rel).exists()] == []
    kept = ["pkg_a/test/__init__.py", "cffi/_cffi_include.h", "botocore/data/endpoints.json",
            "botocore/data/s3/2006-03-01/service-2.json.gz"]
    assert [rel for rel in kept if not (site / rel).is_file()] == []
    assert (site / "pkg_a/data.bin").stat().st_ino == (site / "pkg_b/data.bin").stat().st_ino  # one file, linked
    cached = {p.name.split(".")[0] for p in (site / "pkg_a/__pycache__").glob("*.pyc")}
    assert {"__init__", "warm", "dep"} <= cached and "cold" not in cached
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import pkg_a.warm, pkg_a.cold; print('ok')"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "ok", check.stderr  # a module without bytecode still imports


def test_slim_venv_keeps_a_named_part_and_every_modules_bytecode_without_a_list(tmp_path):
    venv, site = small_venv(tmp_path)
    proc = subprocess.run([sys.executable, str(DOCKER / "slim-venv.py"), str(venv), "--keep", "mlflow/server/js"],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 0, proc.stderr
    assert (site / "mlflow/server/js/build/index.html").is_file()
    assert {p.name.split(".")[0] for p in (site / "pkg_a/__pycache__").glob("*.pyc")} >= {"warm", "dep", "cold"}
    bad = subprocess.run([sys.executable, str(DOCKER / "slim-venv.py"), str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "not a venv" in bad.stderr


def test_slim_venv_warns_on_a_stale_module_and_stops_on_a_broken_one(tmp_path):
    venv, site = small_venv(tmp_path)
    (site / "pkg_a/broken.py").write_text("import no_such_dependency\n")
    warm = tmp_path / "warm-imports.txt"
    warm.write_text("pkg_a.warm\npkg_a.gone\nno_such_package.sub\n")
    cmd = [sys.executable, str(DOCKER / "slim-venv.py"), str(venv), "--warm-imports", str(warm)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env())
    assert proc.returncode == 0, proc.stderr
    assert "2 of 3 modules of warm-imports.txt no longer exist" in proc.stdout and "trace-imports.py" in proc.stdout
    warm.write_text("pkg_a.warm\npkg_a.broken\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env())
    assert proc.returncode != 0
    assert "1 modules of" in proc.stderr and "pkg_a.broken: ModuleNotFoundError" in proc.stderr
    assert "no_such_dependency" in proc.stderr


@pytest.mark.skipif(not (shutil.which("strip") and shutil.which("readelf")), reason="no binutils here")
def test_slim_venv_strips_a_shared_library_that_still_loads(tmp_path):
    venv, site = small_venv(tmp_path)
    import scipy._lib._fpumode as donor  # a small extension module built with its symbol table

    target = site / "pkg_c" / Path(donor.__file__).name
    target.parent.mkdir()
    shutil.copy2(donor.__file__, target)
    before = target.stat().st_size
    proc = subprocess.run([sys.executable, str(DOCKER / "slim-venv.py"), str(venv)], capture_output=True, text=True,
                          env=env())
    assert proc.returncode == 0, proc.stderr
    assert target.stat().st_size < before
    assert b".symtab" not in subprocess.run(["readelf", "-S", "-W", str(target)], capture_output=True).stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import pkg_c._fpumode; print('ok')"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "ok", check.stderr


def test_the_warm_imports_are_modules_of_the_cpu_lock():
    """Every module infra/docker/warm-imports.txt names belongs to a package of requirements/cpu.txt (a stale list
    after a lock change names modules the image no longer has; regenerate it with trace-imports.py)."""
    lines = (DOCKER / "warm-imports.txt").read_text().splitlines()
    assert "python infra/docker/trace-imports.py" in "\n".join(ln for ln in lines if ln.startswith("#"))
    modules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(modules) > 50
    owners = importlib.metadata.packages_distributions()
    locked = set(image.lock_hashes(ROOT / "requirements" / "cpu.txt"))
    orphans = {m for m in modules if not {image._norm(d) for d in owners.get(m.split(".")[0], [])} & locked}
    assert orphans == set()
    assert not {m.split(".")[0] for m in modules} & {"components", "pipelines", "serving", "cxr", "tests"}


def test_nothing_the_trim_uninstalls_is_imported_by_the_project():
    unused = slim_module().UNUSED
    assert set(unused) <= set(image.lock_hashes(ROOT / "requirements" / "cpu.txt"))
    owners = importlib.metadata.packages_distributions()
    tops = {top for top, dists in owners.items() if {image._norm(d) for d in dists} & set(unused)}
    sources = [p for d in ("components", "pipelines", "serving", "cxr") for p in (ROOT / d).rglob("*.py")]
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(map(re.escape, tops))})\b", re.M)
    assert tops and [str(p) for p in sources if pattern.search(p.read_text())] == []
