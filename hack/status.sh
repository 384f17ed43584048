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

main "$@"
