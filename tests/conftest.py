"""Shared fixtures: small synthetic data, a small trained SavedModel, an MLflow store, the
`make local` playground. Helpers that are not fixtures are in tests/helpers/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import jobs  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tests.helpers import ROOT
from tests.helpers.jobs import PIPELINE_COMMAND, PIPELINE_KNOBS, Playground, copy_checkout, reader_env


@pytest.fixture(scope="session")
def small_data():
    from jobs.ingest import data

    return data.synthetic(train_size=1500, test_size=500, seed=3)


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory) -> Path:
    """A cnn that was never trained, exported: about chance (0.1) on any split."""
    import tf_keras as keras

    from jobs.train import export, models

    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("untrained") / "saved"
    export.save(models.build("cnn"), path)
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, small_data) -> Path:
    """A small cnn trained briefly on synthetic data and exported with both signatures."""
    import tf_keras as keras

    from jobs.ingest import data
    from jobs.train import export, models

    keras.utils.set_random_seed(0)
    model = models.build("cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = small_data["train"]
    model.fit(data.to_model_input(train.images), train.labels.astype("int64"), epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("model") / "saved"
    export.save(model, path)
    return path


@pytest.fixture
def work(tmp_path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def ingested(work, small_data) -> Path:
    """A work dir holding the small synthetic dataset under data/synthetic."""
    from jobs.core.paths import Work
    from jobs.ingest import data

    data.write(small_data, Work(work).dataset("synthetic"), {"name": "synthetic", "test": True})
    return work


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A SQLite tracking store whose `fmnist` experiment keeps artifacts under tmp_path
    (MLflow would otherwise write them to ./mlruns)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("fmnist", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri


@pytest.fixture(scope="session")
def playground(tmp_path_factory) -> Playground:
    """A copy of the repository where the reader's first command, `make local DATASET=synthetic`,
    ran once (at the sizes of PIPELINE_KNOBS). Shared by the end-to-end and the docs tests, and
    by every pytest-xdist worker of the session: the first to need it runs it under a lock, the
    others wait and read its outcome. Tests copy it before they change anything."""
    from jobs.core.files import locked, read_json, write_json

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's directory, above each worker's own
    root, outcome = shared / "playground" / "fmnist", shared / "playground" / "pipeline.json"
    env = reader_env(**PIPELINE_KNOBS)
    with locked(shared / "playground.lock"):
        if not outcome.exists():
            root.mkdir(parents=True, exist_ok=True)
            copy_checkout(root)
            proc = subprocess.run(
                ["bash", "-c", PIPELINE_COMMAND], cwd=root, env=env, capture_output=True, text=True, timeout=1200
            )
            write_json(outcome, {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})
        ran = read_json(outcome)
    proc = subprocess.CompletedProcess(PIPELINE_COMMAND, ran["returncode"], ran["stdout"], ran["stderr"])
    return Playground(root, env, proc)


# --- order: the files that take minutes first ----------------------------------------------

# Test files whose tests and fixtures take a minute or more, longest first (summed from
# `--durations=0` of a full run). `make test` gives each file to one pytest-xdist worker as it
# frees up, in collection order (`--dist loadfile --no-loadscope-reorder`; xdist's own order is
# by test count, which put a one-test file of minutes last): started first, these leave the
# short files to fill in at the end, instead of one worker finishing a long file alone.
# Every other file keeps its order after them.
LONG_FILES = (
    "faults/test_training.py",
    "pipeline/test_tracking.py",
    "faults/test_tracking.py",
    "cluster/test_parity_run.py",
    "repo/test_docs.py",  # builds the make local playground that pipeline/test_local*.py reuse
    "repo/test_bench.py",
    "pipeline/test_promote.py",
    "pipeline/test_rollback.py",
    "faults/test_writes.py",
    "faults/test_long_training.py",
    "cluster/test_policy.py",
    "faults/test_stop.py",
    "pipeline/test_train.py",
    "serving/test_versions.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {ROOT / "tests" / name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))  # stable: the rest keep their order
