#!/usr/bin/env bash
# Creates or updates the project's virtualenvs from the hashed lock files, installing only what
# the command at hand needs:
#   hack/venv.sh jobs   .venv with requirements/jobs.txt + local.txt: the jobs, the local MLflow
#                       store and UI (make local, serve, predict, ui, tensorboard, status)
#   hack/venv.sh dev    the above, plus requirements/dev.txt in .venv (tests, lint, benchmarks)
#                       and requirements/checkov.txt in .venv-checkov (the policy scanner, kept
#                       apart because its pins clash with the jobs')
#   hack/venv.sh note   only say which Python the venv has, if PYTHON asks for another one
# A stamp per set records the digest of what was installed, so a re-run with unchanged locks
# is instant. PYTHON picks the interpreter a new venv is made with; an existing venv keeps its
# own (this says so when PYTHON asks for another one).
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
PYTHON_ASKED=${PYTHON_ASKED:-} # set by the Makefile when PYTHON came from the command line or environment
VENV=${VENV:-.venv}
CHECKOV_VENV=${CHECKOV_VENV:-.venv-checkov}
PIP_VERSION=25.3

die() { echo "error: $*" >&2; exit 1; }

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

check_python() {
  command -v "${PYTHON}" >/dev/null 2>&1 || die "${PYTHON} not found: install Python 3.11 or 3.12 (or set PYTHON=/path/to/python3.11)"
  local version
  version=$(version_of "${PYTHON}") || die "${PYTHON} does not run as Python 3: set PYTHON=python3.11 (or 3.12)"
  case "${version}" in
    3.11 | 3.12) ;;
    *) die "${PYTHON} is Python ${version}; TensorFlow 2.20 here is pinned for Python 3.11 or 3.12 (set PYTHON=python3.11)" ;;
  esac
}

# An existing venv is kept with the interpreter it was made with: say so when PYTHON asks for another.
note_existing_python() {
  local venv=$1 have asked
  [[ -n "${PYTHON_ASKED}" && -x "${venv}/bin/python" ]] || return 0
  have=$(version_of "${venv}/bin/python") || return 0
  asked=$(version_of "${PYTHON_ASKED}" || echo "not a working Python 3")
  if [[ "${have}" != "${asked}" ]]; then
    echo "note: ${venv} has Python ${have}; PYTHON=${PYTHON_ASKED} (${asked}) is not used." \
      "To rebuild it with that interpreter: rm -rf ${venv} ${CHECKOV_VENV}" >&2
  fi
}

digest() { cat "$@" hack/venv.sh | "${PYTHON}" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }

# install <venv> <stamp name> <lock file>...: create the venv if needed and sync it to the locks.
install() {
  local venv=$1 name=$2
  shift 2
  local stamp="${venv}/.stamp-${name}" wanted
  wanted=$(digest "$@")
  if [[ -x "${venv}/bin/python" && -f "${stamp}" && "$(cat "${stamp}")" == "${wanted}" ]]; then
    return 0
  fi
  echo ">> installing $* into ${venv} (the first time takes a few minutes)"
  if ! "${venv}/bin/python" -c '' 2>/dev/null; then
    rm -rf "${venv}"
    check_python
    "${PYTHON}" -m venv "${venv}"
  fi
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "pip==${PIP_VERSION}"
  local args=()
  for lock in "$@"; do args+=(--requirement "${lock}"); done
  # Every line of the locks carries its hashes: pip refuses anything that does not match.
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes "${args[@]}"
  echo "${wanted}" > "${stamp}"
}

main() {
  local set=${1:-}
  case "${set}" in
    note)
      note_existing_python "${VENV}"
      ;;
    jobs)
      install "${VENV}" jobs requirements/jobs.txt requirements/local.txt
      ;;
    dev)
      install "${VENV}" jobs requirements/jobs.txt requirements/local.txt
      install "${VENV}" dev requirements/jobs.txt requirements/local.txt requirements/dev.txt
      install "${CHECKOV_VENV}" checkov requirements/checkov.txt
      ;;
    *) die "usage: hack/venv.sh jobs|dev|note (got '${set}')" ;;
  esac
}

main "$@"
