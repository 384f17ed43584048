#!/usr/bin/env bash
# MLflow's own scoring server (`mlflow models serve`) on the registered champion of the local
# tracking store that `make local` writes: POST /invocations with {"inputs": {"pixels": ...}}.
#   hack/mlflow-serve.sh         serve until Ctrl-C
#   hack/mlflow-serve.sh check   start it, send the model's own serving input example, check
#                                that class names come back as plain strings, stop it
#   WORK_DIR (.work)   the local work dir      MLFLOW_SERVE_PORT (5002)   port on 127.0.0.1
#   ENV_MANAGER (local)   local: this .venv; virtualenv: MLflow builds the model's own
#                         environment from its pinned requirements first (pyenv, TensorFlow: minutes)
#   MLFLOW_SERVE_READY_SECONDS (1800)   how long check waits for the server to answer /ping
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
MLFLOW_SERVE_PORT=${MLFLOW_SERVE_PORT:-5002}
ENV_MANAGER=${ENV_MANAGER:-local}
MLFLOW_SERVE_READY_SECONDS=${MLFLOW_SERVE_READY_SECONDS:-1800}
MODEL_URI=models:/fmnist@champion
SERVER_PID=

cleanup() {
  if [[ -n "${SERVER_PID}" ]]; then
    kill -TERM -- "-${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
  fi
}

SERVE=("${VENV}/bin/mlflow" models serve -m "${MODEL_URI}" --env-manager "${ENV_MANAGER}"
  --host 127.0.0.1 --port "${MLFLOW_SERVE_PORT}")

check() {
  local url="http://127.0.0.1:${MLFLOW_SERVE_PORT}" log started waited
  log=$(mktemp -t mlflow-serve.XXXXXX)
  trap cleanup EXIT
  started=$(date +%s)
  setsid "${SERVE[@]}" >"${log}" 2>&1 &
  SERVER_PID=$!
  echo ">> waiting for ${MODEL_URI} on ${url} (env manager ${ENV_MANAGER}; log ${log})"
  until curl -fsS "${url}/ping" >/dev/null 2>&1; do
    waited=$(( $(date +%s) - started ))
    if ! kill -0 "${SERVER_PID}" 2>/dev/null || (( waited > MLFLOW_SERVE_READY_SECONDS )); then
      echo "error: mlflow models serve did not answer /ping after ${waited} s; its last lines:" >&2
      tail -n 20 "${log}" >&2
      exit 1
    fi
    sleep 2
  done
  echo ">> serving after $(( $(date +%s) - started )) s"
  "${VENV}/bin/python" - "${url}" "${MODEL_URI}" <<'PY'
import json, sys, urllib.request

import mlflow

from jobs.ingest.data import CLASS_NAMES

url, model_uri = sys.argv[1:]
folder = mlflow.artifacts.download_artifacts(model_uri)
body = open(f"{folder}/serving_input_example.json", "rb").read()
request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
predictions = json.load(urllib.request.urlopen(request, timeout=120))["predictions"]
names = predictions["class_name"]
if not names or any(name not in CLASS_NAMES for name in names):
    sys.exit(f"error: /invocations answered class names that are not plain class names: {names}")
print(f">> /invocations: {len(names)} images classified as {', '.join(names)}")
PY
}

main() {
  local store="${WORK_DIR}/mlflow/mlflow.db"
  if [[ ! -f "${store}" ]]; then
    echo "error: no tracking store at ${store}: run 'make local' first (or set WORK_DIR)" >&2
    exit 1
  fi
  case "${ENV_MANAGER}" in
    local | virtualenv | uv | conda) ;;
    *) echo "error: ENV_MANAGER must be local, virtualenv, uv or conda, not '${ENV_MANAGER}'" >&2; exit 1 ;;
  esac
  MLFLOW_TRACKING_URI="sqlite:///$(cd "$(dirname "${store}")" && pwd)/mlflow.db"
  # MLflow starts the scoring server as `uvicorn` from PATH.
  local bin
  bin="$(cd "${VENV}" && pwd)/bin"
  export MLFLOW_TRACKING_URI PYTHONPATH="${PWD}" PATH="${bin}:${PATH}"
  export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true} # no usage telemetry unless asked
  case "${1:-serve}" in
    serve)
      echo ">> ${MODEL_URI} on http://127.0.0.1:${MLFLOW_SERVE_PORT}/invocations (Ctrl-C stops it)"
      exec "${SERVE[@]}"
      ;;
    check) check ;;
    *) echo "usage: $0 [serve|check]" >&2; exit 2 ;;
  esac
}

main "$@"
