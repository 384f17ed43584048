#!/usr/bin/env bash
# `make generate`: writes the files derived from code (python -m monitoring.generate: the SLO
# rules, the cluster's PrometheusRule and the Grafana dashboards); `hack/generate.sh --check`
# writes nothing and fails naming each file that is not up to date (tests/observability runs it).
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  "${VENV}/bin/python" -m monitoring.generate "$@"
}

main "$@"
