# shellcheck shell=bash
# Sourced by .ci/test and .ci/run. `step NAME COMMAND...` runs one step; when it fails, the script stops there and
# names the step, its command and its exit status (its own message is the output just above). The step runs in
# this shell (so `step … . .venv/bin/activate` activates the venv for the steps after it). Steps are checked one
# by one: a `&&` chain would not do, since `set -e` ignores a failure anywhere but in its last command.
step() {
  local name=$1 rc=0 started=$SECONDS
  shift
  echo "::: step ${name}: $*" >&2
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "::: FAILED at step '${name}' (exit ${rc}): $*" >&2
    echo "::: the steps after it did not run; its own message is above" >&2
    exit "$rc"
  fi
  echo "::: step ${name}: done in $(( SECONDS - started )) s" >&2
}
