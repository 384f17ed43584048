#!/usr/bin/env bash
# `make status`: one screen. Local mode: the served version, the runs and their candidates, the
# tracking store (jobs/local/status.py). The cluster: the components, the last workflows, the served
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
  section "nodes"
  kubectl get nodes -o wide 2>&1 | cut -c1-120
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
  section "served model (GET /v1/models/fmnist on a model server, through the API server's pod proxy)"
  served_model
}

# The Service has no endpoint until a model is loaded (readiness), so ask a running pod: it
# answers 404 while no model is served, which is the normal state before the first pipeline.
served_model() {
  local pod out
  pod=$(kubectl get pods -n "${NAMESPACE}" -l app.kubernetes.io/name=tf-serving --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  if [[ -z "${pod}" ]]; then
    echo "no model server is running (kubectl get pods -n ${NAMESPACE} -l app.kubernetes.io/name=tf-serving)"
  elif out=$(kubectl get --raw "/api/v1/namespaces/${NAMESPACE}/pods/${pod}:8501/proxy/v1/models/fmnist" 2>&1); then
    echo "${pod}: $(tr -d ' \n' <<<"${out}" | cut -c1-300)"
  elif [[ "${out}" == *NotFound* || "${out}" == *"(404)"* ]]; then
    echo "no model served yet: ${pod} is up and has not loaded one (the first 'make pipeline' promotes one)"
  else
    echo "${pod} does not answer: $(head -n 1 <<<"${out}")"
  fi
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
