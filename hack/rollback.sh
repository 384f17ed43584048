#!/usr/bin/env bash
# `make rollback`: serve an earlier version again, deleting nothing (python -m jobs.rollback:
# the version's files re-published as the next version, MLflow's alias champion moved, the
# server checked before and after).
#   WHERE (local | cluster)   local: WORK_DIR and the server at PREDICT_URL (http://127.0.0.1:PORT);
#                             cluster: workflows/rollback.yaml in NAMESPACE, followed to its end
#   TO (empty: the version served before the current one)   REASON (required: recorded)
#   IMAGE (cluster; default: the one make image last imported)   ROLLBACK_TIMEOUT (seconds, 900)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
PORT=${PORT:-8501}
PREDICT_URL=${PREDICT_URL:-http://127.0.0.1:${PORT}}
WHERE=${WHERE:-local}
TO=${TO:-}
REASON=${REASON:-}
IMAGE=${IMAGE:-}
ROLLBACK_TIMEOUT=${ROLLBACK_TIMEOUT:-900}

local_rollback() {
  local args=(--work-dir "${WORK_DIR}" --url "${PREDICT_URL}" --reason "${REASON}")
  [[ -z "${TO}" ]] || args+=(--to "${TO}")
  info "rolling back ${WORK_DIR}/models/fmnist${TO:+ to version ${TO}}; the server at ${PREDICT_URL} is checked before and after"
  FMNIST_KNOBS="PREDICT_URL=--url TO=--to REASON=--reason WORK_DIR=--work-dir" "${VENV}/bin/python" -m jobs.rollback "${args[@]}"
  info "rolled back; the served history: make status"
}

cluster_rollback() {
  require kubectl argo
  require_cluster
  local args=(-p "reason=${REASON}" -p "actor=${USER:-$(id -un)}@$(hostname)")
  [[ -z "${TO}" ]] || args+=(-p "to=${TO}")
  [[ -z "${IMAGE}" ]] || args+=(-p "image=${IMAGE}")
  local name
  name=$(argo submit -n "${NAMESPACE}" workflows/rollback.yaml "${args[@]}" -o name)
  info "submitted ${name}: python -m jobs.rollback in the cluster${TO:+, to version ${TO}}"
  follow_workflow "${name}" "${ROLLBACK_TIMEOUT}"
  argo logs -n "${NAMESPACE}" "${name}" --tail 20
  info "${name} succeeded; the served version: make status"
}

main() {
  [[ -n "${REASON//[[:space:]]/}" ]] || die 'REASON="..." is required: say why (it is recorded with the rollback)'
  case "${WHERE}" in
    local) local_rollback ;;
    cluster) cluster_rollback ;;
    *) die "WHERE must be local or cluster, not '${WHERE}'" ;;
  esac
}

main "$@"
