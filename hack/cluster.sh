#!/usr/bin/env bash
# `make cluster`: create the k3d cluster from infra/k3d.yaml, or reuse (and start) it if it
# exists, then wait until its node and system add-ons are ready. `make down`: delete it.
#   hack/cluster.sh up|down      CLUSTER (default fmnist)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

exists() { k3d cluster get "${CLUSTER}" >/dev/null 2>&1; }

up() {
  require docker k3d kubectl
  if exists; then
    info "reusing the k3d cluster ${CLUSTER}"
    k3d cluster start "${CLUSTER}" --wait >/dev/null
    k3d kubeconfig merge "${CLUSTER}" --kubeconfig-merge-default --kubeconfig-switch-context >/dev/null
  else
    info "creating the k3d cluster ${CLUSTER} from infra/k3d.yaml"
    k3d cluster create "${CLUSTER}" --config infra/k3d.yaml
  fi
  info "waiting for the node and k3s's add-ons (up to ${WAIT_TIMEOUT})"
  if ! kubectl wait --for=condition=Ready nodes --all --timeout="${WAIT_TIMEOUT}"; then
    kubectl get nodes -o wide >&2 || true
    kubectl describe nodes 2>&1 | tail -n 40 >&2 || true
    die "the node of ${CLUSTER} is not ready within ${WAIT_TIMEOUT}"
  fi
  # metrics-server feeds TF Serving's autoscaler; local-path provides the volumes. k3s creates
  # them a little after the node is Ready: wait for them to exist, then to roll out.
  local addon
  for addon in local-path-provisioner:app=local-path-provisioner metrics-server:k8s-app=metrics-server; do
    wait_created kube-system "deployment/${addon%%:*}"
    wait_rollout kube-system "${addon%%:*}" "${addon#*:}"
  done
  info "cluster ${CLUSTER} is ready (context $(kubectl config current-context)); next: make deploy"
}

down() {
  require k3d
  if exists; then
    k3d cluster delete "${CLUSTER}"
  else
    info "no k3d cluster ${CLUSTER}: nothing to delete"
  fi
}

main() {
  case "${1:-}" in
    up) up ;;
    down) down ;;
    *) die "usage: hack/cluster.sh up|down (got '${1:-}')" ;;
  esac
}

main "$@"
