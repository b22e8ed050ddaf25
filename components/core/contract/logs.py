"""Logging set-up, done once by the entry point (the ``cxr`` CLI, a KFP task, the server).

Steps log through module loggers (``logging.getLogger(__name__)``) and never configure logging
themselves. Text with timestamps on a terminal; one JSON object per line when
``CXR_LOG_FORMAT=json`` (what KFP pods and the Deployment set), so log collectors can parse it.
``CXR_LOG_LEVEL`` sets the level (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# chatty libraries that would drown the steps' own lines at INFO
QUIET = ("great_expectations", "matplotlib", "PIL", "urllib3", "alembic", "git", "dvc", "h5py", "absl",
         "tensorflow", "mlflow.store", "mlflow.tracking._tracking_service", "httpx", "kfp", "botocore",
         "numexpr")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and tools swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("step", "progress", "done", "total", "rate"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(fmt: str | None = None, level: str | None = None, stream=None) -> None:
    """Configure the root logger once per process (calling again replaces our handler)."""
    fmt = (fmt or os.environ.get("CXR_LOG_FORMAT") or "text").lower()
    level = (level or os.environ.get("CXR_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.set_name("cxr")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "cxr":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
