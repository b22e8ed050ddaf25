"""Atomic outputs: write to a temporary sibling, then rename, so nothing is ever half-written."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, *, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        # a step killed with SIGKILL leaves its temporary folder behind: the next run clears it
        # (one writer per output at a time: DVC and KFP never run the same stage twice at once)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            remove(stale)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    return Path(name)


def remove(path: Path) -> None:
    """Remove a file, a symlink or a directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary path is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _tmp_sibling(path, directory=directory)
    try:
        yield tmp
        if directory:
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = None
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                remove(old)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                remove(old)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def partition_folders(out: str | Path, parts: int) -> Iterator[list[Path]]:
    """``parts`` scratch folders for the partial results of a partitioned step run in one process, beside
    ``out`` (the same file system: the merge can move files), removed afterwards whatever happens (and, like
    :func:`atomic_path`'s, those of an earlier run killed with SIGKILL when the next run starts)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.parts-*"):  # left by a run killed with SIGKILL
        remove(stale)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.parts-", dir=out.parent))
    try:
        yield [work / f"part-{i:04d}" for i in range(parts)]
    finally:
        remove(work)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
