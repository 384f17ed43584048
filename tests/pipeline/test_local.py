"""`make local` end to end, as a user runs it, at small settings."""

from __future__ import annotations

import json
import re

import psutil
import pytest

from jobs import steps
from jobs.core import cpus
from jobs.core.paths import Work
from jobs.local.runner import Runner, Settings
from tests.helpers.jobs import run_job


@pytest.mark.slow
def test_make_local_synthetic(playground):
    """`make local DATASET=synthetic` in a copy of the repository (the docs tests share the run)."""
    from mlflow.tracking import MlflowClient

    work = playground.work
    proc = playground.pipeline
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # The served version exists in TF Serving's layout and scores far above chance (0.1).
    served = Work(work).served() / "1"
    assert (served / "saved_model.pb").exists() and (served / "variables").is_dir()
    from jobs.evaluate.evaluate import metrics, predict
    from jobs.ingest import data

    test = data.load(Work(work).dataset("synthetic"))["test"]
    assert metrics(predict(served, test.images), test.labels)["accuracy"] > 0.5

    # The summary names every candidate and says what its train time includes; the smoke check
    # went through the local server. Results for scripts are in a file, not on the terminal.
    (run_dir,) = Work(work).root.joinpath("runs").iterdir()
    results = dict(line.split("=", 1) for line in (run_dir / "results.txt").read_text().splitlines())
    assert float(results["served_accuracy"]) > 0.5 and results["version"] == "1"
    assert results["run_id"] == run_dir.name
    for model in ("cnn", "dropout", "batchnorm"):
        assert any(line.startswith(model + " ") for line in proc.stdout.splitlines()), proc.stdout[-2000:]
    assert "train time: each training job from starting its workers to their exit" in proc.stdout
    terminal = proc.stdout + proc.stderr
    assert not [line for line in terminal.splitlines() if re.search(r"(^|\] )[a-z_]+=\S+$", line)], terminal[-3000:]
    for noise in ("grpc_server_lib", "absl::InitializeLog"):
        assert noise not in terminal, noise
    assert terminal.count("Connection refused") <= 1, terminal[-3000:]  # the server starts before it is needed
    assert re.search(r"epoch 2/2: .* images/s", terminal), terminal[-3000:]
    timings = json.loads((run_dir / "timings.json").read_text())["stages"]
    assert set(timings) == {
        "ingest",
        "train:cnn",
        "train:dropout",
        "train:batchnorm",
        "evaluate",
        "promote",
        "wait-serving",
        "smoke",
        "canary",
    }

    # MLflow (the local SQLite store that `make ui` shows): the pipeline run's parent run, one
    # child per candidate with training, validation and test metrics, and the champion.
    client = MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fmnist")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'pipeline'")
    assert parent.info.run_name == results["run_id"] and parent.data.tags["decision"] == "promoted"
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'candidate'")
    assert sorted(r.info.run_name for r in runs) == ["batchnorm", "cnn", "dropout"]
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"loss", "val_accuracy", "validation_accuracy", "test_accuracy", "learning_rate"} <= set(r.data.metrics)
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 2
        # Each worker was pinned to its own CPUs where there are enough: the chief to the first.
        assert r.data.params["cpus"] == cpus.worker_env(2)[0].get("FMNIST_CPUS", "any")
    champion = client.get_model_version_by_alias("fmnist", "champion")
    assert champion.tags["serving_version"] == "1" and champion.source.startswith("models:/m-")
    # The model's page lists the version made from it: mlflow.register_model sets the tag.
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "fmnist", "version": 1}]
    assert experiment.artifact_location == (work / "mlflow" / "artifacts").resolve().as_uri()

    # Nothing is left running: no worker, no server.
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_runner_commands_are_the_steps(tmp_path):
    """The runner builds every command from jobs.steps, plus only the extras it is given."""
    settings = Settings(
        work=Work(tmp_path),
        run_id="r",
        dataset="synthetic",
        epochs=3,
        workers=2,
        models=["cnn"],
        min_accuracy=0.5,
        max_restarts=0,
        python="py",
        extra={"ingest": ["--train-size", "10"]},
    )
    runner = Runner(settings)
    runner.url = "http://127.0.0.1:1"
    train = runner.command(steps.step("train"), model="cnn")
    run = ["--work-dir", str(tmp_path), "--run-id", "r", "--dataset", "synthetic"]
    assert train == ["py", "-m", "jobs.train", *run, "--model", "cnn", "--epochs", "3", "--patience", "0"]
    assert runner.command(steps.step("ingest"))[-2:] == ["--train-size", "10"]
    for step in steps.STEPS:
        assert step.parameters() <= set(steps.PARAMETERS), step.name
        assert "{" not in " ".join(runner.command(step, model="cnn"))


@pytest.mark.slow
def test_failed_worker_fails_the_run_with_its_log_tail(tmp_path):
    """A training job that cannot succeed (a bad flag: exit 2, a permanent error): no restart,
    its log tail, exit non-zero."""
    work = tmp_path / "work"
    proc = run_job(
        "local",
        "--work-dir",
        work,
        "--dataset",
        "synthetic",
        "--models",
        "cnn",
        "--epochs",
        "1",
        "--max-restarts",
        "1",
        "--ingest-args=--train-size 300 --test-size 100",
        "--train-args=--batch-per-worker 0",
    )
    assert proc.returncode == 1
    assert re.search(r"training cnn failed: worker-\d exited with 2, a permanent error \(not restarted\)", proc.stderr)
    assert "must be at least 1" in proc.stderr  # the worker's own last line, from its log tail
    assert "Traceback" not in proc.stderr
    assert not (Work(work).served()).exists()
