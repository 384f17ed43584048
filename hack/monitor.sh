#!/usr/bin/env bash
# `make monitor`: a local Prometheus that scrapes every local model server (make serve, and
# make local's, both tracks with ROLLOUT=canary) and evaluates the project's alert rules
# (monitoring/rules/, the same as the cluster's), its UI on http://127.0.0.1:MONITOR_PORT.
# Where Grafana is installed (grafana-server on PATH), Grafana too, with the dashboards, on
# GRAFANA_PORT. Ctrl-C stops them. docs/monitoring.md.
#
# The servers list themselves in <WORK_DIR>/monitor/targets/*.json while they run (Prometheus's
# file-based service discovery); Prometheus keeps its data in <WORK_DIR>/monitor/prometheus.
#   WORK_DIR (.work)  MONITOR_PORT (9095)  GRAFANA_PORT (3095)  MONITOR_READY_SECONDS (60)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK_DIR=${WORK_DIR:-.work}
MONITOR_PORT=${MONITOR_PORT:-9095}
GRAFANA_PORT=${GRAFANA_PORT:-3095}
MONITOR_READY_SECONDS=${MONITOR_READY_SECONDS:-60}
STOP_SECONDS=10 # from SIGTERM to SIGKILL
CHILDREN=()

die() { echo "error: $*" >&2; exit 1; }
info() { echo ">> $*"; }

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  local pid waited=0
  (( ${#CHILDREN[@]} )) || return 0
  kill -TERM "${CHILDREN[@]}" 2>/dev/null || true
  for pid in "${CHILDREN[@]}"; do
    while kill -0 "${pid}" 2>/dev/null && (( waited < STOP_SECONDS * 10 )); do
      sleep 0.1
      waited=$((waited + 1))
    done
    kill -KILL "${pid}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  echo ">> stopped"
}

check_port() {
  local name=$1 port=$2
  if ! [[ "${port}" =~ ^[0-9]{1,5}$ ]] || (( port < 1 || port > 65535 )); then
    die "${name} must be a port number, not '${port}'"
  fi
  if (echo > "/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    die "port ${port} is taken (a Prometheus or Grafana already running?): choose another, e.g. make monitor ${name}=$((port + 1))"
  fi
}

write_config() {
  local dir=$1 root
  root=$(pwd)
  cat > "${dir}/prometheus.yml" <<EOF
# Written by hack/monitor.sh (make monitor) at each start.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files:
  - ${root}/monitoring/rules/*.yaml
scrape_configs:
  # Every local model server: make serve and make local list theirs in targets/ while they run.
  - job_name: tf-serving
    metrics_path: /monitoring/prometheus/metrics
    file_sd_configs:
      - files: ['$(cd "${dir}" && pwd)/targets/*.json']
        refresh_interval: 5s
EOF
}

# wait_ready NAME URL PID: the URL answers, or the process's log tail and a non-zero exit.
wait_ready() {
  local name=$1 url=$2 pid=$3 log=$4 waited=0
  until curl --silent --fail --max-time 2 --output /dev/null "${url}"; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      tail -n 20 "${log}" >&2 || true
      die "${name} exited at start (its log: ${log}, last lines above)"
    fi
    (( waited < MONITOR_READY_SECONDS * 2 )) || { tail -n 20 "${log}" >&2 || true; die "${name} did not answer ${url} within ${MONITOR_READY_SECONDS} s"; }
    sleep 0.5
    waited=$((waited + 1))
  done
}

start_prometheus() {
  local dir=$1
  prometheus --config.file="${dir}/prometheus.yml" --storage.tsdb.path="${dir}/prometheus" \
    --storage.tsdb.retention.time=7d --web.listen-address="127.0.0.1:${MONITOR_PORT}" \
    >> "${dir}/prometheus.log" 2>&1 &
  CHILDREN+=("$!")
  wait_ready Prometheus "http://127.0.0.1:${MONITOR_PORT}/-/ready" "$!" "${dir}/prometheus.log"
}

# Grafana's home (its static files): the Debian/Ubuntu package's, or Homebrew's.
grafana_home() {
  local candidate brew
  brew=$(brew --prefix 2>/dev/null || echo /nonexistent)
  for candidate in /usr/share/grafana "${brew}/opt/grafana/share/grafana" "${brew}/share/grafana"; do
    [[ -d "${candidate}/public" ]] && { echo "${candidate}"; return 0; }
  done
  return 1
}

start_grafana() {
  local dir=$1 home root
  root=$(pwd)
  home=$(grafana_home) || { info "grafana-server found, but not its home (/usr/share/grafana): no dashboards"; return 0; }
  mkdir -p "${dir}/grafana/provisioning/datasources" "${dir}/grafana/provisioning/dashboards" "${dir}/grafana/data"
  cat > "${dir}/grafana/provisioning/datasources/prometheus.yaml" <<EOF
apiVersion: 1
datasources:
  - {name: Prometheus, uid: prometheus, type: prometheus, access: proxy, url: "http://127.0.0.1:${MONITOR_PORT}", isDefault: true}
EOF
  cat > "${dir}/grafana/provisioning/dashboards/fmnist.yaml" <<EOF
apiVersion: 1
providers:
  - {name: fmnist, type: file, options: {path: "${root}/kustomize/components/monitoring/dashboards"}}
EOF
  GF_PATHS_DATA="${dir}/grafana/data" GF_PATHS_LOGS="${dir}/grafana" GF_PATHS_PLUGINS="${dir}/grafana/plugins" \
    GF_PATHS_PROVISIONING="${dir}/grafana/provisioning" GF_SERVER_HTTP_ADDR=127.0.0.1 \
    GF_SERVER_HTTP_PORT="${GRAFANA_PORT}" GF_AUTH_ANONYMOUS_ENABLED=true GF_AUTH_ANONYMOUS_ORG_ROLE=Viewer \
    GF_ANALYTICS_REPORTING_ENABLED=false GF_ANALYTICS_CHECK_FOR_UPDATES=false \
    grafana-server --homepath "${home}" >> "${dir}/grafana.log" 2>&1 &
  CHILDREN+=("$!")
  wait_ready Grafana "http://127.0.0.1:${GRAFANA_PORT}/api/health" "$!" "${dir}/grafana.log"
  info "Grafana:    http://127.0.0.1:${GRAFANA_PORT}/d/fmnist-serving (anonymous, read-only)"
}

main() {
  hack/prometheus.sh check
  command -v curl >/dev/null 2>&1 || die "curl not found: install curl"
  check_port MONITOR_PORT "${MONITOR_PORT}"
  local dir="${WORK_DIR}/monitor"
  mkdir -p "${dir}/targets" "${dir}/prometheus"
  write_config "${dir}"
  promtool check config "${dir}/prometheus.yml" >/dev/null \
    || die "the Prometheus config ${dir}/prometheus.yml or a rules file is not valid (above)"
  trap cleanup EXIT
  trap 'exit 130' INT TERM HUP
  # Children in process groups of their own: a Ctrl-C reaches this script only, whose trap stops
  # them (else they could exit first and look like a failure).
  set -m
  start_prometheus "${dir}"
  # Its pages: /classic/... in Debian's build (the classic UI), /... in Prometheus 3 (Homebrew's).
  local ui=""
  curl --silent --fail --output /dev/null "http://127.0.0.1:${MONITOR_PORT}/classic/alerts" && ui=/classic
  info "Prometheus: http://127.0.0.1:${MONITOR_PORT}${ui}/alerts (targets: ${ui}/targets; its log: ${dir}/prometheus.log)"
  if command -v grafana-server >/dev/null 2>&1; then
    check_port GRAFANA_PORT "${GRAFANA_PORT}"
    start_grafana "${dir}"
  else
    info "Grafana is not installed: the dashboards need it (docs/monitoring.md); Prometheus's UI has the alerts"
  fi
  info "watching the servers listed in ${dir}/targets (make serve, make local); Ctrl-C stops"
  local pid
  while true; do
    for pid in "${CHILDREN[@]}"; do
      kill -0 "${pid}" 2>/dev/null || die "a monitoring process exited (logs in ${dir})"
    done
    sleep 1
  done
}

main "$@"
