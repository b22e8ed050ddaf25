"""Helpers for end-to-end tests: a throwaway copy of the repository, commands with clear failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update({"DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "GIT_AUTHOR_NAME": "t",
              "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"})
    e.update(extra)
    return e


def sh(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, **extra: str):
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(dest: Path, params_update: dict | None = None) -> Path:
    """Copy the project's files (tracked + untracked, not ignored) into a new git repo at ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    skip = ("dvc.lock", "reports/", "pipelines/compiled/")
    for rel in filter(None, files):
        if rel.startswith(skip) or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    if params_update:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        _merge(params, params_update)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "init"], dest)
    return dest


def _merge(base: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


TINY = {
    "data": {"demo": {"patients_per_class": 12, "max_images_per_patient": 2, "min_side": 64, "max_side": 96}},
    "train": {"image_size": 32, "batch_size": 16, "head": {"dense_units": 16, "dropout": 0.1},
              "phases": [{"epochs": 2, "trainable": "head", "lr": 0.003},
                         {"epochs": 2, "trainable": "all", "lr": 0.003}]},
    "evaluate": {"gradcam_per_class": 1, "top_losses": 4},
}
