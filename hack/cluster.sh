#!/usr/bin/env bash
# `make cluster`: create the k3d cluster from infra/k3d.yaml, or reuse (and start) it if it
# exists, then wait until its nodes and system add-ons are ready. `make down`: delete it.
# `make cluster NODES=3`: one server and two agents; one host folder (SHARED_DIR) is mounted into
# every node at /var/lib/fmnist/shared, which kustomize/overlays/local-nodes serves as the
# ReadWriteMany work volume (make deploy picks that overlay on a multi-node k3d cluster).
#   hack/cluster.sh up|down      CLUSTER (default fmnist), NODES (1), SHARED_DIR
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

NODES=${NODES:-1}
SHARED_DIR=${SHARED_DIR:-${PWD}/.work/k3d-${CLUSTER}-shared}
# Where every node sees SHARED_DIR; kustomize/overlays/local-nodes/shared-volume.yaml serves it.
NODE_SHARED_PATH=/var/lib/fmnist/shared

exists() { k3d cluster get "${CLUSTER}" >/dev/null 2>&1; }

up() {
  [[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a whole number of nodes, 1 or more, not '${NODES}'"
  require docker k3d kubectl
  if exists; then
    info "reusing the k3d cluster ${CLUSTER}"
    k3d cluster start "${CLUSTER}" --wait >/dev/null
    k3d kubeconfig merge "${CLUSTER}" --kubeconfig-merge-default --kubeconfig-switch-context >/dev/null
    local have
    have=$(kubectl get nodes -o name | grep -c .)
    [[ "${have}" == "${NODES}" ]] \
      || die "the k3d cluster ${CLUSTER} has ${have} node(s), NODES=${NODES} asks for ${NODES}: 'make down' first, or leave NODES as it was"
  else
    local args=(--config infra/k3d.yaml)
    if (( NODES > 1 )); then
      [[ "${SHARED_DIR}" == /* ]] || die "SHARED_DIR must be an absolute path, not '${SHARED_DIR}'"
      # Pods write here as UID 10001, through every node.
      mkdir -p "${SHARED_DIR}"
      chmod 0777 "${SHARED_DIR}"
      args+=(--agents "$((NODES - 1))" --volume "${SHARED_DIR}:${NODE_SHARED_PATH}@server:*;agent:*")
      info "creating the k3d cluster ${CLUSTER} from infra/k3d.yaml with ${NODES} nodes sharing ${SHARED_DIR}"
    else
      info "creating the k3d cluster ${CLUSTER} from infra/k3d.yaml"
    fi
    k3d cluster create "${CLUSTER}" "${args[@]}"
  fi
  info "waiting for the nodes and k3s's add-ons (up to ${WAIT_TIMEOUT})"
  if ! kubectl wait --for=condition=Ready nodes --all --timeout="${WAIT_TIMEOUT}"; then
    kubectl get nodes -o wide >&2 || true
    kubectl describe nodes 2>&1 | tail -n 40 >&2 || true
    die "the nodes of ${CLUSTER} are not ready within ${WAIT_TIMEOUT}"
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
