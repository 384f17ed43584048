#!/usr/bin/env bash
# `make image`: build the jobs image (infra/Dockerfile) tagged with the commit (plus
# `-dirty-<hash>` for uncommitted changes), import it into the k3d cluster, and record it in the
# ConfigMap fmnist-image so that a plain `argo submit workflows/e2e.yaml` uses it.
#   IMAGE_REPO (default fmnist-jobs), CLUSTER, NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

record() {
  local image=$1
  kubectl get namespace "${NAMESPACE}" >/dev/null 2>&1 || kubectl create namespace "${NAMESPACE}" >/dev/null
  kubectl create configmap fmnist-image -n "${NAMESPACE}" --from-literal=image="${image}" --dry-run=client -o yaml \
    | kubectl label --local -f - -o yaml \
        workflows.argoproj.io/configmap-type=Parameter \
        app.kubernetes.io/name=fmnist-pipeline app.kubernetes.io/part-of=fmnist app.kubernetes.io/managed-by=make-image \
    | kubectl apply --server-side --field-manager=fmnist-image -f - >/dev/null
}

main() {
  require git docker k3d kubectl
  k3d cluster get "${CLUSTER}" >/dev/null 2>&1 || die "no k3d cluster ${CLUSTER}: run 'make cluster' first"
  local image
  image="${IMAGE_REPO}:$(image_tag)"
  info "building ${image}"
  docker build --file infra/Dockerfile --tag "${image}" .
  info "importing ${image} into k3d cluster ${CLUSTER}"
  k3d image import "${image}" --cluster "${CLUSTER}"
  require_cluster
  record "${image}"
  info "${image} is the pipeline's default image (ConfigMap ${NAMESPACE}/fmnist-image); next: make pipeline"
}

main "$@"
