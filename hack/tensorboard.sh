#!/usr/bin/env bash
# Serves TensorBoard over every run's training logs (<WORK_DIR>/runs/<run>/<model>/tensorboard).
#   WORK_DIR (.work)   the local work dir      TENSORBOARD_PORT (6006)   port on 127.0.0.1
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
TENSORBOARD_PORT=${TENSORBOARD_PORT:-6006}

die() { echo "error: $*" >&2; exit 1; }

main() {
  local logs="${WORK_DIR}/runs"
  [[ -d "${logs}" ]] || die "no runs under ${logs}: run 'make local' first (or set WORK_DIR)"
  # tensorboard 2.20 imports pkg_resources, which setuptools 81 and later no longer have.
  "${VENV}/bin/python" -c 'import pkg_resources' 2>/dev/null \
    || die "tensorboard needs pkg_resources, which ${VENV}'s setuptools lacks: run 'make venv' (it pins setuptools 80)"
  # Its start-up notes (CUDA, CPU flags, the pkg_resources deprecation) are of no use here.
  export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
  export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore:pkg_resources is deprecated}
  local log="${WORK_DIR}/logs/tensorboard.log"
  mkdir -p "${WORK_DIR}/logs"
  echo ">> TensorBoard on http://127.0.0.1:${TENSORBOARD_PORT} over ${logs} (Ctrl-C stops it; log: ${log})"
  # One process (--load_fast=false: no separate data server) that ends at once on Ctrl-C,
  # SIGTERM or SIGHUP, however it was started (SIGINT may arrive ignored or blocked, as in a
  # background job) and whatever its loader threads are doing: it only reads, so there is
  # nothing to save. (TensorBoard's own SIGTERM handler calls this one before it exits.)
  # Its stderr through the filter that keeps TensorFlow's start-up notes in the log only
  # (jobs.core.noise). A stop asked for ends with status 0: make adds no error line of its own.
  local status=0 stopping=""
  trap 'stopping=1' INT TERM HUP
  { "${VENV}/bin/python" -c '
import os, signal, sys
STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
def stop(signum, _frame):
    print(f"tensorboard: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    os._exit(128 + signum)
for signum in STOPS:
    signal.signal(signum, stop)
signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
from tensorboard.main import run_main
sys.argv[0] = "tensorboard"
sys.exit(run_main())
' --logdir "${logs}" --host 127.0.0.1 --port "${TENSORBOARD_PORT}" --load_fast=false 2>&1 1>&3 3>&- \
      | (trap '' INT TERM HUP; exec "${VENV}/bin/python" -m jobs.core.noise "${log}"); } 3>&1 || status=$?
  [[ -z "${stopping}" ]] || status=0
  return "${status}"
}

main "$@"
