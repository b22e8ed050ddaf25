#!/usr/bin/env bash
# A clean-machine rehearsal: README's two Quick start commands (install + `dvc repro` on the demo data; install +
# the tests, .ci/test) run as a new user runs them, in a container that has only what a new machine has:
# Python 3.11 and git (the Debian base of infra/docker/make-base.sh) and a docker client without a daemon
# (this machine's docker binary, mounted read-only; none is installed in the base).
#
#   bash .ci/fresh-machine.sh            both commands, in one fresh clone of the committed HEAD
#   bash .ci/fresh-machine.sh demo       only the first (install + dvc repro: minutes)
#   bash .ci/fresh-machine.sh tests      only the second (install + the whole suite: long on 2 cores)
#
# How the container gets what a fresh machine gets from the network:
#   - Debian packages from the mirror in the base's apt sources (through the default bridge network), installed
#     by .ci/system-deps.sh as on any machine (chromium, debootstrap, docker.io);
#   - Python wheels from this machine's pip configuration: /etc/pip.conf, /etc/xdg/pip, ~/.config/pip and every
#     local folder or file they name (a file:// index, find-links, the CA bundle of `cert`) are mounted read-only
#     at the same paths, and the PIP_* variables are passed on; a network index works as it does here;
#   - Docker: the container is --privileged, so system-deps.sh installs and starts its own dockerd inside, as on
#     a new machine; its /var/lib/docker is a fresh volume (removed afterwards), this machine's daemon is not
#     shared. ../shared (CI's data beside the checkout) is mounted read-only beside the clone, and CI=true.
# Uncommitted changes are not in the rehearsal (a clone of HEAD, like CI). Each command's exit status and time
# are printed at the end; the full log and the suite's per-test times (out/junit.xml) are kept (the folder is
# printed). Exit status: the first command that failed.
set -euo pipefail
what="${1:-all}"
case "$what" in all|demo|tests) ;; *) echo "usage: bash .ci/fresh-machine.sh [all|demo|tests]" >&2; exit 2 ;; esac
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=$(cd "$top/../shared" 2>/dev/null && pwd) || { echo "fresh-machine.sh: no ../shared beside $top" >&2; exit 2; }
client="${CXR_FRESH_DOCKER_CLIENT:-$(command -v docker || true)}"
[ -n "$client" ] || { echo "fresh-machine.sh: needs docker here (apt-get install docker.io)" >&2; exit 2; }
client=$(readlink -f "$client")
if ldd "$client" >/dev/null 2>&1; then
  echo "fresh-machine.sh: $client is linked dynamically and may not run in the base image; set" \
    "CXR_FRESH_DOCKER_CLIENT to a static docker client (Docker's static builds are)" >&2
fi
[ -n "$(git -C "$top" status --porcelain)" ] && echo "fresh-machine.sh: note: uncommitted changes are NOT in this run" >&2

base=$(bash "$top/infra/docker/make-base.sh")
work=$(mktemp -d -t fresh-machine.XXXXXX)
git clone -q "$top" "$work/src"
volume="cxr-fresh-machine-$(basename "$work" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9-')"
docker volume create "$volume" >/dev/null
trap 'docker volume rm -f "$volume" >/dev/null 2>&1 || true' EXIT

# this machine's pip configuration and the local folders it names
mkdir "$work/out"  # what the run leaves for this machine: the suite's per-test times (junit.xml)
mounts=(-v "$work/out:/out" -v "$work/src:/src:ro" -v "$shared:/work/shared:ro" -v "$client:/usr/local/bin/docker:ro"
        -v "$volume:/var/lib/docker")
for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip"; do
  [ -e "$f" ] && mounts+=(-v "$f:${f/#$HOME//root}:ro")
done
conf=$(cat /etc/pip.conf /etc/xdg/pip/*.conf "$HOME/.config/pip/pip.conf" 2>/dev/null || true)
conf+=" $(env | grep '^PIP_' | cut -d= -f2- || true)"
for p in $(printf '%s\n' "$conf" | grep -oE '(file://)?/[^ ,"'"'"']+' | sed 's|^file://||' | sort -u); do
  [ "$(basename "$p")" = simple ] && p=$(dirname "$p")
  case "$p" in /etc/pip.conf|/etc/xdg/pip*|"$HOME"/.config/pip*) continue ;; esac  # mounted above
  # an index or find-links folder; a file: the CA bundle pip trusts (an HTTPS proxy's certificate is in it)
  [ -e "$p" ] && mounts+=(-v "$p:$p:ro")
done
envs=(-e CI=true -e DVC_NO_ANALYTICS=1 -e PYTEST_ADDOPTS="--junitxml=/out/junit.xml")
for v in $(env | grep -oE '^PIP_[A-Z_]+' || true); do envs+=(-e "$v"); done

# inside: the README's two Quick start commands, as the clone has them, one after the other in one clone
cat >"$work/inner.sh" <<'INNER'
set -u
# a new machine's /sys and cgroups are writable (dockerd needs them): remount them so without --privileged
if ! touch /sys/fs/cgroup/.rw 2>/dev/null; then
  mount -o remount,rw /sys 2>/dev/null
  for m in $(awk '$3 == "cgroup" || $3 == "tmpfs" && $2 == "/sys/fs/cgroup" {print $2}' /proc/mounts); do
    mount -o remount,rw "$m"
  done
fi
git clone -q /src /work/main && cd /work/main || exit 2
mapfile -t cmds < <(python3 -c '
import re
text = open("README.md").read().split("## Quick start", 1)[1].split("\n## ", 1)[0]
for block in re.findall(r"```bash\n(.*?)\n```", text, re.S):
    print(block.replace("\n", " "))')
[ "${#cmds[@]}" -eq 2 ] || { echo "README Quick start has ${#cmds[@]} bash blocks, not 2"; exit 2; }
names=(demo tests)
first=0
summary=""
for i in 0 1; do
  [ "$WHAT" = all ] || [ "$WHAT" = "${names[$i]}" ] || continue
  echo "=== ${names[$i]}: ${cmds[$i]}"
  start=$SECONDS
  bash -c "${cmds[$i]}" </dev/null
  rc=$?
  line="${names[$i]}: exit $rc after $(( SECONDS - start )) s: ${cmds[$i]}"
  echo "=== $line"
  summary+="$line"$'\n'
  [ "$rc" -ne 0 ] && [ "$first" -eq 0 ] && first=$rc
done
printf '%s' "$summary"
exit "$first"
INNER
mounts+=(-v "$work/inner.sh:/inner.sh:ro")

# --privileged, or where this machine's daemon cannot grant every capability (a VM without CAP_SYS_RESOURCE
# says "unable to apply caps"), every capability it has, no seccomp filter, and /sys remounted writable inside
if docker run --rm --privileged --network none "$base" true >/dev/null 2>&1; then
  privileges=(--privileged)
else
  privileges=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined --security-opt apparmor=unconfined)
  echo "fresh-machine.sh: --privileged is refused here; using: ${privileges[*]}" >&2
fi

echo "fresh-machine.sh: base $base, client $client ($("$client" --version)); log: $work/fresh-machine.log" >&2
start=$SECONDS
rc=0
docker run --rm "${privileges[@]}" --name "$volume" "${mounts[@]}" "${envs[@]}" -e WHAT="$what" -w /work "$base" \
  bash /inner.sh >"$work/fresh-machine.log" 2>&1 || rc=$?
grep -E '^(=== |::: FAILED|system-deps.sh: )' "$work/fresh-machine.log" | tail -n 20 || true
tail -n 15 "$work/fresh-machine.log"
echo "fresh-machine.sh: exit $rc after $(( SECONDS - start )) s; log: $work/fresh-machine.log"
exit "$rc"
