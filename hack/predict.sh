#!/usr/bin/env bash
# Classifies images through the model server: test samples by default, or the files in IMAGES.
# Extra arguments go to jobs.predict (e.g. --check --min-accuracy 0.8).
#   PREDICT_URL (http://127.0.0.1:PORT)  the server; unset means the local one (`make serve`),
#                                given up to PREDICT_WAIT seconds to serve the stable track's version in WORK_DIR;
#                                nothing listening there (connection refused) fails within REFUSED_SECONDS,
#                                unless a `make serve` on PORT is starting (it lists itself for make monitor)
#   WORK_DIR (.work)             the local work dir    SAMPLES (10)   how many test samples
#   DATASET                      whose test samples (default: the served model's dataset)
#   IMAGES                       space-separated PNG/JPEG paths to classify instead
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
PORT=${PORT:-8501}
PREDICT_URL=${PREDICT_URL:-}
WORK_DIR=${WORK_DIR:-.work}
DATASET=${DATASET:-}
SAMPLES=${SAMPLES:-10}
IMAGES=${IMAGES:-}
PREDICT_WAIT=${PREDICT_WAIT:-60}
REFUSED_SECONDS=3 # a server that refuses connections this long is not starting: it is not there

main() {
  local args=(--url "${PREDICT_URL:-http://127.0.0.1:${PORT}}" --work-dir "${WORK_DIR}")
  # Which knob each flag came from, for jobs.predict's errors.
  export FMNIST_KNOBS="PREDICT_URL=--url SAMPLES=--samples DATASET=--dataset PREDICT_WAIT=--timeout"
  if [[ -z "${PREDICT_URL}" ]]; then
    FMNIST_KNOBS+=" PORT=--url"
    args+=(--wait-version stable --timeout "${PREDICT_WAIT}") # make serve follows the stable track
    [[ -f "${WORK_DIR}/monitor/targets/serve-${PORT}.json" ]] || args+=(--refused-timeout "${REFUSED_SECONDS}")
  fi
  if [[ -n "${IMAGES}" ]]; then
    local images=()
    read -r -a images <<< "${IMAGES}"
    exec "${VENV}/bin/python" -m jobs.predict "${args[@]}" "$@" -- "${images[@]}"
  fi
  args+=(--samples "${SAMPLES}")
  if [[ -n "${DATASET}" ]]; then
    args+=(--dataset "${DATASET}")
  fi
  exec "${VENV}/bin/python" -m jobs.predict "${args[@]}" "$@"
}

main "$@"
