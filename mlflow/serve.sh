#!/usr/bin/env bash
# Start an MLflow tracking server the way the cluster runs it (infra/k8s/base/mlflow.yaml uses the
# same flags): a backend store, proxied artifacts, an allow-list of Host headers, optional basic auth.
#
#   bash mlflow/serve.sh            # http://127.0.0.1:5000, data in ./.mlflow-server/
#   bash mlflow/serve.sh --auth     # basic auth (needs MLFLOW_FLASK_SERVER_SECRET_KEY and
#                                   # MLFLOW_AUTH_ADMIN_PASSWORD, 12+ characters; see mlflow/README.md)
#
# Environment: MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_SERVER_DIR (.mlflow-server),
# MLFLOW_BACKEND_STORE_URI (sqlite in MLFLOW_SERVER_DIR; postgresql://… on the cluster),
# MLFLOW_ARTIFACTS_DESTINATION (a folder in MLFLOW_SERVER_DIR; s3://… on the cluster),
# MLFLOW_ALLOWED_HOSTS (fnmatch patterns of Host headers: localhost,localhost:*,127.0.0.1,127.0.0.1:*),
# MLFLOW_WORKERS (1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${MLFLOW_SERVER_DIR:-$PWD/.mlflow-server}"
mkdir -p "$dir"
args=(server
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$dir/mlflow.db}"
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$dir/artifacts}"
  --serve-artifacts
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*}"
  --workers "${MLFLOW_WORKERS:-1}")
if [ "${1:-}" = "--auth" ]; then
  : "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (a long random string)}"
  : "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (there is no default password)}"
  # basic_auth.ini holds no secret: the admin password comes from the environment.
  export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$dir/basic_auth.ini}"
  sed -e "s#@AUTH_DB@#sqlite:///$dir/basic_auth.db#" "$here/basic_auth.ini.template" > "$MLFLOW_AUTH_CONFIG_PATH"
  args+=(--app-name basic-auth)
fi
exec mlflow "${args[@]}"
