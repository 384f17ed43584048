#!/usr/bin/env bash
# Serves the MLflow UI over the local tracking store that `make local` writes.
#   WORK_DIR (.work)   the local work dir      MLFLOW_PORT (5000)   port on 127.0.0.1
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
MLFLOW_PORT=${MLFLOW_PORT:-5000}

main() {
  local store="${WORK_DIR}/mlflow/mlflow.db"
  if [[ ! -f "${store}" ]]; then
    echo "error: no tracking store at ${store}: run 'make local' first (or set WORK_DIR)" >&2
    exit 1
  fi
  # Only the UI: no job runner (7 more processes and about 1 GiB), one web worker; quiet about
  # a deprecation inside MLflow that a user cannot act on.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
  export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore:starlette.middleware.wsgi is deprecated}
  echo ">> MLflow UI on http://127.0.0.1:${MLFLOW_PORT} (Ctrl-C stops it)"
  exec "${VENV}/bin/mlflow" ui --backend-store-uri "sqlite:///$(cd "$(dirname "${store}")" && pwd)/mlflow.db" \
    --host 127.0.0.1 --port "${MLFLOW_PORT}" --workers 1
}

main "$@"
