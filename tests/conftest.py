"""Shared fixtures: small synthetic data, a small trained SavedModel, an MLflow store, the
`make local` playground. Helpers that are not fixtures are in tests/helpers/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import jobs  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tests.helpers import skips
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


def pytest_collection_modifyitems(config, items):
    """Files that hold a test marked slow go first, every file otherwise in collection order.
    `make test` gives each file to one pytest-xdist worker as it frees up, in this order
    (`--dist loadfile --no-loadscope-reorder`): started first, the files of minutes leave the
    short ones to fill in at the end. Simulated on one run's per-file durations (2 workers):
    2,177 s, as the hand-kept list of long files it replaces; xdist's own order (by test count,
    which puts a one-test file of minutes last) 2,223 s."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable
    skips.write_counts(items)


def pytest_report_header(config):
    """What is skipped on this machine and why, before anything runs (tests/helpers/skips.py)."""
    return skips.header(config)
