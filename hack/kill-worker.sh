#!/usr/bin/env bash
# A worker killed while it trains, as the OOM killer would: SIGKILL to one TFJob worker of the
# newest run, then wait until the training operator has recreated it (restartPolicy ExitCode:
# 137 is retried; its peer, which loses the collective, exits 203 and is recreated too). The
# pipeline itself must still succeed: the cluster CI job runs this beside `make pipeline`.
# It kills from the host, where a Linux Docker runs the k3d nodes' processes (a container's
# PID 1 ignores signals sent from inside the container): Linux with a local Docker only, sudo.
#   NAMESPACE, WAIT_TIMEOUT (for the worker to train, then to come back), TRAIN_FIRST (seconds
#   of training before the kill, 20)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

TRAIN_FIRST=${TRAIN_FIRST:-20}

# waited SECONDS COMMAND...: run COMMAND every 2 s until it succeeds, at most SECONDS.
waited() {
  local limit=$1 waited=0
  shift
  until "$@"; do
    (( waited < limit )) || return 1
    sleep 2
    waited=$((waited + 2))
  done
}

# The newest TFJob with a worker pod that has run for a while (so that it trains, not starts).
TFJOB=""
PODS=""
training() {
  TFJOB=$(kubectl get tfjobs -n "${NAMESPACE}" --sort-by=.metadata.creationTimestamp -o name 2>/dev/null | tail -n 1)
  TFJOB=${TFJOB#*/}
  [[ -n "${TFJOB}" ]] || return 1
  PODS=$(kubectl get pods -n "${NAMESPACE}" -l "training.kubeflow.org/job-name=${TFJOB}" \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}')
  [[ $(grep -c . <<<"${PODS}") -ge 2 ]] || return 1
  pgrep -f "$(workers)" >/dev/null
}

# The command line of TFJOB's workers (<workflow>-<model>; jobs/steps.py's train arguments).
workers() { echo "jobs.train .*--run-id ${TFJOB%-*} .*--model ${TFJOB##*-}( |$)"; }

recreated() {
  local now
  now=$(kubectl get pods -n "${NAMESPACE}" -l "training.kubeflow.org/job-name=${TFJOB}" \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}')
  [[ $(grep -c . <<<"${now}") -ge 2 ]] && grep -vxF -f <(echo "${PODS}") <<<"${now}" | grep -q .
}

main() {
  require kubectl
  command -v pgrep >/dev/null 2>&1 || die "pgrep not found (procps)"
  local limit=${WAIT_TIMEOUT%s} pid
  info "waiting for a TFJob whose workers train (up to ${WAIT_TIMEOUT})"
  waited "${limit}" training || die "no TFJob of ${NAMESPACE} trained within ${WAIT_TIMEOUT}"
  [[ "${TRAIN_FIRST}" =~ ^[0-9]+$ ]] || die "TRAIN_FIRST must be whole seconds, not '${TRAIN_FIRST}'"
  sleep "${TRAIN_FIRST}" # a few steps in
  pid=$(pgrep -f "$(workers)") || die "${TFJOB}'s workers are gone already"
  pid=${pid%%$'\n'*}
  info "SIGKILL to a worker of ${TFJOB} (host PID ${pid})"
  sudo kill -KILL "${pid}"
  if ! waited "${limit}" recreated; then
    kubectl get pods -n "${NAMESPACE}" -l "training.kubeflow.org/job-name=${TFJOB}" -o wide >&2 || true
    kubectl describe tfjob -n "${NAMESPACE}" "${TFJOB}" 2>&1 | tail -n 20 >&2 || true
    die "the operator did not recreate the killed worker of ${TFJOB} within ${WAIT_TIMEOUT}"
  fi
  info "the operator recreated the killed worker of ${TFJOB}; the run goes on"
}

main "$@"
