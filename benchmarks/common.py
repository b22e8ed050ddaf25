"""Shared helpers: timing, the sample repeated to N files, machine facts, markdown tables."""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "cxr-sample"
CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def machine() -> str:
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{f'{gpus} GPU' if gpus else 'no GPU'}, Python {platform.python_version()}, TF {tf.__version__}")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def repeated_sample(dest: Path, n_files: int, sample: Path = SAMPLE) -> Path:
    """A class-folder tree of ``n_files`` hard links (copies across file systems) cycling through the real
    sample's images. Not symlinks: ingest refuses links that lead outside the data folder."""
    per_class = [sorted(p for p in (sample / c).iterdir() if p.is_file()) for c in CLASSES]
    # interleave the classes, so any prefix has all of them
    files = [f for group in itertools.zip_longest(*per_class) for f in group if f is not None]
    if not files:
        raise SystemExit(f"no images under {sample}: the benchmarks read ../shared/data/cxr-sample")
    for i in range(n_files):
        src = files[i % len(files)]
        link = dest / src.parent.name / f"r{i // len(files):03d}-{src.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            try:
                os.link(src.resolve(), link)
            except OSError:
                shutil.copyfile(src, link)
    return dest


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(x):
        return f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)
