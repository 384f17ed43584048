#!/usr/bin/env bash
# What a person needs after a failed cluster run (CI calls it when a step fails): make status,
# the last workflow with its TFJobs and logs, every pod that is not running or succeeded with
# its description and logs, the operator's and Argo's logs, recent events. Never fails.
#   NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

section() { printf '\n==== %s\n' "$*"; }

main() {
  set +o errexit
  section "make status"
  hack/status.sh
  section "nodes and pods"
  kubectl get nodes -o wide
  kubectl get pods -A -o wide
  local wf
  wf=$(kubectl get workflows -n "${NAMESPACE}" --sort-by=.metadata.creationTimestamp -o name 2>/dev/null | tail -n 1)
  if [[ -n "${wf}" ]]; then
    section "last workflow ${wf#*/}"
    explain_workflow "${wf#*/}"
  fi
  local pod
  for pod in $(kubectl get pods -n "${NAMESPACE}" --field-selector=status.phase!=Running,status.phase!=Succeeded -o name 2>/dev/null); do
    section "${pod}"
    kubectl describe -n "${NAMESPACE}" "${pod}" | tail -n 40
    kubectl logs -n "${NAMESPACE}" "${pod}" --all-containers --tail=50
  done
  section "training operator"
  kubectl logs -n "${OPERATOR_NAMESPACE}" deployment/training-operator --tail=50
  section "workflow controller"
  kubectl logs -n "${NAMESPACE}" deployment/workflow-controller --tail=50
  section "events"
  kubectl get events -A --sort-by=.lastTimestamp | tail -n 40
  return 0
}

main "$@"
