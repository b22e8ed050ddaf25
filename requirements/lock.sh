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
# The later locks take the earlier ones as constraints, so a package shared by two locks has one version.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-uv}"
command -v "$uv" >/dev/null || { echo "lock.sh: uv not found (pip install uv, or set UV=/path/to/uv)" >&2; exit 1; }

compile() {  # compile OUTPUT INPUT [uv options...]
  local out="requirements/$1" in="$2"
  shift 2
  "$uv" pip compile "$in" -o "$out" --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash requirements/lock.sh" "$@"
}

compile cpu-dev.txt pyproject.toml --extra cpu --extra dev "$@"
compile cpu.txt pyproject.toml --extra cpu -c requirements/cpu-dev.txt "$@"
compile gpu.txt pyproject.toml --extra gpu -c requirements/cpu-dev.txt "$@"
compile gpu-image.txt pyproject.toml -c requirements/gpu.txt "$@"

# the MLflow server needs only mlflow[auth] and the server extra: no TensorFlow, no project code
server_in="$(mktemp --suffix=.in)"
trap 'rm -f "$server_in"' EXIT
python3 - >"$server_in" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(*[d for d in project["dependencies"] if d.startswith("mlflow[")], *project["optional-dependencies"]["server"],
      sep="\n")
EOF
compile server.txt "$server_in" -c requirements/cpu-dev.txt "$@"
# the header would name the temporary input file
sed -i "s#$server_in#the mlflow pin and server extra of pyproject.toml#" requirements/server.txt
