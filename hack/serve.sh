#!/usr/bin/env bash
# Serves the promoted model (<WORK_DIR>/models/fmnist) with TF Serving's REST API on PORT.
# New versions promoted while it runs are picked up without a restart. Ctrl-C stops it. While
# it runs, <WORK_DIR>/monitor/targets/serve-<PORT>.json lists it for `make monitor` (and tells
# `make predict` that a server is starting there). Its whole output is in <WORK_DIR>/logs/serve-<PORT>.log;
# the terminal shows what is meant for a person (not TensorFlow's start-up notes: jobs.core.noise).
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
  local base="${WORK_DIR}/models/fmnist" config="${WORK_DIR}/models/serving.config"
  if [[ ! -d "${base}" ]]; then
    echo "error: no served models under ${base}: run 'make local' (or promote a model) first" >&2
    exit 1
  fi
  # As a stable replica: the versions the stable track's config file pins (the newest one, except
  # while a canary runs), re-read as promote, the canary step and rollback change it. A work dir
  # from before that file existed, or moved since (the file names the folder by its absolute
  # path), serves the newest version in the folder.
  local models=(--model-base-path "${base}" --model-name fmnist) what="${base}"
  if [[ -f "${config}" ]] && grep -qF "base_path: \"$(cd "${base}" && pwd)\"" "${config}"; then
    models=(--model-config-file "${config}")
    what="the stable track of ${base} (${config})"
  fi
  local extra=()
  read -r -a extra <<< "${SERVE_ARGS}"
  trap cleanup EXIT
  register
  local log="${WORK_DIR}/logs/serve-${PORT}.log"
  mkdir -p "${WORK_DIR}/logs"
  echo ">> serving ${what} on http://${SERVE_HOST}:${PORT} (Ctrl-C stops it; make predict in another terminal; log: ${log})"
  # In the foreground (not exec'd): Ctrl-C reaches the server, and then the trap unlists it. Its
  # stderr goes through the filter (which outlasts Ctrl-C to show the server's last lines). A stop
  # asked for ends with status 0, so that make adds no error line of its own.
  local status=0 stopping=""
  trap 'stopping=1' INT TERM HUP
  { FMNIST_KNOBS="SERVE_HOST=--host PORT=--port" "${VENV}/bin/python" -m jobs.serve "${models[@]}" \
      --host "${SERVE_HOST}" --port "${PORT}" "${extra[@]}" 2>&1 1>&3 3>&- \
      | (trap '' INT TERM HUP; exec "${VENV}/bin/python" -m jobs.core.noise "${log}"); } 3>&1 || status=$?
  [[ -z "${stopping}" ]] || status=0
  return "${status}"
}

main "$@"
