#!/usr/bin/env bash
# `make status`: one screen: the components, the last workflows, the served model version.
#   NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

section() { printf '\n\033[1m%s\033[0m\n' "$*"; }

main() {
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

main "$@"
