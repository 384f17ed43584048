#!/usr/bin/env bash
# Runs the whole pipeline on this machine (jobs/local.py): ingest, multi-worker training of
# each candidate, evaluation, promotion, and a check through a local model server.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
WORK_DIR=${WORK_DIR:-.work}
DATASET=${DATASET:-fashion_mnist}
EPOCHS=${EPOCHS:-5}
WORKERS=${WORKERS:-2}
MODELS=${MODELS:-cnn,dropout,batchnorm}
INGEST_ARGS=${INGEST_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
PROMOTE=${PROMOTE:-gate}

main() {
  exec "${VENV}/bin/python" -m jobs.local \
    --work-dir "${WORK_DIR}" --dataset "${DATASET}" --epochs "${EPOCHS}" \
    --workers "${WORKERS}" --models "${MODELS}" \
    --ingest-args="${INGEST_ARGS}" --train-args="${TRAIN_ARGS}" --promote "${PROMOTE}"
}

main "$@"
