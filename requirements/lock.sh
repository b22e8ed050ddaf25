#!/usr/bin/env bash
# Regenerate the hash-pinned lock files from the pins in pyproject.toml, for Linux x86_64, CPython 3.11:
#
#   bash requirements/lock.sh              # keep every version already locked that still fits
#   bash requirements/lock.sh --upgrade    # re-resolve everything to the newest that fits the pins
#
# Needs `uv` (a dev dependency, pinned in pyproject.toml). uv resolves from package metadata, so the
# multi-GB CUDA wheels of the gpu lock are never downloaded.
#
#   cpu-dev.txt    main + cpu + dev extras: CI and the README's install (pip install --require-hashes)
#   cpu.txt        main + cpu: the CPU image (infra/docker/Dockerfile)
#   gpu.txt        main + gpu (tensorflow[and-cuda]): a GPU machine without the TensorFlow image
#   gpu-image.txt  main only: the GPU image, whose base (tensorflow/tensorflow:2.21.0-gpu) has TensorFlow
#   server.txt     mlflow[auth] + server extra (Postgres, S3): the MLflow server image (Dockerfile.mlflow)
#
# All of them take one resolution of everything (every extra together) as constraints, so a package that
# two locks share has one version, and a pin that fits one install but not another fails here, not later.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-uv}"
command -v "$uv" >/dev/null || { echo "lock.sh: uv not found (pip install uv, or set UV=/path/to/uv)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

compile() {  # compile OUTPUT INPUT [uv options...]
  local out="$1" in="$2"
  shift 2
  "$uv" pip compile "$in" -o "$out" --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash requirements/lock.sh" "$@"
}

# everything at once; the current cpu-dev lock is its starting point, so versions move only when they must
cp requirements/cpu-dev.txt "$tmp/all.txt" 2>/dev/null || true
compile "$tmp/all.txt" pyproject.toml --extra cpu --extra gpu --extra dev --extra server "$@"
all=(-c "$tmp/all.txt")

compile requirements/cpu-dev.txt pyproject.toml --extra cpu --extra dev "${all[@]}"
compile requirements/cpu.txt pyproject.toml --extra cpu "${all[@]}"
compile requirements/gpu.txt pyproject.toml --extra gpu "${all[@]}"
compile requirements/gpu-image.txt pyproject.toml "${all[@]}"

# the MLflow server needs only mlflow[auth] and the server extra: no TensorFlow, no project code
python3 - >"$tmp/server.in" <<'EOF_PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(*[d for d in project["dependencies"] if d.startswith("mlflow[")], *project["optional-dependencies"]["server"],
      sep="\n")
EOF_PY
compile requirements/server.txt "$tmp/server.in" "${all[@]}"
# the annotations would name the temporary files: drop the constraint, name the server's input
sed -i -e "\\#^    \\#   -c $tmp/all.txt\$#d" requirements/*.txt
sed -i -e "s#-r $tmp/server.in#-r (the mlflow pin and server extra of pyproject.toml)#" requirements/server.txt
