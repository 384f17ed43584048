"""Shared fixtures: small synthetic data, a small trained SavedModel, job runners."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jobs  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

ROOT = Path(__file__).resolve().parents[1]


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_job(module: str, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Runs `python -m jobs.<module> args...` as a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{module}", *map(str, args)],
        cwd=ROOT,
        env=job_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed job says why in one `error:` line on stderr, with no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="session")
def small_data():
    from jobs import data

    return data.synthetic(train_size=1500, test_size=500, seed=3)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, small_data) -> Path:
    """A small cnn trained briefly on synthetic data and exported with both signatures."""
    import tf_keras as keras

    from jobs import data, export, models

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
    from jobs import data
    from jobs.paths import Work

    data.write(small_data, Work(work).dataset("synthetic"), {"name": "synthetic", "test": True})
    return work


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def encode(array, fmt: str) -> bytes:
    """An image array as PNG or JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A SQLite tracking store whose `fmnist` experiment keeps artifacts under tmp_path
    (MLflow would otherwise write them to ./mlruns)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("fmnist", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri
