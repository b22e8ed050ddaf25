"""Where data files live: a local path or an object-storage URI (``s3://bucket/key``).

The data plane reads images and shard files through these few functions, so a manifest or a shard
index can point into object storage on a cluster and at local files on a laptop, with the same code.

- Local paths (``data/raw/x.png``, ``/abs/path``, ``file:///abs/path``) use the file system; ``.npy``
  files are memory-mapped, so a shard costs page cache, not process memory.
- ``s3://bucket/key`` goes through boto3 (a dependency of the project), with the usual
  AWS settings from the environment; ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at
  MinIO or another S3-compatible store. A remote ``.npy`` is read whole (one GET per shard file).

Relative paths in a manifest are joined to its image root with :func:`join`; an absolute URI in a
manifest is used as it is, so a manifest may mix local and remote images.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

from components.core.contract.errors import DataError, ServiceError

SCHEMES = ("s3://",)


def is_remote(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(SCHEMES)


def is_absolute(uri: str | os.PathLike) -> bool:
    """An absolute local path, ``file://…`` or a remote URI (a manifest path used as it is)."""
    s = str(uri)
    return is_remote(s) or s.startswith("file://") or os.path.isabs(s)


def _local(uri: str | os.PathLike) -> Path:
    s = os.fspath(uri)
    return Path(s[len("file://"):] if s.startswith("file://") else s)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/…``; a part that is itself absolute (a URI, ``/abs``) replaces what came before."""
    out = os.fspath(base)
    for part in parts:
        part = os.fspath(part)
        if is_absolute(part):
            out = part
        elif is_remote(out):
            out = out.rstrip("/") + "/" + part.lstrip("/")
        else:
            out = str(_local(out) / part)
    return out


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise DataError(f"{uri}: an S3 URI needs a bucket and a key (s3://bucket/key)")
    return bucket, key


def _s3_client():
    return _s3_client_of(os.getpid())  # one per process: a client is not safe to share across fork()


@functools.lru_cache(maxsize=4)
def _s3_client_of(pid: int):
    import boto3

    # retries: AWS_MAX_ATTEMPTS / AWS_RETRY_MODE from the environment, as every AWS SDK reads them
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def _s3_error(uri: str, err: Exception) -> Exception:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
    if code in ("NoSuchKey", "404", "NotFound"):
        return FileNotFoundError(2, "no such object", uri)
    return ServiceError(f"{uri}: object storage error {code or type(err).__name__}: {str(err)[:200]}")


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The whole file or object; a missing one raises ``FileNotFoundError`` for both."""
    if is_remote(uri):
        bucket, key = _split_s3(str(uri))
        try:
            return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as err:
            raise _s3_error(str(uri), err) from None
    return _local(uri).read_bytes()


def write_bytes(uri: str | os.PathLike, data: bytes) -> str:
    """Write a file (atomically, locally) or put an object."""
    if is_remote(uri):
        bucket, key = _split_s3(str(uri))
        try:
            _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as err:
            raise _s3_error(str(uri), err) from None
        return str(uri)
    from components.core.contract.fsutil import atomic_path

    path = _local(uri)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return str(path)


def exists(uri: str | os.PathLike) -> bool:
    if is_remote(uri):
        bucket, key = _split_s3(str(uri))
        try:
            _s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as err:
            if isinstance(_s3_error(str(uri), err), FileNotFoundError):
                return False
            raise _s3_error(str(uri), err) from None
    return _local(uri).exists()


def list_files(prefix: str | os.PathLike) -> list[str]:
    """Every file under a folder or key prefix (sorted, full paths/URIs)."""
    if is_remote(prefix):
        bucket, key = _split_s3(str(prefix).rstrip("/") + "/")
        out: list[str] = []
        try:
            for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        except Exception as err:
            raise _s3_error(str(prefix), err) from None
        return sorted(out)
    root = _local(prefix)
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def load_array(uri: str | os.PathLike, mmap: bool = True):
    """A ``.npy`` array: memory-mapped when local (and ``mmap``), read whole from object storage."""
    import numpy as np

    if is_remote(uri):
        return np.load(io.BytesIO(read_bytes(uri)), allow_pickle=False)
    return np.load(_local(uri), mmap_mode="r" if mmap else None, allow_pickle=False)


def save_array(uri: str | os.PathLike, array) -> str:
    """Write a ``.npy`` file or object (atomically, locally)."""
    import numpy as np

    if is_remote(uri):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return write_bytes(uri, buf.getvalue())
    from components.core.contract.fsutil import atomic_path

    path = _local(uri)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return str(path)
