"""How much of the machine a job may use: CPUs and memory (cgroup limits included), whether
training workers fit in it, TensorFlow's thread pools sized to it, and the CPUs each local
training worker is pinned to.

Pinning: training workers that share one machine each get their own CPUs (`FMNIST_CPUS`, set
by the launcher: jobs.local, the benchmark). Left to the scheduler, two workers' threads
(compute, gRPC, tf.data) move between the same cores; pinned, their gradient all-reduce
measured about a third faster and a step about a tenth faster here (docs/benchmarks.md). On
Kubernetes each worker is its own pod and the kubelet places it, so nothing is pinned."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from jobs.core.cli import JobError

log = logging.getLogger("jobs.cpus")


def cpu_count() -> int:
    """CPUs this process may use: the env override, else the cgroup quota and affinity (after
    `pin`, the pinned CPUs)."""
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


def parse_cpu_list(text: str) -> set[int]:
    """CPUs written as Linux writes them (`0-3,6`)."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            low, high = int(first), int(last if dash else first)
            if low < 0 or high < low:
                raise ValueError(part)
            cpus.update(range(low, high + 1))
    except ValueError:
        raise JobError(f"FMNIST_CPUS must be a list of CPUs such as 0-1,4, got {text!r}") from None
    return cpus


def format_cpu_list(cpus: set[int]) -> str:
    """The inverse of `parse_cpu_list`: runs of consecutive CPUs as ranges."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def worker_cpus(workers: int) -> list[set[int]] | None:
    """`workers` disjoint, equal shares of the CPUs this process may use, in order; None when
    there is nothing to share (one worker), too little (fewer CPUs than workers) or no way to
    pin (not Linux)."""
    if workers < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    share = len(allowed) // workers
    if share == 0:
        return None
    return [set(allowed[i * share : (i + 1) * share]) for i in range(workers)]


def worker_env(workers: int, pin: bool = True) -> list[dict[str, str]]:
    """Each training worker's share of this machine: FMNIST_THREADS, and FMNIST_CPUS when `pin`
    and the CPUs can be shared out (`worker_cpus`). One worker gets every CPU, unpinned."""
    threads = str(max(1, cpu_count() // workers))
    shares = worker_cpus(workers) if pin else None
    if shares is None:
        return [{"FMNIST_THREADS": threads} for _ in range(workers)]
    return [{"FMNIST_THREADS": threads, "FMNIST_CPUS": format_cpu_list(cpus)} for cpus in shares]


def pin() -> set[int] | None:
    """Confines every thread of this process, and the threads they start, to `FMNIST_CPUS`;
    the CPUs, or None when it is not set."""
    text = os.environ.get("FMNIST_CPUS", "").strip()
    if not text:
        return None
    cpus = parse_cpu_list(text)
    if not hasattr(os, "sched_setaffinity"):
        raise JobError("FMNIST_CPUS is set but this system cannot pin a process to CPUs: unset it")
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        raise JobError(f"FMNIST_CPUS={text} names CPUs this process may not use: it may use {format_cpu_list(allowed)}")
    # An affinity is per thread, and threads inherit their creator's: every thread started so
    # far (numpy's, for one) is set, and the ones TensorFlow starts later follow.
    tasks = Path("/proc/self/task")
    for tid in sorted(int(t) for t in os.listdir(tasks)) if tasks.is_dir() else [0]:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)
    return cpus


def pinned_to() -> str:
    """The CPUs `pin` confines this process to, as a list, or "any"."""
    return os.environ.get("FMNIST_CPUS", "").strip() or "any"


def configure_threads(intra: int = 0, inter: int = 0) -> int:
    """Pins this process to `FMNIST_CPUS` if set, then sizes TensorFlow's thread pools: `intra`
    and `inter` threads, each 0 for "from the CPUs we may use" (TF reads host cores otherwise).
    Returns the intra-op threads."""
    cpus = pin()
    if cpus is not None:
        log.info("pinned to CPUs %s", format_cpu_list(cpus))
    import tensorflow as tf

    tf.get_logger().setLevel(logging.WARNING)  # per-collective INFO lines drown the progress
    threads = cpu_count()
    intra, inter = intra or threads, inter or max(1, min(threads, 2))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return intra


def serving_intra_op_threads() -> int:
    """The model server's intra-op threads when not given: every CPU but one, which the HTTP
    event loop needs (TF Serving's HTTP threads are C++ and cost little). On 2 cores that is 1,
    and one thread per op was also the faster model here: one image in 0.62 ms instead of 0.94,
    32 images at 7,700 images/s instead of 4,700 (docs/benchmarks.md)."""
    return max(1, cpu_count() - 1)


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
