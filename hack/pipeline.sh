#!/usr/bin/env bash
# `make pipeline`: submit workflows/e2e.yaml with the image `make image` built for this tree,
# then follow it until it ends (PIPELINE_TIMEOUT); on failure print what went wrong.
#   DATASET EPOCHS WORKERS MODELS (as for make local), MIN_ACCURACY (optional),
#   IMAGE (default: [REGISTRY/]IMAGE_REPO tagged for this tree), NAMESPACE, PIPELINE_TIMEOUT (seconds, 7200)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

DATASET=${DATASET:-fashion_mnist}
EPOCHS=${EPOCHS:-5}
WORKERS=${WORKERS:-2}
MODELS=${MODELS:-cnn,dropout,batchnorm}
MIN_ACCURACY=${MIN_ACCURACY:-}
PIPELINE_TIMEOUT=${PIPELINE_TIMEOUT:-7200}
IMAGE=${IMAGE:-}

main() {
  require kubectl argo
  require_cluster
  if [[ -z "${IMAGE}" ]]; then
    # The workflow runs IMAGE plus the cluster's variant suffix (-gpu with the gpu component).
    IMAGE="$(image_repo):$(image_tag)"
    local suffix recorded hint=""
    suffix=$(kubectl get configmap fmnist-pipeline -n "${NAMESPACE}" -o jsonpath='{.data.image-suffix}' 2>/dev/null || true)
    recorded=$(kubectl get configmap fmnist-image -n "${NAMESPACE}" -o "jsonpath={.data.imported${suffix}}" 2>/dev/null || true)
    [[ -z "${suffix}" ]] || hint=" GPU=1"
    [[ "${recorded}" == "${IMAGE}" ]] \
      || die "${IMAGE}${suffix} (this tree) was not imported into the cluster (last import: ${recorded:+${recorded}${suffix}}${recorded:-none}): run 'make image${hint}'"
  fi
  local args=(-p "image=${IMAGE}" -p "dataset=${DATASET}" -p "epochs=${EPOCHS}" -p "workers=${WORKERS}" -p "models=${MODELS}")
  [[ -z "${MIN_ACCURACY}" ]] || args+=(-p "min-accuracy=${MIN_ACCURACY}")
  local name
  name=$(argo submit -n "${NAMESPACE}" workflows/e2e.yaml "${args[@]}" -o name)
  info "submitted ${name} (${IMAGE}, ${DATASET}, ${EPOCHS} epochs, ${WORKERS} workers, ${MODELS})"
  info "follow it: argo watch -n ${NAMESPACE} ${name}   or the UI: make cluster-ui"
  follow_workflow "${name}" "${PIPELINE_TIMEOUT}"
  argo get -n "${NAMESPACE}" "${name}"
  info "${name} succeeded; the served version: make status"
}

main "$@"
