#!/usr/bin/env bash
# Serves the promoted model (<WORK_DIR>/models/fmnist) with TF Serving's REST API on PORT.
# New versions promoted while it runs are picked up without a restart. Ctrl-C stops it. While
# it runs, <WORK_DIR>/monitor/targets/serve-<PORT>.json lists it for `make monitor`.
#   SERVE_HOST (127.0.0.1)  address to listen on      PORT (8501)        port
#   WORK_DIR (.work)  the local work dir        SERVE_ARGS         more flags for jobs.serve
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
SERVE_HOST=${SERVE_HOST:-127.0.0.1}
PORT=${PORT:-8501}
SERVE_ARGS=${SERVE_ARGS:-}
TARGETS="" # this server's entry for make monitor (Prometheus's file-based service discovery)

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() { [[ -z "${TARGETS}" ]] || rm -f "${TARGETS}"; }

# Lists this server where `make monitor`'s Prometheus looks (written whole: temp file, rename).
register() {
  local dir="${WORK_DIR}/monitor/targets" tmp
  mkdir -p "${dir}"
  tmp=$(mktemp "${dir}/.serve-${PORT}.XXXXXX")
  printf '[{"targets": ["127.0.0.1:%s"], "labels": {"track": "serve"}}]\n' "${PORT}" > "${tmp}"
  TARGETS="${dir}/serve-${PORT}.json"
  mv -f "${tmp}" "${TARGETS}"
}

main() {
  local base="${WORK_DIR}/models/fmnist"
  if [[ ! -d "${base}" ]]; then
    echo "error: no served models under ${base}: run 'make local' (or promote a model) first" >&2
    exit 1
  fi
  local extra=()
  read -r -a extra <<< "${SERVE_ARGS}"
  trap cleanup EXIT
  register
  echo ">> serving ${base} on http://${SERVE_HOST}:${PORT} (Ctrl-C stops it; make predict in another terminal)"
  # In the foreground (not exec'd): Ctrl-C reaches the server, and then the trap unlists it.
  FMNIST_KNOBS="SERVE_HOST=--host PORT=--port" "${VENV}/bin/python" -m jobs.serve --model-base-path "${base}" --model-name fmnist \
    --host "${SERVE_HOST}" --port "${PORT}" "${extra[@]}"
}

main "$@"
