"""Jobs started by the benchmark: their environment, and a group of them supervised together
with the local runner's `jobs.local.Process` (own process group, log file, last lines)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from jobs.common import JobError, cpu_count
from jobs.distributed import tf_config
from jobs.local import Process, free_ports

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.1


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a job we start: ours, minus a cluster or tracking server we may be in."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MLFLOW_TRACKING_URI", "FMNIST_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update(extra)
    return env


def worker_group(argv: list[str], workers: int) -> list[tuple[list[str], dict[str, str]]]:
    """`workers` copies of `argv` with operator-shaped TF_CONFIG on free localhost ports, the
    cores shared between them; one worker: plain single-process, all cores, no TF_CONFIG."""
    if workers == 1:
        return [(argv, child_env(FMNIST_THREADS=str(cpu_count())))]
    threads = str(max(1, cpu_count() // workers))
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    return [(argv, child_env(FMNIST_THREADS=threads, TF_CONFIG=tf_config(addresses, i))) for i in range(workers)]


def run_group(argvs: list[tuple[list[str], dict[str, str]]], logs: Path, name: str, timeout: float) -> list[Process]:
    """Starts processes together and waits for all; a failure or the timeout ends them all and
    raises with the failed one's last lines. Returns the finished processes."""
    group = [
        Process(argv, logs / f"{name}-{i}.log", f"[{name}:{i}]", False, env) for i, (argv, env) in enumerate(argvs)
    ]
    deadline = time.monotonic() + timeout
    try:
        while not _finished(group, name):
            if time.monotonic() > deadline:
                raise JobError(f"{name} did not finish within {timeout:.0f} s (logs under {logs})")
            time.sleep(POLL_SECONDS)
        return group
    finally:
        for process in group:
            if process.poll() is None:
                process.kill()  # its process group: TERM, then KILL after a grace period
            process.wait()


def _finished(group: list[Process], name: str) -> bool:
    codes = [process.poll() for process in group]
    failed = [process for process, code in zip(group, codes, strict=True) if code not in (None, 0)]
    if failed:
        raise JobError(f"{name} failed\n{failed[0].describe_failure()}")
    return all(code == 0 for code in codes)
