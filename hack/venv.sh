#!/usr/bin/env bash
# Creates or updates the project's virtualenvs from the pinned lock files:
#   .venv          the jobs and the tests (requirements/jobs.txt + requirements/dev.txt)
#   .venv-checkov  the policy scanner, kept apart because its pins clash with the jobs'
# A stamp file records what was installed, so a re-run with unchanged locks is instant.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CHECKOV_VENV=${CHECKOV_VENV:-.venv-checkov}
PIP_VERSION=25.3

die() { echo "error: $*" >&2; exit 1; }

check_python() {
  command -v "${PYTHON}" >/dev/null 2>&1 || die "${PYTHON} not found: install Python 3.11 or 3.12 (or set PYTHON=/path/to/python3.11)"
  local version
  version=$("${PYTHON}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case "${version}" in
    3.11|3.12) ;;
    *) die "Python ${version} found; TensorFlow 2.20 here is pinned for Python 3.11 or 3.12 (set PYTHON=python3.11)" ;;
  esac
}

# install <venv> <lock file>...: create the venv if needed and sync it to the lock files.
install() {
  local venv=$1; shift
  local stamp="${venv}/.stamp"
  local digest
  digest=$(cat "$@" | "${PYTHON}" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${digest}" ]]; then
    return 0
  fi
  echo ">> installing $* into ${venv} (first run takes a few minutes)"
  [[ -x "${venv}/bin/python" ]] || "${PYTHON}" -m venv "${venv}"
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "pip==${PIP_VERSION}"
  local args=()
  for lock in "$@"; do args+=(--requirement "${lock}"); done
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
  echo "${digest}" > "${stamp}"
}

main() {
  check_python
  install "${VENV}" requirements/jobs.txt requirements/dev.txt
  install "${CHECKOV_VENV}" requirements/checkov.txt
}

main "$@"
