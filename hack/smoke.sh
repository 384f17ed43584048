#!/usr/bin/env bash
# `make smoke`: the serving contract tests against the cluster's model servers (through k3d's
# port mapping), then the pipeline's own smoke step (`jobs.predict --check` on the test split,
# which lives on the cluster's volume) as a one-step workflow.
#   CLUSTER_SERVING_URL (http://127.0.0.1:8511), DATASET, MIN_ACCURACY (empty: the workflow's defaults), IMAGE,
#   NAMESPACE, VENV
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

CLUSTER_SERVING_URL=${CLUSTER_SERVING_URL:-http://127.0.0.1:8511}
DATASET=${DATASET:-}
MIN_ACCURACY=${MIN_ACCURACY:-}
IMAGE=${IMAGE:-}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}

main() {
  require kubectl argo
  require_cluster
  info "serving contract tests against ${CLUSTER_SERVING_URL}"
  SERVING_URL="${CLUSTER_SERVING_URL}" hack/test.sh tests/serving/test_contract.py -q -p no:cacheprovider

  local args=(--entrypoint smoke)
  [[ -z "${DATASET}" ]] || args+=(-p "dataset=${DATASET}")
  [[ -z "${IMAGE}" ]] || args+=(-p "image=${IMAGE}")
  [[ -z "${MIN_ACCURACY}" ]] || args+=(-p "min-accuracy=${MIN_ACCURACY}")
  local name
  name=$(argo submit -n "${NAMESPACE}" workflows/e2e.yaml "${args[@]}" -o name)
  info "jobs.predict --check in the cluster: ${name}"
  follow_workflow "${name}" "${SMOKE_TIMEOUT}"
  argo logs -n "${NAMESPACE}" "${name}" --tail 10
  info "smoke passed"
}

main "$@"
