#!/usr/bin/env bash
# Re-resolves requirements/*.in into the fully pinned requirements/*.txt lock files.
# Run it after changing a top-level pin; commit the .in and .txt files together.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  [[ -d "${VENV}" ]] || { echo "error: no virtualenv at ${VENV}; run 'make venv' first" >&2; exit 1; }
  local compile=("$(cd "${VENV}" && pwd)/bin/pip-compile" --quiet --strip-extras --no-header --allow-unsafe
    --no-emit-index-url --no-emit-find-links)
  [[ -x "${compile[0]}" ]] || { echo "error: ${compile[0]} not found; run 'make venv' first" >&2; exit 1; }
  cd requirements
  "${compile[@]}" --output-file jobs.txt jobs.in
  "${compile[@]}" --output-file dev.txt dev.in
  "${compile[@]}" --output-file checkov.txt checkov.in
}

main "$@"
