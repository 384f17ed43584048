"""Faults during multi-worker training: a worker SIGKILLed and restarted, a worker that always
fails (for good, or transiently), a peer that never comes back or never starts. Real processes,
real MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest

from jobs import steps
from jobs.core.cli import JobError
from jobs.core.paths import Work
from jobs.ingest import data
from jobs.local import summary
from jobs.local.processes import free_ports
from jobs.local.runner import Runner, Settings
from jobs.train.distributed import EXIT_PEER_LOST, tf_config
from tests.helpers import ROOT
from tests.helpers.faults import alive, finished_epochs, wait_for
from tests.helpers.jobs import assert_one_line_error, job_env

EPOCHS = 5
STEPS = "10"  # per epoch: about 1.5 s each on two workers here, so an epoch has a middle


@pytest.fixture
def runner_env(monkeypatch):
    """The runner's children inherit our environment: make it a user's, untracked."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(ROOT)


@pytest.fixture
def dataset_work(tmp_path):
    """A work dir with a learnable synthetic dataset, written as ingest writes it."""
    work = Work(tmp_path / "work")
    data.write(
        data.synthetic(2000, 500, seed=5),
        work.dataset("synthetic"),
        {"name": "synthetic", "train_size": 2000, "test_size": 500, "seed": 5},
    )
    return work


def settings(work: Work, run_id: str, max_restarts: int = 2, python: str = sys.executable) -> Settings:
    return Settings(
        work=work,
        run_id=run_id,
        dataset="synthetic",
        epochs=EPOCHS,
        workers=2,
        models=["cnn"],
        min_accuracy=0.0,
        max_restarts=max_restarts,
        python=python,
        extra={"train": ["--steps-per-epoch", STEPS]},
    )


def accuracy_of(work: Work, run_id: str, split: str = "test") -> float:
    from jobs.evaluate.evaluate import metrics, predict

    images = data.model_splits(work.dataset("synthetic"), (split,))[0][split]
    return metrics(predict(work.candidate(run_id, "cnn").model, images.images), images.labels)["accuracy"]


@pytest.mark.slow
def test_worker_killed_mid_training_resumes_from_backup(runner_env, dataset_work, mlflow_uri, monkeypatch, capsys):
    """SIGKILL the chief once an epoch has finished: the runner restarts the group (a TFJob
    with restartPolicy ExitCode recreates a pod killed by a signal), training resumes from
    BackupAndRestore at the next epoch, the model is as good as an uninterrupted one with the
    same settings, and the restart is reported with its cause, in the runner and in MLflow."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    work = dataset_work
    train = steps.step("train")

    reference = Runner(settings(work, "reference"))
    reference.run_workers(train, "cnn")
    assert reference.restarts["cnn"] == []

    runner = Runner(settings(work, "killed"))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["results"] = runner.run_workers(train, "cnn")
        except BaseException as err:  # reported by the main thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    candidate = work.candidate("killed", "cnn")
    wait_for(
        lambda: max(finished_epochs(candidate.history), default=-1) >= 1 or not thread.is_alive(),
        300,
        "epoch 2 to finish",
    )
    assert thread.is_alive(), f"training ended before the kill: {outcome}"
    chief = next(p for p in runner.children if p.prefix == "[cnn:0]")
    os.kill(chief.popen.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: chief.poll() is not None, 30, "the killed chief to exit")
    # The chief alone writes history.json, so what it holds now is what finished before the kill.
    done_before_kill = len(finished_epochs(candidate.history))
    thread.join(timeout=600)
    assert not thread.is_alive(), "training did not finish after the restart"
    assert "error" not in outcome, outcome.get("error")

    results = outcome["results"]
    resumed_at = int(results["resumed_at_epoch"])
    [restart] = runner.restarts["cnn"]
    assert restart["ended"] == "worker-0 killed by SIGKILL"
    assert restart["reason"], "the last meaningful line of the killed worker"
    assert f"restart 1 of cnn: worker-0 killed by SIGKILL: {restart['reason']}" in summary.restart_lines(
        runner.restarts
    )
    # Resumed, not restarted from epoch 1: every finished epoch was kept (the backup is saved
    # before history.json, so a kill between the two can make the backup one epoch ahead).
    assert resumed_at >= 1
    assert done_before_kill <= resumed_at <= done_before_kill + 1
    history = json.loads(candidate.history.read_text())["epochs"]
    assert [e["epoch"] for e in history] == list(range(EPOCHS)), "every epoch exactly once"
    info = json.loads(candidate.run_info.read_text())
    assert info["resumed_at_epoch"] == resumed_at and info["epochs_trained"] == EPOCHS
    assert info["restarts"] == [restart] and info["attempts"] == 2
    # The model is the best validation epoch's of all, before the kill or after it.
    best = max(history, key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert info["best_epoch"] == best["epoch"]
    assert accuracy_of(work, "killed", "validation") == pytest.approx(best["val_accuracy"], abs=1e-6)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.metrics["restarts"] == 1 and run.data.tags["restarts"] == "1"
    assert run.data.tags["restart.1"] == f"worker-0 killed by SIGKILL: {restart['reason']}"
    assert (
        client.get_run(
            json.loads(work.candidate("reference", "cnn").run_info.read_text())["mlflow_run_id"]
        ).data.metrics["restarts"]
        == 0
    )
    assert (candidate.model / "saved_model.pb").exists()
    assert not [p.name for p in candidate.root.iterdir() if p.name.startswith(".")], "temp dirs left"

    killed_accuracy, reference_accuracy = accuracy_of(work, "killed"), accuracy_of(work, "reference")
    with capsys.disabled():
        print(
            f"\n[worker loss] chief SIGKILLed with {done_before_kill} of {EPOCHS} epochs done; "
            f"resumed at epoch {resumed_at + 1}: {max(0, done_before_kill - resumed_at)} "
            f"finished epochs redone (plus the partial epoch in flight); "
            f"recovered in {time.monotonic() - killed_at:.1f} s; "
            f"test accuracy {killed_accuracy:.4f} vs {reference_accuracy:.4f} uninterrupted"
        )
    assert reference_accuracy > 0.5, "the reference did not learn: the comparison would mean nothing"
    assert abs(killed_accuracy - reference_accuracy) <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize(
    "exit_code, attempts", [(3, 1), (EXIT_PEER_LOST, 2)], ids=["permanent-exit-3", "transient-exit-203"]
)
def test_worker_that_always_fails_ends_the_run_with_its_log(runner_env, dataset_work, tmp_path, exit_code, attempts):
    """Worker 1 fails every time while worker 0 waits for it. An exit of 1-127 is its own error:
    the run fails at once, with no restart (restartPolicy ExitCode). An exit of 128-255 is
    transient: the group restarts, and after the bounded restarts the run fails. Either way the
    error quotes the failed worker's last lines, and no process is left behind."""
    python = tmp_path / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        "# worker 1 crashes after its peer has started; every other process is the real python\n"
        'case "${TF_CONFIG:-}" in\n'
        f"  *'\"index\": 1'*) sleep 6; echo 'worker-1: simulated crash: disk on fire' >&2; exit {exit_code};;\n"
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    runner = Runner(settings(dataset_work, "doomed", max_restarts=1, python=str(python)))

    seen: dict[int, psutil.Process] = {}
    stop = threading.Event()

    me = psutil.Process()
    # Other tests' session-scoped servers are our children too: they are not the runner's.
    before = {child.pid for child in me.children(recursive=True)}

    def watch() -> None:  # every process the runner starts, grandchildren included
        while not stop.is_set():
            for child in me.children(recursive=True):
                if child.pid not in before:
                    seen.setdefault(child.pid, child)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(JobError) as failure:
            runner.run_workers(steps.step("train"), "cnn")
    finally:
        stop.set()
        watcher.join()
    message = str(failure.value)
    if attempts == 1:
        assert message.startswith(f"training cnn failed: worker-1 exited with {exit_code}, a permanent error")
        assert runner.restarts["cnn"] == []
    else:
        assert message.startswith("training cnn failed after 1 restart(s)")
        assert runner.restarts["cnn"] == [
            {"ended": f"worker-1 exited with {exit_code}", "reason": "worker-1: simulated crash: disk on fire"}
        ]
    assert f"[cnn:1] exited with {exit_code}" in message
    assert "worker-1: simulated crash: disk on fire" in message, "the worker's log tail"
    logs = (dataset_work.run("doomed") / "logs" / "cnn-worker-1.log").read_text()
    assert logs.count("disk on fire") == attempts
    assert len(seen) >= 2 * attempts, f"expected {attempts} attempt(s) of two workers, saw {len(seen)} processes"
    assert alive(list(seen.values())) == [], "orphans left behind"
    assert runner.children == []


def start_workers(work: Work, name: str, indexes=(0, 1), *extra: str) -> tuple[list[subprocess.Popen], list]:
    """`jobs.train` workers of a two-worker cluster, started by hand: only those in `indexes`."""
    addresses = [f"localhost:{port}" for port in free_ports(2)]
    argv = [
        sys.executable,
        "-m",
        "jobs.train",
        "--work-dir",
        str(work.root),
        "--run-id",
        "lost",
        "--dataset",
        "synthetic",
        "--model",
        "cnn",
        "--epochs",
        "50",
        "--steps-per-epoch",
        STEPS,
        *extra,
    ]
    logs = [open(work.root / f"{name}-worker-{i}.log", "w+") for i in indexes]  # noqa: SIM115 (closed by the caller)
    procs = [
        subprocess.Popen(
            argv,
            cwd=ROOT,
            env=job_env(TF_CONFIG=tf_config(addresses, i), FMNIST_THREADS="1"),
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        for i, log in zip(indexes, logs, strict=True)
    ]
    return procs, logs


def stderr_of(log) -> str:
    log.seek(0)
    text = log.read()
    log.close()
    return text


def wait_exit(proc: subprocess.Popen, bound: float, what: str) -> float:
    """Seconds until `proc` exits; fails the test if it is still running after `bound`."""
    started = time.monotonic()
    try:
        proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {bound:g} s")
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, lost",
    [("SIGKILL", 1), ("SIGSTOP", 0), ("SIGSTOP", 1)],
    ids=["worker-killed", "chief-frozen", "worker-frozen"],
)
def test_peer_that_never_returns_fails_the_survivor(dataset_work, fault, lost, capsys):
    """A peer lost mid-training and never restarted: the survivor must fail with one clear
    error line and the retryable exit status, not hang. SIGKILL on one host closes its sockets;
    SIGSTOP keeps them open and silent, like a node that dropped off the network. Either way
    the peer stops sending heartbeats to the coordination service (led by the chief), which
    gives up on it after the heartbeat timeout (10 s)."""
    procs, logs = start_workers(dataset_work, "lost")
    survivor = procs[1 - lost]
    try:
        history = dataset_work.candidate("lost", "cnn").history
        wait_for(lambda: finished_epochs(history) or any(p.poll() is not None for p in procs), 300, "the first epoch")
        assert all(p.poll() is None for p in procs), "a worker ended before the fault"
        procs[lost].send_signal(getattr(signal, fault))
        # A generous bound: it measured 4-11 s here, at load averages of 6-10.
        seconds = wait_exit(survivor, 180, f"worker-{1 - lost} after its peer was lost ({fault})")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    stderr = [stderr_of(log) for log in logs][1 - lost]
    error = assert_one_line_error(
        subprocess.CompletedProcess([], survivor.returncode, "", stderr), f"training failed on worker-{1 - lost}"
    )
    assert survivor.returncode == EXIT_PEER_LOST, "a lost peer is transient: the TFJob recreates the pod"
    assert "Graph execution error" not in error, "the cause, not TensorFlow's preamble"
    with capsys.disabled():
        print(f"\n[peer lost: {fault} worker-{lost}] worker-{1 - lost} failed after {seconds:.1f} s: {error}")


@pytest.mark.slow
def test_peer_that_never_starts_fails_both_sides(dataset_work, capsys):
    """A two-worker cluster where one worker never starts (a pod left Pending): the chief alone,
    and worker 1 alone (in another cluster), each give up after --start-timeout with one error
    line and the retryable exit status, instead of waiting (TensorFlow's own wait is an hour)."""
    launched = time.monotonic()
    chief, chief_log = start_workers(dataset_work, "alone", (0,), "--start-timeout", "15")
    worker, worker_log = start_workers(dataset_work, "orphan", (1,), "--start-timeout", "15")
    try:
        seconds = {}
        for name, proc in (("worker-0", chief[0]), ("worker-1", worker[0])):
            wait_exit(proc, 180, f"{name} whose peer never started")
            seconds[name] = time.monotonic() - launched
    finally:
        for proc in chief + worker:
            proc.kill()
            proc.wait()
    for name, proc, log in (("worker-0", chief[0], chief_log[0]), ("worker-1", worker[0], worker_log[0])):
        result = subprocess.CompletedProcess([], proc.returncode, "", stderr_of(log))
        error = assert_one_line_error(result, f"{name} could not form the cluster of 2 within 15 s")
        assert proc.returncode == EXIT_PEER_LOST, result.stderr[-2000:]
        with capsys.disabled():
            print(f"\n[peer never started] {name} gave up {seconds[name]:.1f} s after its launch: {error}")


@pytest.mark.slow
def test_a_worker_recreated_past_its_attempts_fails_for_good(dataset_work, capsys):
    """A TFJob with restartPolicy ExitCode recreates a worker that exits 128-255 however often
    (the operator's backoffLimit counts only restarts in place). A worker counts its starts on
    the work volume: past --max-attempts it exits 1, which fails the job for good, at once and
    before loading TensorFlow. Here worker 1's peer never starts, so every attempt is lost."""
    codes, errors = [], []
    for _ in range(3):
        started = time.monotonic()
        procs, logs = start_workers(dataset_work, "recreated", (1,), "--start-timeout", "3", "--max-attempts", "2")
        wait_exit(procs[0], 180, "worker-1 whose peer never started")
        codes.append(procs[0].returncode)
        errors.append((stderr_of(logs[0]), time.monotonic() - started))
    assert codes == [EXIT_PEER_LOST, EXIT_PEER_LOST, 1], codes
    stderr, seconds = errors[-1]
    error = assert_one_line_error(
        subprocess.CompletedProcess([], 1, "", stderr), "worker-1 of cnn has started 2 times already (--max-attempts 2)"
    )
    assert seconds < 10, f"giving up took {seconds:.1f} s: it should come before TensorFlow loads"
    with capsys.disabled():
        print(f"\n[attempts] worker-1 exits {codes}; the third start gave up in {seconds:.1f} s: {error}")
