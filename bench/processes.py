"""Jobs started by the benchmark: their environment, and a group of them supervised together
with the local runner's `jobs.local.processes.Process` (own process group, log file, last lines)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from jobs.core.cli import JobError
from jobs.core.cpus import worker_env
from jobs.local.processes import Process, free_ports, stop, wait_group
from jobs.train.distributed import tf_config

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 5.0  # from SIGTERM to SIGKILL for what is still running


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a job we start: ours, minus a cluster or tracking server we may be in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CONFIG", "MLFLOW_TRACKING_URI", "FMNIST_THREADS", "FMNIST_CPUS")
    }
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update(extra)
    return env


def worker_group(argv: list[str], workers: int, pin: bool = True) -> list[tuple[list[str], dict[str, str]]]:
    """`workers` copies of `argv` with operator-shaped TF_CONFIG on free localhost ports and
    the cores shared between them as jobs.local shares them (pinned unless `pin` is False);
    one worker: plain single-process, all cores, no TF_CONFIG."""
    shares = worker_env(workers, pin)
    if workers == 1:
        return [(argv, child_env(**shares[0]))]
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    return [(argv, child_env(**share, TF_CONFIG=tf_config(addresses, i))) for i, share in enumerate(shares)]


def run_group(argvs: list[tuple[list[str], dict[str, str]]], logs: Path, name: str, timeout: float) -> list[Process]:
    """Starts processes together and waits for all; a failure or the timeout ends them all and
    raises with the failed one's last lines. Returns the finished processes."""
    group = [
        Process(argv, logs / f"{name}-{i}.log", f"[{name}:{i}]", False, env) for i, (argv, env) in enumerate(argvs)
    ]
    try:
        failed = wait_group(group, deadline=time.monotonic() + timeout, interval=POLL_SECONDS)
    except TimeoutError:
        raise JobError(f"{name} did not finish within {timeout:.0f} s (logs under {logs})") from None
    finally:
        stop(group, STOP_GRACE_SECONDS)
    if failed is not None:
        raise JobError(f"{name} failed\n{failed.describe_failure()}")
    return group
