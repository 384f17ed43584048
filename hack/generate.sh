#!/usr/bin/env bash
# `make generate`: writes the files derived from their owners: hack/generate.py (the workflow's
# steps and defaults, the knob table, the module map, the test count) and
# python -m monitoring.generate (the SLO rules, the cluster's PrometheusRule, the dashboards).
# `make verify` (hack/generate.sh verify; make test runs it): writes nothing and fails, naming
# the stale files, when one of either is out of date, and when a script the Makefile calls
# reads a knob the Makefile does not declare.
#   VENV (.venv)  the virtualenv with ruamel.yaml and Grafana's SDK (make venv-dev)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  local python="${VENV}/bin/python"
  case "${1:-generate}" in
    generate)
      "${python}" hack/generate.py
      "${python}" -m monitoring.generate
      ;;
    verify)
      local failed=0
      "${python}" -m monitoring.generate --check || failed=1
      "${python}" hack/generate.py --check || failed=1
      return "${failed}"
      ;;
    *) echo "error: usage: hack/generate.sh [generate|verify] (got '$1')" >&2; exit 2 ;;
  esac
}

main "$@"
