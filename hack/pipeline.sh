#!/usr/bin/env bash
# `make pipeline`: submit workflows/e2e.yaml with the image `make image` built for this tree,
# then follow it until it ends (PIPELINE_TIMEOUT); on failure print what went wrong.
#   DATASET EPOCHS PATIENCE WORKERS MODELS MIN_ACCURACY (as for make local): each one set becomes the
#   workflow parameter of that name, an empty one leaves workflows/e2e.yaml's default;
#   IMAGE (default: [REGISTRY/]IMAGE_REPO tagged for this tree), NAMESPACE, PIPELINE_TIMEOUT (seconds, 7200)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

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
  local args=(-p "image=${IMAGE}") knob set=""
  for knob in DATASET EPOCHS PATIENCE WORKERS MODELS MIN_ACCURACY; do
    [[ -z "${!knob:-}" ]] || { args+=(-p "$(tr '[:upper:]_' '[:lower:]-' <<< "${knob}")=${!knob}"); set+=" ${knob}=${!knob}"; }
  done
  local name
  name=$(argo submit -n "${NAMESPACE}" workflows/e2e.yaml "${args[@]}" -o name)
  info "submitted ${name} (${IMAGE};${set:- the defaults of workflows/e2e.yaml})"
  info "follow it: argo watch -n ${NAMESPACE} ${name}   or the UI: make cluster-ui"
  follow_workflow "${name}" "${PIPELINE_TIMEOUT}"
  argo get -n "${NAMESPACE}" "${name}"
  info "${name} succeeded; the served version: make status"
}

main "$@"
