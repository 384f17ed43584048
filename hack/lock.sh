#!/usr/bin/env bash
# Re-resolves requirements/*.in into the fully pinned, hashed lock files requirements/*.txt.
# Run it after changing a top-level pin; commit the .in and .txt files together. Existing pins
# are kept where they still satisfy the .in files (pip-compile reads the old lock first).
#   jobs.txt      the jobs image and every local run (mlflow-skinny: the client only)
#   local.txt     the full MLflow for the local SQLite store and its UI (constrained by jobs.txt)
#   dev.txt       tests, lint, benchmarks (constrained by jobs.txt and local.txt)
#   jobs-gpu.txt  the GPU image: jobs.txt's pins with tensorflow[and-cuda]
#   checkov.txt   the policy scanner, in a venv of its own
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

main() {
  local compile=("$(cd "${VENV}" && pwd)/bin/pip-compile" --quiet --strip-extras --no-header --allow-unsafe
    --no-emit-index-url --no-emit-find-links --generate-hashes)
  [[ -x "${compile[0]}" ]] || { echo "error: ${compile[0]} not found; run 'make venv' first" >&2; exit 1; }
  cd requirements
  local lock
  for lock in jobs local dev jobs-gpu checkov; do
    echo ">> requirements/${lock}.txt"
    "${compile[@]}" --output-file "${lock}.txt" "${lock}.in"
  done
}

main "$@"
