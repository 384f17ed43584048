"""Helpers for the fault tests (tests/faults/): waiting, process trees, a real
MLflow server, and a multi-worker training group the tests can kill a member of."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from jobs.local.processes import free_ports
from tests.helpers import ROOT
from tests.helpers.jobs import job_env

MLFLOW = Path(sys.executable).with_name("mlflow")


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls until `predicate()` is truthy and returns its value; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def finished_epochs(history: Path) -> list[int]:
    """Epochs the chief has recorded in history.json (empty if none yet)."""
    try:
        return [e["epoch"] for e in json.loads(history.read_text())["epochs"]]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (zombies count as gone: they hold no resources but a pid)."""
    living = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
    return living


def kill_tree(popen: subprocess.Popen) -> None:
    """SIGKILLs a child started with start_new_session=True and its whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=30)


def start_job(module: str, *args: str, log: Path, **env: str) -> subprocess.Popen:
    """`python -m jobs.<module> args` in its own session, output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"jobs.{module}", *map(str, args)],
            cwd=ROOT,
            env=job_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class MlflowServer:
    """`mlflow server` with a SQLite store and proxied artifacts in `root`, on loopback.

    Restartable on the same port and the same files, which is the point of the tests."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "mlflow-server.log"
        root.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 240.0) -> MlflowServer:
        argv = [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--allowed-hosts",
            f"127.0.0.1:{self.port},localhost:{self.port}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # As kustomize/base/mlflow.yaml runs it: no server-side job runner (8 more processes).
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started = time.monotonic()

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            return False

        try:
            wait_for(healthy, timeout, f"mlflow server on {self.url}", interval=0.5)
        except AssertionError:
            self.kill()
            raise AssertionError(f"mlflow server did not become healthy:\n{self.tail()}") from None
        self.startup_seconds = time.monotonic() - started
        return self

    def kill(self) -> None:
        """SIGKILL the server and its workers (no chance to flush anything)."""
        if self.proc is not None:
            kill_tree(self.proc)

    def stop(self) -> None:
        """SIGTERM, as a pod's shutdown would; SIGKILL what is left after a grace period."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def promote_cnn(work_root: Path, run_id: str) -> list:
    """The arguments of jobs.promote forcing candidate cnn of run `run_id` on synthetic data."""
    return [
        "promote",
        "--work-dir",
        work_root,
        "--run-id",
        run_id,
        "--dataset",
        "synthetic",
        "--models",
        "cnn",
        "--force",
    ]
