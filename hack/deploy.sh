#!/usr/bin/env bash
# `make deploy`: apply Argo's CRDs, then an overlay (the training operator, Argo, MLflow,
# TF Serving, the app's namespace, volume and RBAC), both with server-side apply; then wait until
# every component is ready.
#   OVERLAY        local (one k3d node), local-nodes (several k3d nodes sharing a host folder),
#                  cluster (any other cluster); default: local or local-nodes by the node count
#   STORAGE_CLASS  with OVERLAY=cluster: a ReadWriteMany storage class for the work volume
#   COMPONENTS     comma-separated kustomize/components to add, e.g. gpu,arm64-serving,monitoring
#   NAMESPACE, IMAGE_REPO, REGISTRY, WAIT_TIMEOUT (default 300s per component)
# It installs no second Argo or training operator: one that it did not install (any namespace,
# any installer) stops it (Argo) or is used instead of its own (the operator, OVERLAY=cluster).
# With OVERLAY=cluster the cluster-wide part (overlays/cluster-admin, the CRDs, the operator)
# is applied only by someone who may; a namespace owner gets it checked instead.
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

# COMPONENTS=monitoring: kube-prometheus-stack (the Prometheus Operator's CRDs, its namespace) first.
require_monitoring() {
  [[ ",${COMPONENTS}," == *,monitoring,* ]] || return 0
  local monitoring_ns
  monitoring_ns=$(sed -n "s/^  namespace: *//p" kustomize/components/monitoring/settings.yaml)
  kubectl get crd servicemonitors.monitoring.coreos.com podmonitors.monitoring.coreos.com \
    prometheusrules.monitoring.coreos.com >/dev/null 2>&1 \
    || die "COMPONENTS=monitoring needs kube-prometheus-stack installed first (its CRDs are missing): docs/monitoring.md"
  kubectl get namespace "${monitoring_ns}" >/dev/null 2>&1 \
    || die "COMPONENTS=monitoring puts its objects into namespace ${monitoring_ns}, which does not exist: install kube-prometheus-stack there, or set namespace in kustomize/components/monitoring/settings.yaml"
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

# foreign DEPLOYMENTS PATTERN: namespace/name of each of DEPLOYMENTS (one per line: name, images,
# field managers, tab-separated) running an image that matches PATTERN which this script did
# not apply (no field manager fmnist-deploy): installed by someone else.
foreign() {
  awk -F '\t' -v image="$2" '$2 ~ image && $3 !~ /(^| )fmnist-deploy( |$)/ { print $1 }' <<<"$1"
}

# Another Argo would run this namespace's workflows a second time; another training operator
# would reconcile every TFJob twice. EXISTING_OPERATOR: the one to use instead of ours.
EXISTING_OPERATOR=""
check_existing() {
  local deployments argo operator
  if ! deployments=$(kubectl get deployments --all-namespaces -o \
      jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\t"}{.spec.template.spec.containers[*].image}{"\t"}{.metadata.managedFields[*].manager}{"\n"}{end}' 2>/dev/null); then
    info "you may not list Deployments in every namespace: not checking for another Argo or training operator"
    return 0
  fi
  argo=$(foreign "${deployments}" 'argoproj/workflow-controller')
  [[ -z "${argo}" ]] \
    || die "an Argo Workflows controller that make deploy did not install runs already (${argo//$'\n'/, }): a second one would run the same workflows twice; remove it, or use it (docs/kubernetes.md, \"An Argo or a training operator already there\")"
  operator=$(foreign "${deployments}" 'training-operator')
  [[ -n "${operator}" ]] || return 0
  [[ "${OVERLAY}" == cluster ]] \
    || die "a training operator that make deploy did not install runs already (${operator//$'\n'/, }): OVERLAY=cluster uses it, OVERLAY=${OVERLAY} would install a second one"
  EXISTING_OPERATOR=${operator%%$'\n'*}
  info "using the training operator that runs already: ${EXISTING_OPERATOR} (not installing one)"
}

# The cluster-wide part of OVERLAY=cluster: applied if the caller may create CRDs, else checked.
cluster_scoped() {
  if kubectl auth can-i create customresourcedefinitions.apiextensions.k8s.io >/dev/null 2>&1; then
    apply kustomize/addons/argo-crds
    [[ -n "${EXISTING_OPERATOR}" ]] || apply kustomize/addons/training-operator
    apply kustomize/overlays/cluster-admin
  else
    info "you may not create cluster-wide objects: checking that an administrator applied them (kustomize/overlays/cluster-admin says how)"
    local object
    for object in crd/workflows.argoproj.io crd/workflowtaskresults.argoproj.io crd/tfjobs.kubeflow.org \
        "namespace/${NAMESPACE}" priorityclass/workflow-controller clusterrole/fmnist-namespace-owner; do
      kubectl get "${object}" >/dev/null 2>&1 \
        || die "${object} does not exist, and creating it needs a cluster administrator: see kustomize/overlays/cluster-admin/kustomization.yaml"
    done
  fi
  kubectl get secret mlflow-auth -n "${NAMESPACE}" >/dev/null 2>&1 \
    || die "no Secret mlflow-auth in ${NAMESPACE}, MLflow's admin and the pipeline's login: kubectl -n ${NAMESPACE} create secret generic mlflow-auth --from-literal=username=admin --from-literal=password=\"\$(openssl rand -hex 16)\" --from-literal=secret-key=\"\$(openssl rand -hex 32)\""
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
  require_monitoring
  trap cleanup EXIT
  choose_overlay
  check_existing
  if [[ "${OVERLAY}" == cluster ]]; then
    cluster_scoped
  else
    apply kustomize/addons/argo-crds
  fi
  kubectl wait --for=condition=Established --timeout="${WAIT_TIMEOUT}" \
    crd/workflows.argoproj.io crd/workflowtaskresults.argoproj.io >/dev/null
  choose_target
  info "overlay ${OVERLAY}${COMPONENTS:+ with ${COMPONENTS}}${STORAGE_CLASS:+, work volume from ${STORAGE_CLASS}}"
  apply "${TARGET}"
  if [[ -z "${EXISTING_OPERATOR}" ]]; then
    wait_rollout "${OPERATOR_NAMESPACE}" training-operator control-plane=kubeflow-training-operator
  fi
  kubectl wait --for=condition=Established --timeout="${WAIT_TIMEOUT}" crd/tfjobs.kubeflow.org >/dev/null
  wait_rollout "${NAMESPACE}" workflow-controller app=workflow-controller
  wait_rollout "${NAMESPACE}" argo-server app=argo-server
  wait_rollout "${NAMESPACE}" mlflow app.kubernetes.io/name=mlflow
  wait_serving
  info "deployed into ${NAMESPACE} (overlay ${OVERLAY}); next: make image pipeline (make status, make cluster-ui)"
}

main "$@"
