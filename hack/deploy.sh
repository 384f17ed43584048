#!/usr/bin/env bash
# `make deploy`: apply Argo's CRDs, then the local overlay (the training operator, Argo, MLflow,
# TF Serving, the app's namespace, volume and RBAC), both with server-side apply; then wait until
# every component is ready.
#   COMPONENTS  comma-separated kustomize/components to add, e.g. gpu,arm64-serving
#   NAMESPACE, IMAGE_REPO, WAIT_TIMEOUT (default 300s per component)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

COMPONENTS=${COMPONENTS:-}
WORK=""   # a temp dir for the wrapper kustomization, removed on exit
TARGET="" # what to apply

cleanup() { [[ -z "${WORK}" ]] || rm -rf "${WORK}"; }

# TARGET: the overlay itself, or a wrapper kustomization that adds the components (and the jobs
# image's tag, which arm64-serving runs). In the repo, so that its paths are relative.
choose_target() {
  TARGET=kustomize/overlays/local
  [[ -n "${COMPONENTS}" ]] || return 0
  WORK=$(mktemp -d "${PWD}/.deploy.XXXXXX")
  TARGET=${WORK}
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources: [../kustomize/overlays/local]"
    echo "components:"
    local component
    for component in ${COMPONENTS//,/ }; do
      [[ -d "kustomize/components/${component}" ]] \
        || die "COMPONENTS: no kustomize/components/${component} (have: $(cd kustomize/components && echo */))"
      echo "  - ../kustomize/components/${component}"
    done
    if [[ ",${COMPONENTS}," == *,arm64-serving,* ]]; then
      echo "images: [{name: fmnist-jobs, newName: ${IMAGE_REPO}, newTag: '$(image_tag)'}]"
    fi
  } > "${WORK}/kustomization.yaml"
}

apply() {
  local path=$1
  info "applying ${path} (server-side)"
  kubectl kustomize "${path}" | kubectl apply --server-side --field-manager=fmnist-deploy -f - >/dev/null
}

# TF Serving is ready only once a model version is loaded, which the first pipeline run
# promotes: before that, wait for its pods to be up (the REST port answers) and say so.
wait_serving() {
  local selector=app.kubernetes.io/name=tf-serving
  if kubectl rollout status -n "${NAMESPACE}" deployment/tf-serving --timeout=20s >/dev/null 2>&1; then
    info "TF Serving is ready and serves a model"
    return
  fi
  info "waiting for TF Serving's pods to start (up to ${WAIT_TIMEOUT})"
  if ! kubectl wait pods -n "${NAMESPACE}" -l "${selector}" --for=jsonpath='{.status.containerStatuses[0].started}'=true \
      --timeout="${WAIT_TIMEOUT}"; then
    explain "${NAMESPACE}" "${selector}"
    die "TF Serving did not start within ${WAIT_TIMEOUT} (on arm64 nodes: COMPONENTS=arm64-serving make deploy)"
  fi
  info "TF Serving is up with no model yet: it turns ready when 'make pipeline' promotes one"
}

main() {
  require git kubectl # kustomize fetches the pinned remote bases with git
  require_cluster
  trap cleanup EXIT
  apply kustomize/addons/argo-crds
  kubectl wait --for=condition=Established --timeout="${WAIT_TIMEOUT}" \
    crd/workflows.argoproj.io crd/workflowtaskresults.argoproj.io >/dev/null
  choose_target
  apply "${TARGET}"
  wait_rollout "${OPERATOR_NAMESPACE}" training-operator control-plane=kubeflow-training-operator
  kubectl wait --for=condition=Established --timeout="${WAIT_TIMEOUT}" crd/tfjobs.kubeflow.org >/dev/null
  wait_rollout "${NAMESPACE}" workflow-controller app=workflow-controller
  wait_rollout "${NAMESPACE}" argo-server app=argo-server
  wait_rollout "${NAMESPACE}" mlflow app.kubernetes.io/name=mlflow
  wait_serving
  info "deployed into ${NAMESPACE}; next: make image pipeline (make status, make cluster-ui)"
}

main "$@"
