#!/usr/bin/env bash
# Serves the promoted model (<WORK_DIR>/models/fmnist) with TF Serving's REST API on PORT.
# New versions promoted while it runs are picked up without a restart. Ctrl-C stops it.
#   SERVE_HOST (127.0.0.1)  address to listen on      PORT (8501)        port
#   WORK_DIR (.work)  the local work dir        SERVE_ARGS         more flags for jobs.serve
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
SERVE_HOST=${SERVE_HOST:-127.0.0.1}
PORT=${PORT:-8501}
SERVE_ARGS=${SERVE_ARGS:-}

main() {
  local base="${WORK_DIR}/models/fmnist"
  if [[ ! -d "${base}" ]]; then
    echo "error: no served models under ${base}: run 'make local' (or promote a model) first" >&2
    exit 1
  fi
  local extra=()
  read -r -a extra <<< "${SERVE_ARGS}"
  echo ">> serving ${base} on http://${SERVE_HOST}:${PORT} (Ctrl-C stops it; make predict in another terminal)"
  exec "${VENV}/bin/python" -m jobs.serve --model-base-path "${base}" --model-name fmnist \
    --host "${SERVE_HOST}" --port "${PORT}" "${extra[@]}"
}

main "$@"
