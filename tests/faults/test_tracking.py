"""The MLflow tracking server goes away: restarted between runs, killed mid-run, unreachable.

Tracking is best effort for training (jobs/tracking/tracker.py): bounded retries, then a warning and
no tracking for the rest of the job; the model is never thrown away because of tracking."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import socket
import time

import pytest

from jobs.core.paths import Work
from tests.helpers.faults import MlflowServer, finished_epochs, kill_tree, promote_cnn, start_job, wait_for
from tests.helpers.jobs import evaluated, run_job

TRAIN = ("--dataset", "synthetic", "--model", "cnn", "--steps-per-epoch", "5")


def train(work: Work, run_id: str, epochs: int, uri: str, **env: str):
    return run_job(
        "train",
        "--work-dir",
        work.root,
        "--run-id",
        run_id,
        *TRAIN,
        "--epochs",
        str(epochs),
        MLFLOW_TRACKING_URI=uri,
        **env,
    )


def promote(work: Work, run_id: str, uri: str):
    evaluated(work, run_id, "cnn")
    return run_job(*promote_cnn(work.root, run_id), MLFLOW_TRACKING_URI=uri)


def run_id_of(work: Work, run_id: str) -> str:
    return json.loads(work.candidate(run_id, "cnn").run_info.read_text())["mlflow_run_id"]


@pytest.mark.slow
def test_tracking_server_killed_and_restarted_keeps_runs_metrics_and_registry(ingested, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    work = Work(ingested)
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        first_start = server.startup_seconds
        # Run a: trained, tracked and promoted while the server is up.
        a = train(work, "a", 3, server.url)
        assert a.returncode == 0, a.stderr[-3000:]
        promoted = promote(work, "a", server.url)
        assert promoted.returncode == 0 and "version=1" in promoted.stdout, promoted.stderr[-3000:]
        run_a = run_id_of(work, "a")

        # Run b: the server is SIGKILLed after its first epoch; training carries on untracked.
        proc = start_job(
            "train",
            "--work-dir",
            work.root,
            "--run-id",
            "b",
            *TRAIN,
            "--epochs",
            "3",
            log=tmp_path / "train-b.log",
            MLFLOW_TRACKING_URI=server.url,
        )
        try:
            candidate_b = work.candidate("b", "cnn")
            wait_for(lambda: candidate_b.run_info.exists() or proc.poll() is not None, 300, "run b's MLflow run")
            live = MlflowClient(server.url)
            wait_for(
                lambda: live.get_metric_history(run_id_of(work, "b"), "loss") or proc.poll() is not None,
                300,
                "run b's first epoch to reach the server",
            )
            assert proc.poll() is None, "run b ended before the kill"
            server.kill()
            killed = time.monotonic()
            assert proc.wait(timeout=300) == 0, (tmp_path / "train-b.log").read_text()[-3000:]
            after_kill = time.monotonic() - killed
        finally:
            kill_tree(proc)
        log_b = (tmp_path / "train-b.log").read_text()
        assert log_b.count("tracking is off for the rest of this job") == 1, log_b[-3000:]
        assert finished_epochs(work.candidate("b", "cnn").history) == [0, 1, 2]
        assert (work.candidate("b", "cnn").model / "saved_model.pb").exists()

        server.start()  # same port, same database, same artifact store
        client = MlflowClient(server.url)

        # Run a, whole: status, params, per-epoch metrics, and its artifacts through the proxy:
        # the run's own and its LoggedModel's.
        got = client.get_run(run_a)
        assert got.info.status == "FINISHED"
        assert got.data.params["steps_per_epoch"] == "5"
        assert [m.step for m in client.get_metric_history(run_a, "loss")] == [0, 1, 2]
        assert "tensorboard" in {f.path for f in client.list_artifacts(run_a)}
        model_id = json.loads(work.candidate("a", "cnn").run_info.read_text())["model_id"]
        assert str(client.get_logged_model(model_id).status) == "READY"
        assert {"MLmodel", "tfmodel"} <= {f.path for f in client.list_logged_model_artifacts(model_id)}
        assert "tfmodel/saved_model.pb" in {f.path for f in client.list_logged_model_artifacts(model_id, "tfmodel")}
        champion = client.get_model_version_by_alias("fmnist", "champion")
        assert champion.version == "1" and champion.run_id == run_a
        assert champion.tags["serving_version"] == "1"

        # Run b: what was logged before the kill is there; the run never ended.
        run_b = run_id_of(work, "b")
        assert client.get_run(run_b).info.status == "RUNNING"
        assert [m.step for m in client.get_metric_history(run_b, "loss")][:1] == [0]

        # And the registry carries on after the restart: run b's model, which its training could
        # not log, is logged by promote into run b and becomes version 2, the champion.
        promoted = promote(work, "b", server.url)
        assert promoted.returncode == 0 and "version=2" in promoted.stdout, promoted.stderr[-3000:]
        champion = client.get_model_version_by_alias("fmnist", "champion")
        assert champion.version == "2" and champion.run_id == run_b, promoted.stderr[-3000:]
        model_b = json.loads(work.candidate("b", "cnn").run_info.read_text())["model_id"]
        assert champion.source == f"models:/{model_b}" and str(client.get_logged_model(model_b).status) == "READY"
        assert sorted(int(v.version) for v in client.search_model_versions("name='fmnist'")) == [1, 2]
    finally:
        server.stop()
    with capsys.disabled():
        print(
            f"\n[tracking] mlflow server first start {first_start:.0f} s, restart {server.startup_seconds:.0f} s; "
            f"run b finished {after_kill:.1f} s after the server was killed"
        )


@contextlib.contextmanager
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never answers: a server
    behind a network partition rather than a closed one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def tracking_delay(stderr: str) -> float:
    """Seconds from the first failed tracking call to tracking being switched off (log times)."""
    stamps = [
        datetime.datetime.strptime(m[1], "%H:%M:%S")
        for m in re.finditer(r"^(\d\d:\d\d:\d\d) WARNING jobs\.tracking: .*(?:retry|tracking is off)", stderr, re.M)
    ]
    return (stamps[-1] - stamps[0]).total_seconds() if stamps else 0.0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_training_completes_when_tracking_is_unreachable(ingested, kind, capsys):
    """Bounded: MLflow's own HTTP retries (2) times our attempts (3), each request bounded by
    MLFLOW_HTTP_REQUEST_TIMEOUT (20 s by default, 1 s here to keep the test short)."""
    work = Work(ingested)
    with silent_port() if kind == "silent" else closed_port() as port:
        started = time.monotonic()
        proc = train(work, "r", 2, f"http://127.0.0.1:{port}", MLFLOW_HTTP_REQUEST_TIMEOUT="1")
        seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("tracking is off for the rest of this job") == 1
    assert "retry 1/2" in proc.stderr and "retry 2/2" in proc.stderr and "retry 3/" not in proc.stderr
    candidate = work.candidate("r", "cnn")
    assert (candidate.model / "saved_model.pb").exists()
    assert finished_epochs(candidate.history) == [0, 1]
    info = json.loads(candidate.run_info.read_text())
    assert info["mlflow_run_id"] is None and info["epochs_trained"] == 2
    with capsys.disabled():
        print(
            f"\n[tracking {kind}] training finished in {seconds:.1f} s; tracking gave up after "
            f"{tracking_delay(proc.stderr):.0f} s of retries"
        )
