#!/usr/bin/env bash
# `make cluster-ui`: port-forward the Argo UI and the MLflow UI to 127.0.0.1 and print the URLs
# (TF Serving is already on 127.0.0.1:8511 through k3d's load balancer). Ctrl-C stops them.
#   ARGO_PORT (2746), CLUSTER_MLFLOW_PORT (5001: MLFLOW_PORT, 5000, is make ui's), NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

ARGO_PORT=${ARGO_PORT:-2746}
CLUSTER_MLFLOW_PORT=${CLUSTER_MLFLOW_PORT:-5001}
CLUSTER_SERVING_URL=${CLUSTER_SERVING_URL:-http://127.0.0.1:8511}
PIDS=()

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "${pid}" 2>/dev/null || true; done
}

forward() {
  local target=$1 ports=$2
  kubectl port-forward -n "${NAMESPACE}" --address 127.0.0.1 "${target}" "${ports}" >/dev/null &
  PIDS+=("$!")
}

main() {
  require kubectl
  require_cluster
  trap cleanup EXIT
  forward service/argo-server "${ARGO_PORT}:2746"
  forward service/mlflow "${CLUSTER_MLFLOW_PORT}:5000"
  sleep 2
  local pid
  for pid in "${PIDS[@]}"; do
    kill -0 "${pid}" 2>/dev/null || die "a port-forward ended at once (port in use? set ARGO_PORT / CLUSTER_MLFLOW_PORT)"
  done
  echo "Argo UI    https://127.0.0.1:${ARGO_PORT}   (self-signed certificate; --auth-mode=server: no login)"
  echo "MLflow UI  http://127.0.0.1:${CLUSTER_MLFLOW_PORT}"
  echo "Serving    ${CLUSTER_SERVING_URL}/v1/models/fmnist   (k3d port mapping, all replicas)"
  echo "Ctrl-C to stop the port-forwards."
  while kill -0 "${PIDS[0]}" 2>/dev/null && kill -0 "${PIDS[1]}" 2>/dev/null; do sleep 2; done
  die "a port-forward ended (the pod restarted?); run make cluster-ui again"
}

main "$@"
