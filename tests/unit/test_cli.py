"""Every job checks its arguments before it loads TensorFlow: `--help` and a usage error answer
at once, as one line, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.jobs import assert_one_line_error, job_env

HEAVY = ("tensorflow", "tf_keras", "tensorflow_datasets", "mlflow")
# Every command: a module of jobs/ or a package's __main__.py that runs a main.
JOBS = sorted(
    (path.stem if path.name != "__main__.py" else path.parent.name)
    for path in [*(ROOT / "jobs").glob("*.py"), *(ROOT / "jobs").glob("*/__main__.py")]
    if 'if __name__ == "__main__":' in path.read_text()
)


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> Path:
    """A folder that shadows the heavy packages with ones that fail when imported."""
    folder = tmp_path_factory.mktemp("poisoned")
    for name in HEAVY:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} imported before the arguments were checked')\n"
        )
    return folder


def job(module: str, *args: str, poisoned: Path) -> subprocess.CompletedProcess:
    env = job_env(PYTHONPATH=f"{poisoned}:{ROOT}")
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{module}", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_job_list_is_complete():
    assert {"local", "ingest", "train", "evaluate", "promote", "predict", "serve"} <= set(JOBS)


@pytest.mark.parametrize("module", JOBS)
def test_help_loads_no_tensorflow(module, poisoned):
    proc = job(module, "--help", poisoned=poisoned)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", JOBS)
def test_a_usage_error_is_one_line_before_tensorflow(module, poisoned):
    proc = job(module, "--no-such-flag", poisoned=poisoned)
    assert proc.returncode == 2
    assert_one_line_error(proc, f"(see python -m jobs.{module} --help)")


@pytest.mark.parametrize(
    ("module", "args", "needle"),
    [
        ("local", ["--epochs", "abc"], "not a whole number: 'abc'"),
        ("local", ["--workers", "0"], "must be at least 1"),
        ("local", ["--models", "cnn,resnet"], "unknown resnet"),
        ("train", ["--work-dir", "w", "--run-id", "r", "--model", "resnet"], "invalid choice: 'resnet'"),
        ("evaluate", ["--work-dir", "w", "--run-id", "r", "--models", "nope"], "unknown nope"),
    ],
)
def test_bad_knobs_are_refused_before_tensorflow(module, args, needle, poisoned):
    assert_one_line_error(job(module, *args, poisoned=poisoned), needle)


def test_a_work_dir_that_cannot_be_one_is_one_line(tmp_path, poisoned):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    proc = job("local", "--work-dir", str(a_file / "work"), "--dataset", "synthetic", poisoned=poisoned)
    assert_one_line_error(proc, f"{a_file} is a file, not a folder")
    assert not list(tmp_path.glob("**/mlflow*"))
    proc = job("local", "--work-dir", "", poisoned=poisoned)
    assert_one_line_error(proc, "argument --work-dir: empty")


def test_workers_that_do_not_fit_in_memory_are_refused(poisoned):
    proc = job("local", "--workers", "3", "--worker-memory", str(2**40), poisoned=poisoned)
    assert_one_line_error(proc, "3 workers need about", "GiB each", "use WORKERS=")


def test_workers_far_beyond_the_cpus_are_warned_about(tmp_path, poisoned):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    # Memory is fine (1 MiB each); the bad work dir then ends the run before anything starts.
    proc = job("local", "--workers", "64", "--worker-memory", "1", "--work-dir", str(a_file / "w"), poisoned=poisoned)
    assert "64 workers share" in proc.stderr and "WORKERS=" in proc.stderr, proc.stderr
    assert_one_line_error(proc, "is a file, not a folder")
