#!/usr/bin/env bash
# Serves the MLflow UI over the local tracking store that `make local` writes.
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
  echo ">> MLflow UI on http://127.0.0.1:${MLFLOW_PORT} (Ctrl-C stops it)"
  exec "${VENV}/bin/mlflow" ui --backend-store-uri "sqlite:///$(cd "$(dirname "${store}")" && pwd)/mlflow.db" \
    --host 127.0.0.1 --port "${MLFLOW_PORT}"
}

main "$@"
