"""The prediction log: every prediction appended, without pixel data, to rotating JSONL files.

One JSON object per line (the fields are :mod:`components.core.stats.drift`'s, which reads them back for
``cxr monitor``)::

    {"type": "prediction", "request_id": "…", "ts": 1767225600.123, "time": "2026-01-01T00:00:00.123Z",
     "model": {"name": "cxr-classifier", "version": "3", "alias": "champion"},
     "label": "PNEUMONIA", "probabilities": {…}, "decision": {…},
     "ood_score": 11.2, "ood_threshold": 14.9, "unlike_training_data": false,
     "image": {"width": 1670, "height": 1296, "mean": 121.4, "std": 58.0}, "latency_ms": 21.5}
    {"type": "feedback", "request_id": "…", "ts": …, "time": "…", "label": "NORMAL"}

Files are ``predictions-<UTC start>-<host>-<pid>.jsonl`` in the folder ``CXR_PREDICTION_LOG`` (off when
unset); a file is closed and a new one started when it reaches ``CXR_PREDICTION_LOG_MAX_BYTES``
(default 16 MiB) or is ``CXR_PREDICTION_LOG_MAX_SECONDS`` old (default 3600). Host and process id in
the name let several replicas share one folder (a ReadWriteMany volume on the cluster, see
``infra/k8s/serving``) without two writers ever appending to the same file. Each line is written with
one ``write`` and flushed under a lock; a reader skips a torn last line. Retention (deleting old
files, or an object-storage lifecycle rule when the volume is synced to S3) is the operator's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("cxr.serve")

ENV_DIR, ENV_MAX_BYTES, ENV_MAX_SECONDS = "CXR_PREDICTION_LOG", "CXR_PREDICTION_LOG_MAX_BYTES", \
    "CXR_PREDICTION_LOG_MAX_SECONDS"
PREFIX, SUFFIX = "predictions-", ".jsonl"


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class PredictionLog:
    """Append-only, size- and time-rotated JSONL files in one folder; safe to share between threads."""

    def __init__(self, folder: str | Path, max_bytes: int = 16 * 1024 * 1024, max_seconds: float = 3600.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_seconds = int(max_bytes), float(max_seconds)
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._opened = 0.0
        self._seq = 0
        self.files: list[Path] = []

    @classmethod
    def from_env(cls, folder: str | Path | None = None) -> PredictionLog | None:
        folder = folder or os.environ.get(ENV_DIR)
        if not folder:
            return None
        return cls(folder, int(os.environ.get(ENV_MAX_BYTES, 16 * 1024 * 1024)),
                   float(os.environ.get(ENV_MAX_SECONDS, 3600)))

    def _open(self, now: float) -> IO[str]:
        host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())[:40]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        self._seq += 1
        path = self.folder / f"{PREFIX}{stamp}-{host}-{os.getpid()}-{self._seq:04d}{SUFFIX}"
        self.files.append(path)
        self._opened = now
        return path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        now = time.time()
        record = {"ts": round(now, 3), "time": utc(now), **record}
        line = json.dumps(record, separators=(",", ":"), default=float) + "\n"
        with self._lock:
            fh = self._fh
            if fh is None or fh.tell() >= self.max_bytes or now - self._opened >= self.max_seconds:
                if fh is not None:
                    fh.close()
                fh = self._fh = self._open(now)
            fh.write(line)
            fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
