#!/usr/bin/env bash
# Serves the MLflow UI over the local tracking store that `make local` writes.
#   WORK_DIR (.work)   the local work dir      MLFLOW_PORT (5000)   port on 127.0.0.1
# MLflow's own lines (its start-up notes, each request) go to <WORK_DIR>/logs/mlflow-ui.log; the
# terminal shows where to look, and the log's last lines if the UI fails.
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
  local url="http://127.0.0.1:${MLFLOW_PORT}" experiment
  # The experiment's page in the UI's model-training view (the sidebar's "Model training"
  # switch; without it MLflow 3.17's UI opens experiments in its GenAI view).
  experiment=$("${VENV}/bin/python" - "${store}" "${MLFLOW_EXPERIMENT_NAME:-fmnist}" <<'PY' || true
import sqlite3, sys
row = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute(
    "SELECT experiment_id FROM experiments WHERE name = ?", (sys.argv[2],)).fetchone()
print(row[0] if row else "")
PY
)
  # Only the UI: no job runner (7 more processes and about 1 GiB), one web worker; quiet about
  # a deprecation inside MLflow that a user cannot act on.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
  export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true} # no usage telemetry unless asked
  export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore:starlette.middleware.wsgi is deprecated}
  local log="${WORK_DIR}/logs/mlflow-ui.log"
  mkdir -p "${WORK_DIR}/logs"
  echo ">> MLflow UI on ${url} (Ctrl-C stops it; log: ${log})"
  if [[ -n "${experiment}" ]]; then
    echo ">> runs of the experiment: ${url}/#/experiments/${experiment}/runs?workflowType=machine_learning"
  fi
  echo ">> registered model: ${url}/#/models/fmnist (docs/tracking.md: where to look for what)"
  # In the foreground: Ctrl-C reaches it (uvicorn's traceback of its cancelled lifespan task
  # goes to the log with the rest). A stop asked for ends with status 0: make adds no error line.
  local status=0 stopping=""
  trap 'stopping=1' INT TERM HUP
  "${VENV}/bin/mlflow" ui --backend-store-uri "sqlite:///$(cd "$(dirname "${store}")" && pwd)/mlflow.db" \
    --host 127.0.0.1 --port "${MLFLOW_PORT}" --workers 1 >> "${log}" 2>&1 || status=$?
  if [[ -n "${stopping}" || "${status}" == 0 ]]; then
    echo ">> MLflow UI stopped"
    return 0
  fi
  echo "error: the MLflow UI exited with ${status}; the last lines of ${log}:" >&2
  tail -n 15 "${log}" >&2
  return 1
}

main "$@"
