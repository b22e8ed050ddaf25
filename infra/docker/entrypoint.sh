#!/bin/sh
# Pass-through entrypoint of the project images: `IMAGE cxr train …`, `IMAGE sh -c …` (what Kubeflow Pipelines
# runs) and `IMAGE python …` run as given; `IMAGE serve …` (a first word that is no program) runs `cxr serve …`.
# So it never captures a KFP task's command, and manifests that pass only `args: [serve, …]` still work.
set -e
if [ "$#" -gt 0 ] && ! command -v "$1" >/dev/null 2>&1; then
  exec cxr "$@"
fi
exec "$@"
