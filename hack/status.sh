#!/usr/bin/env bash
# `make status`: one screen. Local mode: the served version, the runs and their candidates, the
# tracking store (jobs/status.py). The cluster: the components, the last workflows, the served
# model version. By default the local part, then the cluster's when kubectl reaches one.
#   STATUS (auto | local | cluster)   WORK_DIR (.work)   PORT (8501)   NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

section() { printf '\n\033[1m%s\033[0m\n' "$*"; }

cluster_status() {
  require kubectl
  require_cluster
  section "components"
  kubectl get deployments -n "${OPERATOR_NAMESPACE}" -o wide 2>&1 | cut -c1-120
  kubectl get deployments,hpa -n "${NAMESPACE}" 2>&1 | cut -c1-120
  section "pipeline image"
  kubectl get configmap fmnist-image -n "${NAMESPACE}" -o jsonpath='{.data.image}{"\n"}' 2>/dev/null || echo "none imported yet (make image)"
  section "last workflows"
  kubectl get workflows -n "${NAMESPACE}" --sort-by=.metadata.creationTimestamp \
    -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,PROGRESS:.status.progress,STARTED:.status.startedAt,FINISHED:.status.finishedAt \
    2>&1 | tail -n 4
  kubectl get tfjobs -n "${NAMESPACE}" --sort-by=.metadata.creationTimestamp 2>&1 | tail -n 4
  section "served model (GET /v1/models/fmnist through the API server's service proxy)"
  kubectl get --raw "/api/v1/namespaces/${NAMESPACE}/services/tf-serving:http/proxy/v1/models/fmnist" 2>&1 | tr -d ' \n' | cut -c1-300
  echo
}

local_status() {
  section "local (${WORK_DIR:-.work})"
  if [[ ! -x "${VENV:-.venv}/bin/python" ]]; then
    echo "no virtualenv at ${VENV:-.venv} yet: make local creates it"
    return 0
  fi
  "${VENV:-.venv}/bin/python" -m jobs.status --work-dir "${WORK_DIR:-.work}" --url "http://127.0.0.1:${PORT:-8501}"
}

main() {
  case "${STATUS:-auto}" in
    local) local_status ;;
    cluster) cluster_status ;;
    auto)
      local_status
      if command -v kubectl >/dev/null 2>&1 && kubectl version --request-timeout=5s >/dev/null 2>&1; then
        cluster_status
      else
        section "cluster"
        echo "none answers on kubectl's current context (make cluster deploy; STATUS=cluster shows why)"
      fi
      ;;
    *) die "STATUS must be auto, local or cluster, not '${STATUS}'" ;;
  esac
}

main "$@"
