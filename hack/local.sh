#!/usr/bin/env bash
# Runs the whole pipeline on this machine (jobs/local/runner.py): ingest, multi-worker training of
# each candidate, evaluation, promotion, and a check through a local model server.
#   LOCAL_KNOBS: the Makefile's knobs that become jobs.local's flags (EPOCHS: --epochs, ...);
#   each one set is passed on, an empty one leaves jobs.local's default (python -m jobs.local --help).
#   FMNIST_KNOBS tells jobs.local which knob each flag came from, so its errors name the knob.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  local args=() knob flag knobs=()
  : "${LOCAL_KNOBS:?is set by the Makefile: run make local}"
  for knob in ${LOCAL_KNOBS}; do
    flag="--$(tr '[:upper:]_' '[:lower:]-' <<< "${knob}")"
    knobs+=("${knob}=${flag}")
    [[ -z "${!knob:-}" ]] || args+=("${flag}=${!knob}")
  done
  FMNIST_KNOBS="${knobs[*]}" exec "${VENV}/bin/python" -m jobs.local "${args[@]}"
}

main "$@"
