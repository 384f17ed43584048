"""Stopping the local runner: Ctrl-C (once or twice), SIGTERM twice, SIGKILL. However it ends,
no process it started outlives it. Real runs: two TensorFlow workers mid-training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT
from tests.helpers.jobs import job_env


def descendants_of(work: Path) -> list[psutil.Process]:
    """Live processes whose command line names the work dir (the runner's jobs)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if str(work) in " ".join(process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [pid for pid in pids if running(pid)]


def wait_gone(work: Path, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := descendants_of(work)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def start_training(tmp_path: Path, until: str = "on worker-0 of 2") -> tuple[subprocess.Popen, Path, Path, list[int]]:
    """The runner in its own session (as a terminal's foreground job is), stopped once both
    workers of the first candidate are training (once the chief's log holds `until`). Returns
    it, its work dir, its output file and the workers' pids."""
    work = tmp_path / "work"
    out = tmp_path / "runner.out"
    with open(out, "w") as handle:
        runner = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.local",
                "--work-dir",
                str(work),
                "--dataset",
                "synthetic",
                "--models",
                "cnn",
                "--epochs",
                "100",
                "--ingest-args=--train-size 1000 --test-size 100",
                "--train-args=--steps-per-epoch 20",
            ],
            cwd=ROOT,
            env=job_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240
    chief_log = None
    while time.monotonic() < deadline:
        logs = list(work.glob("runs/*/logs/cnn-worker-0.log"))
        chief_log = logs[0] if logs else None
        # The chief logs its settings once the cluster has formed, just before model.fit.
        if chief_log and until in chief_log.read_text():
            break
        assert runner.poll() is None, out.read_text()
        time.sleep(0.2)
    else:
        runner.kill()
        pytest.fail(f"training did not start within 240 s:\n{out.read_text()[-3000:]}")
    workers = [p.pid for p in descendants_of(work) if "jobs.train" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in descendants_of(work)]
    return runner, work, out, workers


@pytest.mark.slow
def test_sigkill_of_the_runner_leaves_no_worker(tmp_path):
    runner, work, _, workers = start_training(tmp_path)
    runner.kill()  # no handler sees this
    runner.wait()
    left = wait_gone(work, 5)
    assert left == [], [p.cmdline() for p in left]
    deadline = time.monotonic() + 5  # a dying process has no command line left: check the pids too
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(workers) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM)],
    ids=["ctrl-c", "ctrl-c-twice", "sigterm-twice"],
)
def test_a_stop_signal_ends_every_process(tmp_path, signals):
    # Stopped between epochs: the chief prints an epoch line every second or two, so a line it
    # prints during the grace period would show.
    runner, work, out, _ = start_training(tmp_path, until="epoch 2/")
    started = time.monotonic()
    for number, signum in enumerate(signals):
        if number:
            time.sleep(0.3)  # the second press comes while the first is being handled
        os.killpg(runner.pid, signum)  # Ctrl-C signals the terminal's foreground process group
    code = runner.wait(timeout=60)
    stopped_after = time.monotonic() - started
    output = out.read_text()
    assert code == 128 + signals[0], output[-2000:]
    # After "stopping…" a person reads only the final line (a second press: that it kills now);
    # the workers' epoch lines go on only in their logs.
    after = output[output.index("stopping…") :].splitlines()[1:]
    assert after and after[-1].startswith(f"stopped ({signals[0].name}): every process"), output[-3000:]
    again = {"killing every process of this run now"} if len(signals) > 1 else set()
    assert set(after[:-1]) <= again and len(after) <= 1 + len(again), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert wait_gone(work, 1) == []
    # A single press waits a grace period for the workers, then kills them; a second kills at once.
    assert stopped_after < (15 if len(signals) == 1 else 10), output[-2000:]


def test_a_job_whose_parent_dies_ends_with_its_children(tmp_path):
    """The portable path (macOS has no PR_SET_PDEATHSIG): a job watches its parent and, when
    it is gone, kills its own process group, the job's own children included."""
    marker = tmp_path / "marker"
    child = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        from jobs.core import lifecycle
        os.environ[lifecycle.PARENT_ENV] = sys.argv[1]
        lifecycle.follow_parent(kernel=False)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{marker}"])  # in the job's group
        time.sleep(300)
        """
    )
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}, str(os.getpid())], start_new_session=True)
        time.sleep(300)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env=job_env())
    try:
        deadline = time.monotonic() + 30
        sleeping = []
        while not sleeping and time.monotonic() < deadline:
            time.sleep(0.1)
            sleeping = [p.pid for p in descendants_of(marker) if p.info["cmdline"][-1] == str(marker)]
        assert sleeping, "the job's own child never started"
        job = psutil.Process(sleeping[0]).ppid()
        proc.kill()  # the job's parent
        proc.wait()
        deadline = time.monotonic() + 5
        while alive([job, *sleeping]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive([job, *sleeping]) == []
    finally:
        proc.kill()
        for process in descendants_of(marker):
            process.kill()
