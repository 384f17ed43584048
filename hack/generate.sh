#!/usr/bin/env bash
# `make generate`: writes the files derived from their owners (hack/generate.py says which).
# `make verify` (hack/generate.sh verify; make test runs it): fails, naming the stale files,
# when one is out of date, and when a script the Makefile calls reads a knob the Makefile does
# not declare.
#   VENV (.venv)  the virtualenv with ruamel.yaml (make venv-dev)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  case "${1:-generate}" in
    generate) exec "${VENV}/bin/python" hack/generate.py ;;
    verify) exec "${VENV}/bin/python" hack/generate.py --check ;;
    *) echo "error: usage: hack/generate.sh [generate|verify] (got '$1')" >&2; exit 2 ;;
  esac
}

main "$@"
