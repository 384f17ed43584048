#!/usr/bin/env bash
# Installs the pinned k3d and argo CLI (linux-amd64) into ./bin, each download checked against
# its SHA-256 before it is made executable: the one pinned in hack/tools.sha256, or else the
# one the release itself publishes (the argo CLI's argo-workflows-cli-checksums.txt). CI uses
# this; on a workstation install them as docs/kubernetes.md says. kubectl comes with the venv.
#   BIN (default bin)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

BIN=${BIN:-bin}
WORK=""

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() { [[ -z "${WORK}" ]] || rm -rf "${WORK}"; }

pinned() { awk -v asset="$1" -v version="$2" '$2 == asset && $3 == version { print $1 }' hack/tools.sha256; }

# fetch NAME VERSION URL ASSET [RELEASE_CHECKSUMS_URL]: the download, verified, at WORK/ASSET.
fetch() {
  local name=$1 version=$2 url=$3 asset=$4 sums_url=${5:-} want
  info "downloading ${name} ${version}"
  curl --fail --silent --show-error --location --retry 3 --output "${WORK}/${asset}" "${url}"
  want=$(pinned "${asset}" "${version}")
  if [[ -z "${want}" && -n "${sums_url}" ]]; then
    curl --fail --silent --show-error --location --retry 3 --output "${WORK}/sums" "${sums_url}"
    want=$(awk -v asset="${asset}" '$2 == asset { print $1 }' "${WORK}/sums")
    info "${asset} ${version} has no pin in hack/tools.sha256: checking it against the release's own checksums"
  fi
  [[ -n "${want}" ]] || die "no SHA-256 for ${asset} ${version}: add '<sha256>  ${asset} ${version}' to hack/tools.sha256"
  echo "${want}  ${WORK}/${asset}" | sha256sum --check --quiet - \
    || die "${asset} ${version} does not match its SHA-256 ${want}: not installed"
}

main() {
  local tool
  for tool in curl sha256sum gunzip awk; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found"
  done
  WORK=$(mktemp -d)
  trap cleanup EXIT
  mkdir -p "${BIN}"
  fetch k3d "${K3D_VERSION}" "https://github.com/k3d-io/k3d/releases/download/${K3D_VERSION}/k3d-linux-amd64" k3d-linux-amd64
  install -m 0755 "${WORK}/k3d-linux-amd64" "${BIN}/k3d"
  local argo_release="https://github.com/argoproj/argo-workflows/releases/download/${ARGO_VERSION}"
  fetch argo "${ARGO_VERSION}" "${argo_release}/argo-linux-amd64.gz" argo-linux-amd64.gz "${argo_release}/argo-workflows-cli-checksums.txt"
  gunzip --stdout "${WORK}/argo-linux-amd64.gz" > "${WORK}/argo"
  install -m 0755 "${WORK}/argo" "${BIN}/argo"
  "${BIN}/k3d" version
  "${BIN}/argo" version --short
}

main "$@"
