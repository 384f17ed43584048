"""How much of the machine a job may use: CPUs and memory (cgroup limits included), whether
training workers fit in it, and TensorFlow's thread pools sized to it."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from jobs.cli import JobError

log = logging.getLogger("jobs.cpus")


def cpu_count() -> int:
    """CPUs this process may use: the env override, else the cgroup quota and affinity."""
    override = os.environ.get("FMNIST_THREADS", "").strip()
    if override:
        try:
            return max(1, int(float(override)))
        except ValueError:
            raise JobError(f"FMNIST_THREADS must be a number, got {override!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    return cpus


def available_memory() -> int | None:
    """Bytes this process could still use: MemAvailable within the cgroup's limit on Linux,
    the physical memory elsewhere; None if unknown."""
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = max(0, int(limit) - used)
            available = room if available is None else min(available, room)
    return available


def configure_threads() -> int:
    """Sizes TensorFlow's thread pools to the CPUs we may use (TF reads host cores otherwise)."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.WARNING)  # per-collective INFO lines drown the progress
    threads = cpu_count()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(threads, 2)))
    return threads


def check_resources(workers: int, worker_mib: int) -> None:
    """Refuses workers that cannot fit in memory; warns when they far outnumber the CPUs."""
    available = available_memory()
    needed = workers * worker_mib * 2**20
    if available is not None and needed > available:
        fit = max(1, available // (worker_mib * 2**20))
        raise JobError(
            f"{workers} workers need about {needed / 2**30:.1f} GiB ({worker_mib / 1024:.1f} GiB each) but "
            f"{available / 2**30:.1f} GiB is available: use WORKERS={min(fit, workers - 1)} or fewer, or free memory"
        )
    cpus = cpu_count()
    if workers > 2 * cpus:
        log.warning(
            "%d workers share %d CPU%s (%.2f of a CPU each): beyond the CPUs, more workers on one machine only "
            "add overhead (docs/benchmarks.md); WORKERS=%d or fewer trains faster here",
            workers,
            cpus,
            "s" if cpus > 1 else "",
            cpus / workers,
            cpus,
        )
