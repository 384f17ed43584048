#!/usr/bin/env bash
# `make canary-end`: ends a canary of WORK_DIR from whatever state it was left in, by rolling it
# back (python -m jobs.canary --now rollback): the stable version's model is published again as
# the next version and served everywhere. With no canary record it reads the servers' pins (a
# run killed in the window); with nothing open it lifts any pin left behind. Needs no server.
#   WORK_DIR (.work)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}

main() {
  local run_id
  run_id="canary-end-$(date -u +%Y%m%d-%H%M%S)"
  info "ending the canary in ${WORK_DIR}, if one is open: rolled back (recorded as run ${run_id})"
  "${VENV}/bin/python" -m jobs.canary --work-dir "${WORK_DIR}" --run-id "${run_id}" --now rollback
  info "done; the served version and any pin: make status"
}

main "$@"
