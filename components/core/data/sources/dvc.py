"""``dvc://<git-url>@<rev>``: the ingested data exactly as a commit of a DVC repository pins it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from components.core.data import manifest
from components.core.contract.errors import DataError, ServiceError
from components.core.contract.fsutil import atomic_path


def parse_uri(uri: str) -> tuple[str, str]:
    """``dvc://<git-url>@<rev>`` → (git url, rev). The URL may itself contain '@' (git@host:repo)."""
    body = uri.removeprefix("dvc://")
    if "@" not in body:
        raise DataError(f"{uri!r}: expected dvc://<git-url>@<rev>, e.g. dvc://https://github.com/org/repo@v1.2")
    url, rev = body.rsplit("@", 1)
    if not url or not rev:
        raise DataError(f"{uri!r}: expected dvc://<git-url>@<rev>")
    return url, rev


def fetch(uri: str, out_dir: str | Path, path_in_repo: str = "data/raw") -> dict:
    """``dvc get`` the ingested folder (images + manifest) of that commit into ``out_dir``."""
    url, rev = parse_uri(uri)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        target = tmp / "fetched"
        proc = subprocess.run(["dvc", "get", url, path_in_repo, "--rev", rev, "-o", str(target)],
                              capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        if proc.returncode != 0:
            raise ServiceError(f"dvc get {url} {path_in_repo} --rev {rev} failed: {proc.stderr.strip()[-800:]}")
        if not (target / manifest.MANIFEST_NAME).is_file():
            raise DataError(f"{uri}: {path_in_repo} at {rev} has no {manifest.MANIFEST_NAME}: not an ingest output")
        for child in target.iterdir():
            os.replace(child, tmp / child.name)
        target.rmdir()
    df = manifest.read(out_dir / manifest.MANIFEST_NAME)
    return {"source": "dvc", "uri": uri, "rev": rev, "images": len(df), "output": str(out_dir),
            "per_class": {k: int(v) for k, v in df["label"].value_counts().sort_index().items()}}
