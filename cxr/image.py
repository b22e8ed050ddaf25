"""``cxr image build NAME [--offline] [--base IMAGE]``: the project's images, tagged by their content.

NAME is ``cpu`` (the CLI, KFP tasks, the model server), ``mlflow`` (the tracking server) or ``gpu``.
The tag is ``cxr-mlops:<NAME>-<lock hash>-<code hash>``: the first 12 hex digits of the sha256 of the lock file,
then of everything else the build reads (the Dockerfile, the files it copies, the base image's name and the
build args), so the same inputs give the same tag and any change gives a new one.

Dependencies never come from the network inside the build: ``pip download --require-hashes`` fills a wheelhouse
on this machine, in ``${CXR_CACHE:-~/.cache/cxr-mlops}/wheels/<lock>-<lock hash>/`` (reused while the lock is
unchanged; an air-gapped machine gets that folder copied in), every file is checked against the lock's hashes,
and an image holding it (``cxr-mlops-wheels:<lock>-<lock hash>``) feeds the build's ``WHEELS`` stage, where pip
installs with ``--no-index --require-hashes``. ``--offline`` also takes the base from Debian packages
(``infra/docker/make-base.sh``, cached the same way: its image for the build stages, its runtime flavour without
binutils and perl for the runtime) instead of a public registry and builds with ``--network none``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.core.contract.errors import CxrError, DataError, ServiceError
from pipelines import containers

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
REPO = "cxr-mlops"
PUBLIC_BASE = "python:3.11-slim-bookworm"
CODE = ("pyproject.toml", "README.md", "components", "pipelines", "serving", "cxr", "params.yaml", "dvc.yaml",
        "data/label_overrides.csv")
DOCKER = ("infra/docker/no-wheelhouse.txt",)


@dataclass(frozen=True)
class Spec:
    """What one image is built from."""

    dockerfile: str
    lock: str  # the lock the offline (wheelhouse) build installs
    files: tuple[str, ...]  # what the Dockerfile copies, besides the lock (the code hash covers them)
    online_base: str = PUBLIC_BASE
    online_lock: str = ""  # the lock of the online build, when it differs (the GPU image on TensorFlow's base)
    online_args: tuple[tuple[str, str], ...] = ()
    offline_args: tuple[tuple[str, str], ...] = ()


IMAGES = {
    "cpu": Spec("infra/docker/Dockerfile", "requirements/cpu.txt",
                (*DOCKER, "infra/docker/entrypoint.sh", "infra/docker/slim-venv.py", "infra/docker/warm-imports.txt",
                 *CODE)),
    "mlflow": Spec("infra/docker/Dockerfile.mlflow", "requirements/server.txt", (*DOCKER, "infra/docker/slim-venv.py")),
    # offline: the Debian-package base plus tensorflow[and-cuda] (CUDA as pip wheels) from requirements/gpu.txt;
    # online: TensorFlow's GPU image, which has TensorFlow and CUDA, plus requirements/gpu-image.txt
    "gpu": Spec("infra/docker/Dockerfile.gpu", "requirements/gpu.txt",
                (*DOCKER, "infra/docker/entrypoint.sh", "infra/docker/slim-venv.sh", *CODE),
                online_base="tensorflow/tensorflow:2.21.0-gpu", online_lock="requirements/gpu-image.txt",
                offline_args=(("LOCK", "gpu.txt"), ("BAKE_WEIGHTS", "0"))),
}


def cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE") or Path.home() / ".cache" / "cxr-mlops")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lock_hash(lock: Path) -> str:
    return _sha(lock)[:16]


def code_hash(files: tuple[str, ...], extra: str, root: Path = ROOT) -> str:
    """sha256 over the files (folders walked in order; caches and bytecode skipped) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for rel in files:
        base = root / rel
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        if not paths:
            raise CxrError(f"{base}: missing; run `cxr image build` from a clone of the repository")
        for p in paths:
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + _sha(p).encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Plan:
    """One build: its tag, base, lock and build args."""

    name: str
    tag: str
    base: str
    build_base: str  # what the build stages run on (offline: make-base.sh's image, which has binutils)
    lock: Path
    dockerfile: Path
    args: tuple[tuple[str, str], ...]
    offline: bool


def plan(name: str, offline: bool = False, base: str | None = None, root: Path = ROOT) -> Plan:
    """The tag and inputs of image ``name``, without building anything (``cxr image tag``)."""
    if name not in IMAGES:
        raise CxrError(f"image {name!r}: expected one of {', '.join(IMAGES)}")
    spec = IMAGES[name]
    lock = root / (spec.lock if offline or not spec.online_lock else spec.online_lock)
    build_base = base or (base_image_name(root) if offline else spec.online_base)
    base = base or (base_image_name(root, runtime=True) if offline else spec.online_base)
    args = spec.offline_args if offline else spec.online_args
    extra = f"{spec.dockerfile}\0{base}\0{build_base}\0{sorted(args)}"
    tag = f"{REPO}:{name}-{lock_hash(lock)[:12]}-{code_hash((spec.dockerfile, *spec.files), extra, root)}"
    return Plan(name, tag, base, build_base, lock, root / spec.dockerfile, args, offline)


def base_image_name(root: Path = ROOT, runtime: bool = False) -> str:
    """The image infra/docker/make-base.sh makes (keyed by the Debian suite, package list and recipe); ``runtime``:
    its flavour without binutils and perl, which the images run on."""
    flag = "--print-runtime-name" if runtime else "--print-name"
    proc = subprocess.run(["bash", str(root / "infra/docker/make-base.sh"), flag], capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip()


# ---------------------------------------------------------------- the wheelhouse
def lock_hashes(lock: Path) -> dict[str, set[str]]:
    """Normalised package name -> the sha256 hashes the lock allows for it."""
    text = lock.read_text().replace("\\\n", " ")
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[=<>\[ ;]", line, maxsplit=1)[0]
        out[_norm(name)] = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(filename: str) -> str:
    """The distribution name of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        return _norm(filename.split("-")[0])
    stem = re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", filename)
    return _norm(stem.rsplit("-", 1)[0])


def verify_wheelhouse(folder: Path, lock: Path) -> int:
    """Every file must carry a hash the lock allows for its package, and every locked package needs a file."""
    allowed = lock_hashes(lock)
    seen: set[str] = set()
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for path in files:
        name = _dist_name(path.name)
        if name not in allowed:
            raise DataError(f"{path}: {name} is not in {lock.name}: the wheelhouse is not this lock's; delete "
                            f"{folder} and run the build again (it downloads the lock's files)")
        digest = _sha(path)
        if digest not in allowed[name]:
            raise DataError(f"{path}: sha256 {digest} is not one of the hashes {lock.name} pins for {name} "
                            f"({', '.join(sorted(allowed[name]))[:150]}…): a damaged or substituted file. Delete it "
                            f"(or the folder {folder}) and run the build again, or copy in the file the lock names")
        seen.add(name)
    missing = sorted(set(allowed) - seen)
    if missing:
        raise DataError(f"{folder}: no file for {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''} of "
                        f"{lock.name}: delete the folder and run the build again (it downloads them), or copy "
                        "them in")
    return len(files)


def wheelhouse(lock: Path) -> Path:
    """The lock's wheelhouse in the cache: downloaded once by ``pip download --require-hashes`` on this
    machine, verified against the lock every time."""
    folder = cache_dir() / "wheels" / f"{lock.stem}-{lock_hash(lock)}"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        log.info("downloading the wheels of %s into %s (pip download --require-hashes)", lock.name, folder)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--require-hashes",
               "--no-deps", "-r", str(lock), "-d", str(partial)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("WARNING"))[-1500:]
            if "HASHES" in tail.upper():
                raise DataError(f"pip download of {lock} failed: a file did not match the lock's hash:\n{tail}")
            raise ServiceError(f"pip download of {lock} failed (is PyPI reachable? an air-gapped machine needs the "
                               f"folder {folder} copied in from one that ran this):\n{tail}")
        partial.rename(folder)
    verify_wheelhouse(folder, lock)
    return folder


def wheels_image(lock: Path) -> str:
    """An image holding the verified wheelhouse in /wheels (built once per lock hash)."""
    folder = wheelhouse(lock)
    tag = f"{REPO}-wheels:{lock.stem}-{lock_hash(lock)}"
    if not containers.image_exists(tag):
        log.info("building %s from %s", tag, folder)
        _docker_build(["-f", "-", "-t", tag, str(folder)], stdin="FROM scratch\nCOPY . /wheels/\n")
    return tag


# ---------------------------------------------------------------- building
def _docker_build(args: list[str], stdin: str | None = None) -> None:
    """``docker build`` with its output on stderr (stdout is for the tag)."""
    proc = subprocess.run([shutil.which("docker") or "docker", "build", *args], input=stdin, text=True,
                          stdout=2, stderr=2)  # both to this process's stderr (fd 2), as they come
    if proc.returncode != 0:
        raise CxrError(f"docker build {' '.join(args[-4:])} failed (exit {proc.returncode}): see its output above")


def ensure_base(p: Plan, root: Path = ROOT) -> None:
    if containers.image_exists(p.base) and containers.image_exists(p.build_base):
        return
    if p.offline and p.build_base == base_image_name(root):
        log.info("making the base images %s and %s from Debian packages (infra/docker/make-base.sh)", p.build_base,
                 p.base)
        proc = subprocess.run(["bash", str(root / "infra/docker/make-base.sh"), p.build_base],
                              stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        if proc.returncode != 0:
            raise ServiceError(f"infra/docker/make-base.sh failed (exit {proc.returncode}): see its output above")
        return
    if p.offline:
        raise CxrError(f"base image {p.base} is not in the local Docker and --offline pulls nothing: load it "
                       "(`docker load`) or make one with `bash infra/docker/make-base.sh` and pass --base")
    # online: docker build pulls it


def build(name: str, offline: bool = False, base: str | None = None, root: Path = ROOT,
          no_cache: bool = False) -> dict:
    """Build image ``name`` (see the module docstring); return its tag, size and build time. ``no_cache``: build
    every step again (a cold build, without removing anything from a Docker daemon others share)."""
    containers.require_daemon()
    p = plan(name, offline, base, root)
    started = time.time()
    ensure_base(p, root)
    wheels = wheels_image(p.lock)
    args = ["--network", "none" if offline else "host", "-f", str(p.dockerfile), "-t", p.tag,
            "--build-arg", f"BASE_IMAGE={p.base}", "--build-arg", f"BUILD_BASE={p.build_base}",
            "--build-arg", f"WHEELS={wheels}",
            "--label", f"org.opencontainers.image.version={p.tag.split(':')[1]}"]
    for key, value in p.args:
        args += ["--build-arg", f"{key}={value}"]
    if no_cache:
        args.append("--no-cache")
    _docker_build([*args, str(root)])
    size = int(containers.docker("image", "inspect", "-f", "{{.Size}}", p.tag).stdout.strip())
    return {"image": p.tag, "base": p.base, "wheels": wheels, "offline": offline, "size_bytes": size,
            "seconds": round(time.time() - started, 1)}


def local_tag(name: str, root: Path = ROOT) -> str:
    """The tag of image ``name`` built from this checkout: the offline build's when the local Docker has it,
    else the online build's (``--image``'s default in ``cxr pipeline run-local --runner docker``)."""
    offline = plan(name, offline=True, root=root).tag
    return offline if containers.image_exists(offline) else plan(name, root=root).tag
