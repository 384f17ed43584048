#!/usr/bin/env bash
# `make deploy`: apply Argo's CRDs, then an overlay (the training operator, Argo, MLflow,
# TF Serving, the app's namespace, volume and RBAC), both with server-side apply; then wait until
# every component is ready.
#   OVERLAY        local (one k3d node), local-nodes (several k3d nodes sharing a host folder),
#                  cluster (any other cluster); default: local or local-nodes by the node count
#   STORAGE_CLASS  with OVERLAY=cluster: a ReadWriteMany storage class for the work volume
#   COMPONENTS     comma-separated kustomize/components to add, e.g. gpu,arm64-serving
#   NAMESPACE, IMAGE_REPO, REGISTRY, WAIT_TIMEOUT (default 300s per component)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

COMPONENTS=${COMPONENTS:-}
OVERLAY=${OVERLAY:-}
STORAGE_CLASS=${STORAGE_CLASS:-}
WORK=""   # a temp dir for the wrapper kustomization, removed on exit
TARGET="" # what to apply

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() { [[ -z "${WORK}" ]] || rm -rf "${WORK}"; }

# OVERLAY as given; else `local` on one node, `local-nodes` on a k3d cluster with more (its
# nodes share a host folder, hack/cluster.sh); any other multi-node cluster must say which.
choose_overlay() {
  if [[ -z "${OVERLAY}" ]]; then
    local nodes
    nodes=$(kubectl get nodes -o name)
    if [[ $(grep -c . <<<"${nodes}") -le 1 ]]; then
      OVERLAY=local
    elif grep -qv "^node/k3d-${CLUSTER}-" <<<"${nodes}"; then
      die "this cluster has several nodes and is not the k3d cluster ${CLUSTER}: use OVERLAY=cluster STORAGE_CLASS=<a ReadWriteMany class>"
    else
      OVERLAY=local-nodes
    fi
  fi
  [[ -f "kustomize/overlays/${OVERLAY}/kustomization.yaml" ]] \
    || die "OVERLAY: no kustomize/overlays/${OVERLAY} (have: $(cd kustomize/overlays && echo */))"
  if [[ "${OVERLAY}" == cluster ]]; then
    [[ -n "${STORAGE_CLASS}" ]] \
      || die "OVERLAY=cluster needs STORAGE_CLASS, a ReadWriteMany storage class for the work volume (kubectl get storageclass)"
  fi
  if [[ -n "${STORAGE_CLASS}" ]]; then
    [[ "${STORAGE_CLASS}" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "STORAGE_CLASS '${STORAGE_CLASS}' is not a storage class name"
    [[ "${OVERLAY}" == cluster ]] || die "STORAGE_CLASS applies to OVERLAY=cluster only (${OVERLAY} brings its own storage)"
  fi
}

# TARGET: the overlay itself, or a wrapper kustomization that adds the components, the storage
# class and the jobs image's name and tag (which arm64-serving runs). In the repo, so that its
# paths are relative.
choose_target() {
  TARGET=kustomize/overlays/${OVERLAY}
  [[ -n "${COMPONENTS}${STORAGE_CLASS}" ]] || return 0
  WORK=$(mktemp -d "${PWD}/.deploy.XXXXXX")
  TARGET=${WORK}
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources: [../kustomize/overlays/${OVERLAY}]"
    echo "components:"
    local component
    for component in ${COMPONENTS//,/ }; do
      [[ -d "kustomize/components/${component}" ]] \
        || die "COMPONENTS: no kustomize/components/${component} (have: $(cd kustomize/components && echo */))"
      echo "  - ../kustomize/components/${component}"
    done
    if [[ ",${COMPONENTS}," == *,arm64-serving,* ]]; then
      echo "images: [{name: fmnist-jobs, newName: $(image_repo), newTag: '$(image_tag)'}]"
    fi
    if [[ -n "${STORAGE_CLASS}" ]]; then
      echo "patches:"
      echo "  - target: {version: v1, kind: PersistentVolumeClaim, name: fmnist-work}"
      echo "    patch: '[{\"op\": \"replace\", \"path\": \"/spec/storageClassName\", \"value\": \"${STORAGE_CLASS}\"}]'"
    fi
  } > "${WORK}/kustomization.yaml"
}

# Objects with this label are a person's to edit (the ConfigMap fmnist-settings): created when
# missing, never applied again, so an edit is neither overwritten nor a server-side apply
# conflict. Everything else is applied every time and owned by the install.
CREATE_ONLY=fmnist/apply=create-only

apply() {
  local path=$1 rendered out
  info "applying ${path} (server-side)"
  rendered=$(kubectl kustomize "${path}")
  if ! out=$(kubectl apply --server-side --field-manager=fmnist-deploy --selector="${CREATE_ONLY/=/!=}" -f - \
      <<<"${rendered}" 2>&1 >/dev/null); then
    echo "${out}" >&2
    if grep -q "Apply failed with" <<<"${out}"; then
      die "an object this install owns was changed by another field manager (above; kubectl edit?): make the change in kustomize/ and deploy again, or take the fields back with kubectl apply --server-side --force-conflicts --field-manager=fmnist-deploy"
    fi
    die "applying ${path} failed (above)"
  fi
  create_missing "${rendered}"
}

# create_missing RENDERED: the create-only objects of a render that do not exist yet.
create_missing() {
  local rendered=$1 out
  grep -q "^    ${CREATE_ONLY/=/: }\$" <<<"${rendered}" || return 0
  if out=$(kubectl create --selector="${CREATE_ONLY}" -f - <<<"${rendered}" 2>&1); then
    info "created ${out//$'\n'/, } (yours to edit: make deploy leaves it as it is)"
    return
  fi
  # After the first deploy they exist: that is the normal case, anything else is an error.
  if grep -v -e "(AlreadyExists)" -e " created\$" <<<"${out}" | grep -q .; then
    echo "${out}" >&2
    die "creating the objects labelled ${CREATE_ONLY} failed (above)"
  fi
  info "kept what exists of the objects labelled ${CREATE_ONLY} (yours: make deploy does not change them)"
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
  choose_overlay
  choose_target
  info "overlay ${OVERLAY}${COMPONENTS:+ with ${COMPONENTS}}${STORAGE_CLASS:+, work volume from ${STORAGE_CLASS}}"
  apply "${TARGET}"
  wait_rollout "${OPERATOR_NAMESPACE}" training-operator control-plane=kubeflow-training-operator
  kubectl wait --for=condition=Established --timeout="${WAIT_TIMEOUT}" crd/tfjobs.kubeflow.org >/dev/null
  wait_rollout "${NAMESPACE}" workflow-controller app=workflow-controller
  wait_rollout "${NAMESPACE}" argo-server app=argo-server
  wait_rollout "${NAMESPACE}" mlflow app.kubernetes.io/name=mlflow
  wait_serving
  info "deployed into ${NAMESPACE} (overlay ${OVERLAY}); next: make image pipeline (make status, make cluster-ui)"
}

main "$@"
