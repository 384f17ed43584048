"""Real multi-worker training: two processes, MultiWorkerMirroredStrategy, TF_CONFIG."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from jobs.core import cpus
from jobs.core.paths import Work
from jobs.local.processes import free_ports
from jobs.train import recipe
from jobs.train.distributed import tf_config
from tests.helpers import ROOT
from tests.helpers.jobs import encode, job_env, run_job


def train_cluster(
    work_dir, workers: int, *extra: str, run_id: str = "r1", shares: list[dict] | None = None, **env: str
) -> list[subprocess.CompletedProcess]:
    """Starts `workers` train processes with operator-shaped TF_CONFIG (and each worker's
    `shares` entry in its environment); waits for all."""
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    argv = [
        sys.executable,
        "-m",
        "jobs.train",
        "--work-dir",
        str(work_dir),
        "--run-id",
        run_id,
        "--dataset",
        "synthetic",
        "--model",
        "cnn",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "8",
        *extra,
    ]
    procs = [
        subprocess.Popen(
            argv,
            cwd=ROOT,
            env=job_env(
                **{"TF_CONFIG": tf_config(addresses, i), "FMNIST_THREADS": "1", **env, **(shares or [{}] * workers)[i]}
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def results(proc) -> dict[str, str]:
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


@pytest.mark.slow
def test_two_workers_train_save_and_clean_up(ingested, mlflow_uri):
    from mlflow.tracking import MlflowClient

    chief, other = train_cluster(ingested, 2, "--profile", MLFLOW_TRACKING_URI=mlflow_uri)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]
    # One model, mirrored: both workers see the same all-reduced loss.
    assert results(chief)["loss"] == results(other)["loss"]
    # tf.data's "preserve tf.data options" UserWarning comes from an iterator made in graph
    # mode (the validation pass once iterated the distributed dataset inside its tf.function).
    for worker in (chief, other):
        assert "Warning" not in worker.stderr, worker.stderr[-3000:]

    candidate = Work(ingested).candidate("r1", "cnn")
    leftovers = [p.name for p in candidate.root.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temp folders left: {leftovers}"
    assert (candidate.model / "saved_model.pb").exists()
    history = json.loads(candidate.history.read_text())["epochs"]
    assert [e["epoch"] for e in history] == [0, 1]
    # The schedule over 2 x 8 steps of 128 images: each epoch's last step's rate, √2 × the base at its peak.
    rate = recipe.schedule(1e-3, 128, 16)
    assert [e["learning_rate"] for e in history] == pytest.approx([float(rate(7)), float(rate(15))])
    assert history[1]["learning_rate"] == pytest.approx(1e-3 * 2**0.5 * recipe.FINAL)
    info = json.loads(candidate.run_info.read_text())
    best = max(history, key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert info["best_epoch"] == best["epoch"] and info["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert not candidate.best.exists(), "the best epoch's checkpoint is removed once the model is saved"
    assert info["params"]["workers"] == 2 and info["params"]["global_batch"] == 128
    assert list(candidate.tensorboard.rglob("events.out.tfevents.*")), "no TensorBoard logs"
    # --profile: the chief's trace of a few steps of epoch 2, which every worker ran as a call of its own.
    assert list((candidate.tensorboard / "train" / "plugins" / "profile").rglob("*.xplane.pb")), "no profiler trace"

    # The chief alone tracked: one candidate run (under the pipeline's parent run), with params,
    # per-epoch metrics and the model.
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id], "tags.role = 'candidate'")
    assert len(runs) == 1 and runs[0].info.run_id == info["mlflow_run_id"]
    assert runs[0].data.params["global_batch"] == "128"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [0, 1]
    assert "tensorboard" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    logged = client.get_logged_model(info["model_id"])
    assert logged.source_run_id == runs[0].info.run_id
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "best_epoch")] == [best["epoch"]]
    assert runs[0].data.params["peak_learning_rate"] == str(1e-3 * 2**0.5)

    import tensorflow as tf

    from jobs.ingest import data
    from jobs.train import export

    model = export.load(candidate.model)
    test = data.load(Work(ingested).dataset("synthetic"))["test"]
    by_pixels = model.signatures["pixels"](pixels=tf.constant(test.images[:8]))
    by_bytes = model.signatures["serving_default"](
        image_bytes=tf.constant([encode(img, "PNG") for img in test.images[:8]])
    )
    np.testing.assert_allclose(by_pixels["probabilities"].numpy(), by_bytes["probabilities"].numpy(), atol=1e-5)
    assert by_pixels["class_name"].numpy().shape == (8,)


@pytest.mark.slow
def test_workers_pinned_to_their_own_cpus_train_the_same_model(ingested):
    """Pinning (jobs.local's default) moves threads, not numbers: pinned and unpinned pairs of
    workers end with the same per-epoch figures, and the chief records where it ran."""
    shares = cpus.worker_env(2)
    if "FMNIST_CPUS" not in shares[0]:
        pytest.skip("fewer CPUs than workers, or no pinning on this system")
    histories = {}
    for run_id, pinned in (("pinned", shares), ("unpinned", None)):
        procs = train_cluster(ingested, 2, run_id=run_id, shares=pinned)
        assert all(p.returncode == 0 for p in procs), procs[0].stderr[-3000:] + procs[1].stderr[-3000:]
        candidate = Work(ingested).candidate(run_id, "cnn")
        epochs = json.loads(candidate.history.read_text())["epochs"]
        histories[run_id] = [e[k] for e in epochs for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
        cpus_param = json.loads(candidate.run_info.read_text())["params"]["cpus"]
        assert cpus_param == (shares[0]["FMNIST_CPUS"] if pinned else "any")
    assert len(histories["pinned"]) == 2 * 4 and histories["pinned"] == pytest.approx(histories["unpinned"], rel=1e-6)


@pytest.mark.slow
def test_single_replica_has_no_tf_config(ingested):
    """A TFJob with one replica gets no TF_CONFIG: plain single-process training."""
    proc = run_job(
        "train",
        *("--work-dir", ingested, "--run-id", "solo", "--dataset", "synthetic", "--model", "batchnorm"),
        *("--epochs", "1", "--steps-per-epoch", "5"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(Work(ingested).candidate("solo", "batchnorm").run_info.read_text())
    assert info["params"]["workers"] == 1 and info["params"]["global_batch"] == 64


@pytest.mark.slow
def test_attempts_count_one_training_and_reset_when_it_succeeds(ingested):
    """A run id used again (a nightly job) is a new training: its workers' starts are counted
    from one, not across every earlier successful training (which failed the second run here
    with "started 1 times already")."""
    for _ in range(2):
        [chief] = train_cluster(ingested, 1, "--max-attempts", "1", "--steps-per-epoch", "2", run_id="nightly")
        assert chief.returncode == 0, chief.stderr[-3000:]
    assert not Work(ingested).candidate("nightly", "cnn").attempts("worker-0").exists()
