#!/usr/bin/env bash
# Runs the whole pipeline on this machine (jobs/local/runner.py): ingest, multi-worker training of
# each candidate, evaluation, promotion, and a check through a local model server.
#   WORK_DIR DATASET EPOCHS WORKERS MODELS MIN_ACCURACY PROMOTE ROLLOUT CANARY_SECONDS
#   INGEST_ARGS TRAIN_ARGS: the Makefile's knobs (make help); each one set is passed on, an
#   empty one leaves jobs.local's default (python -m jobs.local --help).
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  local args=() knob flag
  for knob in WORK_DIR DATASET EPOCHS WORKERS MODELS MIN_ACCURACY PROMOTE ROLLOUT CANARY_SECONDS INGEST_ARGS TRAIN_ARGS; do
    flag="--$(tr '[:upper:]_' '[:lower:]-' <<< "${knob}")"
    [[ -z "${!knob:-}" ]] || args+=("${flag}=${!knob}")
  done
  exec "${VENV}/bin/python" -m jobs.local "${args[@]}"
}

main "$@"
