"""Running jobs as a user would and reading what they say; a reader's copy of the checkout."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


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


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def encode(array, fmt: str) -> bytes:
    """An image array as PNG or JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


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
    """The Makefile's knobs, name: (its own value, what it is), read as make generate reads them."""
    return generator().makefile_knobs()


def generator():
    """hack/generate.py, the module behind make generate and make verify."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "hack" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def evaluated(work, run_id: str, name: str, dataset: str = "synthetic", validation_accuracy: float = 0.5) -> None:
    """A candidate's evaluation record as jobs.evaluate writes it: its test split scored for real
    through the candidate's model, its validation score (all that selection reads) claimed."""
    from jobs.evaluate.evaluate import correct, metrics, predict, write_record
    from jobs.ingest import data

    candidate = work.candidate(run_id, name)
    test = data.model_splits(work.dataset(dataset), ("test",))[0]["test"]
    probabilities = predict(candidate.model, test.images)
    result = {**metrics(probabilities, test.labels), "test_digest": data.digest(test)}
    result["validation"] = {"accuracy": validation_accuracy}
    candidate.eval.mkdir(parents=True, exist_ok=True)
    write_record(candidate.eval, result, correct(probabilities, test.labels))
