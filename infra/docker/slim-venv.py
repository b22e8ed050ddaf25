"""Trim a venv for a runtime image, in its build stage: only what nothing imports at run time goes.

    python3 slim-venv.py VENV [--warm-imports FILE] [--keep PATTERN]...    # prints what each rule removed, in MB

Each rule, in order (what it removes and why that is safe; BENCHMARKS.md § 16 has the sizes):

1. ``uninstall``: distributions the lock must hold but nothing imports (:data:`UNUSED`).
2. ``unused parts``: parts of a distribution no module imports or reads (:data:`PARTS`, :data:`KEEP_ONLY`), but
   those ``--keep`` names (the MLflow image keeps the MLflow UI).
3. ``test suites``: directories named ``tests``/``test`` that no module outside a test suite imports.
4. ``build files``: C/C++/Cython sources and headers, ``include`` folders and type stubs (``.pyi``): read when
   compiling against a package or type-checking, never when running it (cffi keeps its headers: it compiles
   at run time when asked).
5. ``strip``: the static symbol tables of shared libraries (``strip --strip-unneeded`` keeps the dynamic
   symbols they link by). A stripped copy replaces the library only when it loads (``dlopen``): strip breaks
   some libraries that auditwheel's patchelf rewrote, and those stay as they were. Needs binutils (the build
   stages' base has it; without it the rule is skipped).
6. ``duplicates``: identical files (versioned copies of one ``.so``, one runtime library vendored by two
   wheels) become hard links to one file.
7. ``bytecode``: with ``--warm-imports`` (infra/docker/warm-imports.txt, made by trace-imports.py), ``__pycache__``
   is kept only for the modules the image's roles import: all bytecode is removed, then each listed module is
   imported once, which writes it again for what they import. Without the list every module keeps its bytecode.
   A listed module that no longer exists is a warning (a stale list costs start-up time); one that fails to
   import stops the build (something the roles import is broken, e.g. by a rule above).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# distribution -> why nothing imports it at run time
UNUSED = {
    "libclang": "TensorFlow's wheel requires it; no module imports its `clang` package (Python bindings of the "
                "C compiler's parser, a tool of TensorFlow's own build)",
}
# path under site-packages (a glob) -> why nothing imports it at run time
PARTS = {
    "tensorflow/include": "TensorFlow's C++ headers, for compiling custom ops",
    "tensorflow/compiler/mlir/stablehlo": "StableHLO's Python bindings: no module imports "
                                          "tensorflow.compiler.mlir.stablehlo (it is in no tf.* API)",
    "tensorflow/compiler/tf2xla/ops/_xla_ops.so": "the XLA ops as a custom-op library: no module loads it (the ops "
                                                  "are registered in libtensorflow_cc; jit_compile=True trains "
                                                  "without it)",
    "tensorflow/python/framework/lib_native_proto_caster.so": "a library only _xla_ops.so links to (its one "
                                                              "NEEDED entry in TensorFlow)",
    "pyarrow/*flight*": "Arrow Flight (RPC): imported only by `import pyarrow.flight`, which nothing does; pyarrow "
                        "treats it as an optional module (pyarrow.show_info() lists it as not built)",
    "pyarrow/_pyarrow_cpp_tests*": "pyarrow's C++ test hooks",
    "pyarrow/src": "pyarrow's C++ sources",
    "mlflow/server/js": "the MLflow web UI, served by `mlflow server`: that role is the mlflow image's "
                        "(infra/docker/Dockerfile.mlflow); the tasks only talk to its REST API",
    "pydicom/data/test_files": "pydicom's sample files for its own tests (pydicom.data.get_testdata_file)",
}
# folder under site-packages -> (the entries it keeps, why nothing reads the others)
KEEP_ONLY = {
    "botocore/data": ({"s3", "sts", "sso", "sso-oidc", "signin"},
                      "the API models of the AWS services nothing calls: the project's storage "
                      "(components/core/data/storage.py) and MLflow's artifact store create S3 clients only, and "
                      "botocore's credential providers STS, SSO, SSO-OIDC and sign-in ones (the files beside the "
                      "service folders, endpoints and partitions, stay)"),
}
TEST_DIRS = {"tests", "test"}
BUILD_SUFFIXES = {".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp"}
KEEP_BUILD_FILES = {"cffi"}  # cffi compiles C at run time when asked (ffi.compile): its headers stay


def size(root: Path) -> int:
    """Bytes on disk under ``root``, each inode once (hard links count once, as in an image layer)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath, name)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def uninstall(venv: Path, site: Path) -> None:
    present = [name for name in UNUSED if list(site.glob(f"{name.replace('-', '_')}-*.dist-info"))]
    if present:
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", *present],
                       check=True)


def unused_parts(venv: Path, site: Path, keep: tuple[str, ...] = ()) -> None:
    for pattern in PARTS:
        if pattern in keep:
            continue
        for path in site.glob(pattern):
            remove(path)
    for folder, (kept, _why) in KEEP_ONLY.items():
        if folder not in keep and (site / folder).is_dir():
            for path in (site / folder).iterdir():
                if path.is_dir() and path.name not in kept:
                    remove(path)


def _in_test_dir(path: Path, site: Path) -> bool:
    return any(part in TEST_DIRS for part in path.relative_to(site).parts[:-1])


IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+\(?([^\n#)]+)|import[ \t]+([\w., \t]+))", re.M)


def _references(py: Path, site: Path, text: str) -> set[str]:
    """The dotted names a module's imports (and quoted names like "a.b.tests", for importlib) refer to."""
    package = list(py.relative_to(site).parent.parts)
    refs = set(re.findall(r"[\"']([\w.]+\.tests?)\b", text))
    for frm, names, plain in IMPORT.findall(text):
        if plain:
            refs |= {n.strip().split(" ")[0] for n in plain.split(",")}
            continue
        dots = len(frm) - len(frm.lstrip("."))
        base = frm.lstrip(".")
        if dots:
            parent = package[: len(package) - dots + 1]
            base = ".".join([*parent, base] if base else parent)
        refs.add(base)
        refs |= {f"{base}.{n.strip().split(' ')[0]}" for n in names.split(",") if n.strip()}
    return refs


def test_suites(venv: Path, site: Path) -> None:
    """Remove the ``tests``/``test`` directories that no module outside a test suite imports."""
    candidates = sorted({p for p in site.rglob("*") if p.is_dir() and p.name in TEST_DIRS and p.parent != site
                         and not _in_test_dir(p, site)})
    names = {p: ".".join(p.relative_to(site).parts) for p in candidates}
    refs: set[str] = set()
    for py in site.rglob("*.py"):
        if not _in_test_dir(py, site):
            text = py.read_text(errors="ignore")
            if "test" in text:
                refs |= _references(py, site, text)
    prefixes = {".".join(parts[:i]) for r in refs if (parts := r.split(".")) for i in range(1, len(parts) + 1)}
    used = {p for p, dotted in names.items() if dotted in prefixes}
    for p in candidates:
        if p not in used:
            remove(p)
    if used:
        print(f"slim-venv: kept {len(used)} test directories that other modules import: "
              f"{', '.join(sorted(names[p] for p in used))[:400]}")


def build_files(venv: Path, site: Path) -> None:
    for path in sorted(site.rglob("include"), reverse=True):
        if path.is_dir() and path.relative_to(site).parts[0] not in KEEP_BUILD_FILES:
            remove(path)
    for path in list(files(site)):
        top = path.relative_to(site).parts[0]
        if path.suffix in BUILD_SUFFIXES and top not in KEEP_BUILD_FILES and not path.is_symlink():
            path.unlink()


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _loads(python: Path, path: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(path)],
                           capture_output=True, timeout=120)
    return probe.returncode == 0


def strip(venv: Path, site: Path) -> None:
    tool = shutil.which("strip")
    if not tool:
        print("slim-venv: no strip (binutils) in this base: shared libraries keep their symbol tables",
              file=sys.stderr)
        return
    python = venv / "bin" / "python"
    kept: list[str] = []
    for path in sorted(files(site)):
        if path.is_symlink() or ".so" not in path.name or not _is_elf(path):
            continue
        if b".symtab" not in subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True).stdout:
            continue
        stripped = path.with_name(path.name + ".stripped")
        subprocess.run([tool, "--strip-unneeded", "-o", str(stripped), str(path)], check=True, capture_output=True)
        if stripped.stat().st_size < path.stat().st_size and _loads(python, stripped):
            shutil.copymode(path, stripped)
            stripped.replace(path)
        else:
            stripped.unlink()
            kept.append(str(path.relative_to(site)))
    if kept:
        print(f"slim-venv: {len(kept)} libraries did not load stripped (or could not be checked) and keep their "
              f"symbols: {', '.join(kept)[:600]}")


def duplicates(venv: Path, site: Path) -> None:
    by_size: dict[int, list[Path]] = {}
    for path in files(site):
        if not path.is_symlink() and path.stat().st_size >= 65536:
            by_size.setdefault(path.stat().st_size, []).append(path)
    for paths in by_size.values():
        if len(paths) < 2:
            continue
        first_of: dict[str, Path] = {}
        for path in sorted(paths):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in first_of and first_of[digest].stat().st_mode == path.stat().st_mode:
                link = path.with_name(path.name + ".link")
                os.link(first_of[digest], link)
                link.replace(path)
            else:
                first_of.setdefault(digest, path)


def bytecode(venv: Path, site: Path, warm: Path | None) -> None:
    if warm is None:
        return
    for cache in sorted(site.rglob("__pycache__")):
        shutil.rmtree(cache)
    modules = [ln.strip() for ln in warm.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    # a module of the list that no longer exists (the lock moved on) costs only its bytecode: a warning; any other
    # failure means something the roles import is broken (a part the trim removed, say): the build stops
    script = ("import importlib, json, sys\nsys.dont_write_bytecode = False\nstale, broken = [], []\n"
              "for name in sys.argv[1:]:\n"
              "    try:\n        importlib.import_module(name)\n"
              "    except ModuleNotFoundError as err:\n"
              "        gone = err.name == name or name.startswith(f'{err.name}.')\n"
              "        (stale if gone else broken).append(f'{name}: {err!r}')\n"
              "    except BaseException as err:\n        broken.append(f'{name}: {err!r}')\n"
              "print(json.dumps({'stale': stale, 'broken': broken}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg", HOME=env.get("HOME") or "/tmp")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script, *modules], capture_output=True, text=True,
                          env=env, cwd="/tmp", timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"slim-venv: importing the modules of {warm} crashed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["stale"]:
        print(f"slim-venv: {len(result['stale'])} of {len(modules)} modules of {warm.name} no longer exist (they "
              "cost only start-up time; after a lock change, regenerate the list: python "
              f"infra/docker/trace-imports.py > infra/docker/warm-imports.txt): {'; '.join(result['stale'])[:600]}")
    if result["broken"]:
        raise SystemExit(f"slim-venv: {len(result['broken'])} modules of {warm} the image's roles import fail to "
                         f"import in this venv (did a rule remove something they need?):\n"
                         + "\n".join(result["broken"][:20]))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="slim-venv.py", description=__doc__.split("\n")[0])
    ap.add_argument("venv", type=Path)
    ap.add_argument("--warm-imports", type=Path, help="keep bytecode only for what these modules import")
    ap.add_argument("--keep", action="append", default=[], choices=sorted([*PARTS, *KEEP_ONLY]),
                    help="a part to keep")
    args = ap.parse_args(argv)
    sites = list((args.venv / "lib").glob("python3*/site-packages"))
    if len(sites) != 1:
        raise SystemExit(f"slim-venv: {args.venv}: not a venv (no lib/python3*/site-packages)")
    site = sites[0]
    if args.warm_imports is not None and not args.warm_imports.is_file():
        raise SystemExit(f"slim-venv: {args.warm_imports}: no such file (infra/docker/warm-imports.txt)")
    rules: list[tuple[str, Callable[[], None]]] = [
        ("uninstall", lambda: uninstall(args.venv, site)),
        ("unused parts", lambda: unused_parts(args.venv, site, tuple(args.keep))),
        ("test suites", lambda: test_suites(args.venv, site)),
        ("build files", lambda: build_files(args.venv, site)),
        ("strip", lambda: strip(args.venv, site)),
        ("duplicates", lambda: duplicates(args.venv, site)),
        ("bytecode", lambda: bytecode(args.venv, site, args.warm_imports)),
    ]
    start = before = size(site)
    for name, rule in rules:
        rule()
        after = size(site)
        print(f"slim-venv: {name:<13} -{(before - after) / 1e6:7.1f} MB")
        before = after
    print(f"slim-venv: site-packages {start / 1e6:.0f} MB -> {before / 1e6:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
