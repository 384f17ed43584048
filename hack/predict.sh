#!/usr/bin/env bash
# Classifies images through the model server: test samples of DATASET by default, or the
# files in IMAGES. Extra arguments go to jobs.predict (e.g. --check --min-accuracy 0.8).
#   URL (http://127.0.0.1:PORT)  the server       WORK_DIR (.work)  the local work dir
#   DATASET (fashion_mnist)      test samples     SAMPLES (10)      how many
#   IMAGES                       space-separated PNG/JPEG paths to classify instead
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
PORT=${PORT:-8501}
URL=${URL:-http://127.0.0.1:${PORT}}
WORK_DIR=${WORK_DIR:-.work}
DATASET=${DATASET:-fashion_mnist}
SAMPLES=${SAMPLES:-10}
IMAGES=${IMAGES:-}

main() {
  local python="${VENV}/bin/python"
  if [[ -n "${IMAGES}" ]]; then
    local images=()
    read -r -a images <<< "${IMAGES}"
    exec "${python}" -m jobs.predict --url "${URL}" "$@" "${images[@]}"
  fi
  exec "${python}" -m jobs.predict --url "${URL}" --work-dir "${WORK_DIR}" --dataset "${DATASET}" \
    --samples "${SAMPLES}" "$@"
}

main "$@"
