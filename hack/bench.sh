#!/usr/bin/env bash
# Measures the system (python -m bench, the bench/ package): training throughput on one process
# vs WORKERS MultiWorkerMirroredStrategy processes, the input pipeline, serving latency and
# throughput against a local server, the end-to-end pipeline per stage, and real-data accuracy
# when Fashion-MNIST is under WORK_DIR. About 11 minutes on 2 cores; prints a markdown table and
# writes results/bench-<time>.{json,md}. See docs/benchmarks.md.
#   hack/bench.sh          run the benchmark
#   hack/bench.sh docs     put the newest full run in RESULTS into docs/benchmarks.md (make bench-docs)
#   WORKERS             MWMS processes for the multi-worker figures (empty: python -m bench's default)
#   WORK_DIR (.work)    where real Fashion-MNIST is looked for (nothing is downloaded)
#   RESULTS (results)   output folder (gitignored)
#   BENCH_ARGS          more flags, e.g. "--quick" (every path at tiny sizes, sections at once) or
#                       "--url http://127.0.0.1:8501 --model-dir <SavedModel>" (serving only,
#                       against a TF Serving you port-forwarded)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORKERS=${WORKERS:-}
WORK_DIR=${WORK_DIR:-.work}
RESULTS=${RESULTS:-results}
BENCH_ARGS=${BENCH_ARGS:-}

main() {
  export PATH="${PWD}/${VENV}/bin:${PATH}"
  if [[ "${1:-}" == docs ]]; then
    exec "${VENV}/bin/python" -m bench.report --results "${RESULTS}"
  fi
  local extra=()
  read -r -a extra <<< "${BENCH_ARGS}"
  [[ -z "${WORKERS}" ]] || extra=(--workers "${WORKERS}" "${extra[@]}")
  exec "${VENV}/bin/python" -m bench --out "${RESULTS}" --work-dir "${WORK_DIR}" "${extra[@]}"
}

main "$@"
