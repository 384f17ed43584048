"""Shared fixtures: small synthetic data, a small trained SavedModel, job runners."""

from __future__ import annotations

import dataclasses
import io
import os
import re
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
def untrained_model(tmp_path_factory) -> Path:
    """A cnn that was never trained, exported: about chance (0.1) on any split."""
    import tf_keras as keras

    from jobs import export, models

    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("untrained") / "saved"
    export.save(models.build("cnn"), path)
    return path


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


# --- a copy of the repository, as a reader has it, where `make local` ran once ------------

# What the commands in a playground run with, to keep them small; the command text itself is
# what the documentation says. Knobs the Makefile reads (see its head).
PIPELINE_KNOBS = {
    "EPOCHS": "2",
    "INGEST_ARGS": "--train-size 2000 --test-size 500",
    "TRAIN_ARGS": "--steps-per-epoch 12",
    # 24 steps leave the best candidate near 0.78 on the drawn garments (0.97 after make local's
    # 5 full epochs): the smoke check still tells a trained model from an untrained one (0.1).
    "MIN_ACCURACY": "0.6",
}
PIPELINE_COMMAND = "make local DATASET=synthetic"


def makefile_knobs() -> dict[str, tuple[str, str]]:
    """The Makefile's knobs, name: (default, what it is), from the `# knob:` line above each
    `NAME ?= default` (what `make help` prints and the Makefile exports)."""
    knobs, what = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.fullmatch(r"([A-Z_]+) *\?= *(.*)", line)
        if match and what is not None:
            knobs[match[1]] = (match[2].strip(), what)
        what = line.removeprefix("# knob: ") if line.startswith("# knob: ") else None
    return knobs


def reader_env(**extra: str) -> dict[str, str]:
    """A fresh terminal's environment: ours without the test run's own settings, the knobs
    that `make test` exported, or a path to this checkout's jobs."""
    makefile = (ROOT / "Makefile").read_text()
    exported = {name for line in makefile.splitlines() if line.startswith("export ") for name in line.split()[1:]}
    exported |= set(makefile_knobs())
    dropped = {"TF_CONFIG", "MLFLOW_TRACKING_URI", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", *exported}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(extra)
    return env


def copy_checkout(target: Path) -> Path:
    """The repository's files (tracked and new, not ignored) with their times, so that make sees
    the virtualenv as up to date; `.venv` links to this checkout's."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    names = [n for n in listed.stdout.split("\0") if n] if listed.returncode == 0 else []
    if not names:  # not a git checkout
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not {".git", ".venv", ".work", "results", "__pycache__"} & set(p.relative_to(ROOT).parts)
        ]
    for name in names:
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    venvs = {".venv": os.environ.get("VENV") or ".venv", ".venv-checkov": ".venv-checkov"}
    for name, ours in venvs.items():
        if (ROOT / ours).exists():
            (target / name).symlink_to((ROOT / ours).resolve())
    return target


@dataclasses.dataclass
class Playground:
    root: Path
    env: dict[str, str]
    pipeline: subprocess.CompletedProcess  # PIPELINE_COMMAND, run once

    @property
    def work(self) -> Path:
        return self.root / ".work"


@pytest.fixture(scope="session")
def playground(tmp_path_factory) -> Playground:
    """A copy of the repository where the reader's first command, `make local DATASET=synthetic`,
    ran once (at the sizes of PIPELINE_KNOBS). Shared by the end-to-end and the docs tests, and
    by every pytest-xdist worker of the session: the first to need it runs it under a lock, the
    others wait and read its outcome. Tests copy it before they change anything."""
    from jobs.files import locked, read_json, write_json

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
    "test_faults_training.py",
    "test_tracking.py",
    "test_faults_tracking.py",
    "cluster/test_parity_run.py",
    "test_docs.py",  # builds the make local playground that test_local*.py reuse
    "test_bench.py",
    "test_promote.py",
    "test_rollback.py",
    "test_faults_writes.py",
    "test_long_training.py",
    "cluster/test_policy.py",
    "test_stop.py",
    "test_train.py",
    "serving/test_versions.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {ROOT / "tests" / name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))  # stable: the rest keep their order
