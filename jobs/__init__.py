"""Thin jobs of the Fashion-MNIST pipeline: each one is `python -m jobs.<name> --help`."""

import os

# Multi-worker `fit` needs Keras 2 (tf-keras): Keras 3 cannot run MultiWorkerMirroredStrategy.
# These must be set before TensorFlow is first imported, which every job does through here.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gRPC's start-up lines ("Started server with target: grpc://...", absl's "All log messages
# before absl::InitializeLog()") from every worker: errors only.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from jobs.core import lifecycle  # noqa: E402

lifecycle.follow_parent()  # a job started by the local runner ends when the runner does
