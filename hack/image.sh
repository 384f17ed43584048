#!/usr/bin/env bash
# `make image`: build the jobs image (infra/Dockerfile) tagged with the commit (plus
# `-dirty-<hash>` for uncommitted changes), import it into the k3d cluster, and record it in the
# ConfigMap fmnist-image so that a plain `argo submit workflows/e2e.yaml` uses it.
# `make image GPU=1` builds the GPU variant from requirements/jobs-gpu.txt, tagged <tag>-gpu:
# the workflow uses it where the gpu component is deployed (it sets the suffix).
# `make image PUSH=1 REGISTRY=<registry>` pushes the image to that registry instead of importing
# it into k3d (a real cluster pulls it from there).
#   GPU (0), PUSH (0), REGISTRY, IMAGE_REPO (default fmnist-jobs), CLUSTER, NAMESPACE
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

GPU=${GPU:-0}
PUSH=${PUSH:-0}

# record BASE SUFFIX: the ConfigMap fmnist-image says which image the workflow runs (`image`, the
# tag without a variant suffix: the cluster's variant is the gpu component's business) and
# which variants of it were imported (`imported` for the CPU image, `imported-gpu`), merged so
# that importing one variant keeps the other's record.
record() {
  local base=$1 suffix=$2
  kubectl get namespace "${NAMESPACE}" >/dev/null 2>&1 || kubectl create namespace "${NAMESPACE}" >/dev/null
  if ! kubectl get configmap fmnist-image -n "${NAMESPACE}" >/dev/null 2>&1; then
    kubectl create configmap fmnist-image -n "${NAMESPACE}" --dry-run=client -o yaml \
      | kubectl label --local -f - -o yaml \
          workflows.argoproj.io/configmap-type=Parameter \
          app.kubernetes.io/name=fmnist-pipeline app.kubernetes.io/component=pipeline \
          app.kubernetes.io/part-of=fmnist app.kubernetes.io/managed-by=make-image \
      | kubectl create -f - >/dev/null
  fi
  kubectl patch configmap fmnist-image -n "${NAMESPACE}" --type merge \
    -p "{\"data\": {\"image\": \"${base}\", \"imported${suffix}\": \"${base}\"}}" >/dev/null
}

main() {
  local requirements=requirements/jobs.txt suffix=""
  case "${GPU}" in
    0) ;;
    1) requirements=requirements/jobs-gpu.txt suffix=-gpu ;;
    *) die "GPU must be 0 or 1, not '${GPU}'" ;;
  esac
  [[ -f "${requirements}" ]] || die "${requirements} does not exist: the GPU variant installs that lock (tensorflow[and-cuda]); run 'make lock'"
  case "${PUSH}" in
    0)
      require git docker k3d kubectl
      k3d cluster get "${CLUSTER}" >/dev/null 2>&1 || die "no k3d cluster ${CLUSTER}: run 'make cluster' first (or PUSH=1 REGISTRY=... for another cluster)"
      ;;
    1)
      [[ -n "${REGISTRY}" ]] || die "PUSH=1 needs REGISTRY, the registry your cluster pulls from (e.g. ghcr.io/<you>)"
      require git docker kubectl
      ;;
    *) die "PUSH must be 0 or 1, not '${PUSH}'" ;;
  esac
  local base image
  base="$(image_repo):$(image_tag)"
  image="${base}${suffix}"
  info "building ${image} from ${requirements}"
  docker build --file infra/Dockerfile --build-arg "REQUIREMENTS=${requirements}" --tag "${image}" .
  if [[ "${PUSH}" == 1 ]]; then
    info "pushing ${image} (docker login ${REGISTRY%%/*} first if it asks)"
    docker push "${image}"
  else
    info "importing ${image} into k3d cluster ${CLUSTER}"
    k3d image import "${image}" --cluster "${CLUSTER}"
  fi
  require_cluster
  record "${base}" "${suffix}"
  info "${image} is the pipeline's image (ConfigMap ${NAMESPACE}/fmnist-image); next: make pipeline"
}

main "$@"
