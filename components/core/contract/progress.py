"""Progress for anything that walks many images.

On a terminal: a tqdm bar. Elsewhere (a KFP pod, CI, a log file): a log line at most every
``CXR_PROGRESS_SECONDS`` seconds (default 30) and at the end, so a long step is never silent.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("cxr.progress")


def _interval() -> float:
    try:
        return float(os.environ.get("CXR_PROGRESS_SECONDS", "30"))
    except ValueError:
        return 30.0


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty() and os.environ.get("CXR_LOG_FORMAT", "text") != "json":
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
        return
    yield from _logged(items, desc, total, unit)


def _logged(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterator[T]:
    started = last = time.perf_counter()
    every = _interval()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= every:
            last = now
            _line(desc, done, total, unit, now - started)
    if done >= 64 or time.perf_counter() - started >= every:
        _line(desc, done, total, unit, time.perf_counter() - started)


def _line(desc: str, done: int, total: int | None, unit: str, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    of = f"/{total}" if total else ""
    log.info("%s: %d%s %s (%.1f %s/s, %.0f s)", desc, done, of, unit, rate, unit, seconds,
             extra={"progress": desc, "done": done, "total": total, "rate": round(rate, 2)})
