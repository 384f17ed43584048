#!/usr/bin/env bash
# Prometheus and promtool as the OS provides them: Debian's and Ubuntu's `prometheus` package
# (2.42 on Debian 12), Homebrew's `prometheus` on macOS. The tests check the alert rules with
# promtool; `make monitor` runs Prometheus.
#   hack/prometheus.sh ensure  promtool on PATH; on Debian or Ubuntu, as root or on a CI runner
#                              with passwordless sudo, the package is installed when it is
#                              missing (`make test` runs this first)
#   hack/prometheus.sh check   promtool and prometheus on PATH, or one line saying how to
#                              install them (`make monitor`)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIN_VERSION=2.42 # Debian 12's; the rules and their unit tests need nothing newer

die() { echo "error: $*" >&2; exit 1; }

how_to_install() {
  case "$(uname -s)" in
    Darwin) echo "brew install prometheus" ;;
    *) echo "sudo apt-get install --no-install-recommends prometheus (Debian, Ubuntu; brew install prometheus on macOS)" ;;
  esac
}

# The version a tool reports (`promtool, version 2.42.0+ds (branch: ...)` -> 2.42.0).
version_of() { "$1" --version 2>&1 | sed -n 's/^[a-z]*, version \([0-9][0-9.]*\).*/\1/p' | head -n 1; }

at_least() {
  local have=$1 want=$2
  [[ "$(printf '%s\n%s\n' "${want}" "${have}" | sort -V | head -n 1)" == "${want}" ]]
}

# require TOOL: on PATH at MIN_VERSION or newer, else one line naming what to do.
require() {
  local tool=$1 version
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found: $(how_to_install)"
  version=$(version_of "${tool}")
  [[ -n "${version}" ]] || die "${tool} does not report its version ($(command -v "${tool}")): $(how_to_install)"
  at_least "${version}" "${MIN_VERSION}" || die "${tool} ${version} found, ${MIN_VERSION} or newer needed: $(how_to_install)"
}

# With apt-get, as root (a fresh CI machine) or on a CI runner (CI=true) with passwordless sudo
# (GitHub's): install the distribution's package. Anywhere else nothing is installed.
install_package() {
  command -v apt-get >/dev/null 2>&1 || return 0
  local as=()
  if [[ "$(id -u)" -ne 0 ]]; then
    [[ "${CI:-}" == true ]] && sudo -n true 2>/dev/null || return 0
    as=(sudo -n)
  fi
  echo ">> installing the OS package prometheus (for promtool)" >&2
  if ! "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install --yes --quiet --no-install-recommends prometheus >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet.
    "${as[@]}" apt-get update --quiet >/dev/null 2>&1 || die "apt-get update failed: cannot install prometheus"
    "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install --yes --quiet --no-install-recommends prometheus >/dev/null \
      || die "apt-get install prometheus failed (above)"
  fi
}

main() {
  case "${1:-}" in
    ensure)
      command -v promtool >/dev/null 2>&1 || install_package
      require promtool
      ;;
    check)
      require promtool
      require prometheus
      ;;
    *) die "usage: hack/prometheus.sh ensure|check (got '${1:-}')" ;;
  esac
}

main "$@"
