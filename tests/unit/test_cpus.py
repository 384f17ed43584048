"""The CPUs a job may use and the pinning of local training workers (jobs.cpus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs.core import cpus
from jobs.core.cli import JobError
from tests.helpers import ROOT

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning needs sched_setaffinity")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", {0}), ("0-3,6", {0, 1, 2, 3, 6}), (" 2 , 4-5 ", {2, 4, 5}), ("7-7", {7})],
)
def test_cpu_lists_read_and_write_as_linux_writes_them(text, expected):
    assert cpus.parse_cpu_list(text) == expected
    assert cpus.parse_cpu_list(cpus.format_cpu_list(expected)) == expected
    assert cpus.format_cpu_list({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9"


@pytest.mark.parametrize("text", ["a", "3-1", "-1", "1,,2", "0-", "1.5"])
def test_a_bad_cpu_list_is_one_line_naming_the_variable(text):
    with pytest.raises(JobError) as err:
        cpus.parse_cpu_list(text)
    assert str(err.value) == f"FMNIST_CPUS must be a list of CPUs such as 0-1,4, got {text!r}"


@linux_only
@pytest.mark.parametrize(
    ("allowed", "workers", "expected"),
    [
        (range(8), 2, [{0, 1, 2, 3}, {4, 5, 6, 7}]),
        (range(8), 3, [{0, 1}, {2, 3}, {4, 5}]),  # equal shares; the rest stays free
        ([2, 3, 6, 7], 2, [{2, 3}, {6, 7}]),  # the CPUs this process may use, not 0..n
        (range(2), 2, [{0}, {1}]),
        (range(2), 3, None),  # fewer CPUs than workers: nothing to pin
        (range(8), 1, None),  # one worker has every CPU
    ],
)
def test_workers_get_disjoint_equal_shares_of_the_allowed_cpus(monkeypatch, allowed, workers, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed))
    monkeypatch.delenv("FMNIST_THREADS", raising=False)
    assert cpus.worker_cpus(workers) == expected
    envs = cpus.worker_env(workers)
    threads = str(max(1, cpus.cpu_count() // workers))
    assert [env["FMNIST_THREADS"] for env in envs] == [threads] * workers
    if expected is None:
        assert all("FMNIST_CPUS" not in env for env in envs)
    else:
        assert [cpus.parse_cpu_list(env["FMNIST_CPUS"]) for env in envs] == expected
    assert all("FMNIST_CPUS" not in env for env in cpus.worker_env(workers, pin=False))


def test_pin_without_fmnist_cpus_changes_nothing(monkeypatch):
    monkeypatch.delenv("FMNIST_CPUS", raising=False)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    assert cpus.pin() is None and cpus.pinned_to() == "any"
    if before is not None:
        assert os.sched_getaffinity(0) == before


@linux_only
def test_pinning_to_a_cpu_this_process_may_not_use_is_refused_before_anything_changes(monkeypatch):
    before = os.sched_getaffinity(0)
    outside = max(before) + 1
    monkeypatch.setenv("FMNIST_CPUS", str(outside))
    with pytest.raises(JobError) as err:
        cpus.pin()
    assert str(err.value) == (
        f"FMNIST_CPUS={outside} names CPUs this process may not use: it may use {cpus.format_cpu_list(before)}"
    )
    assert os.sched_getaffinity(0) == before


PINNED_PROCESS = """
import json, os, threading
from jobs.core import cpus

def affinity(thread):
    return sorted(os.sched_getaffinity(thread.native_id))

started = threading.Event()
stop = threading.Event()
earlier = threading.Thread(target=lambda: (started.set(), stop.wait()))
earlier.start()
started.wait()
pinned = cpus.pin()
later = threading.Thread(target=stop.wait)
later.start()
print(json.dumps({
    "pinned": sorted(pinned),
    "main": sorted(os.sched_getaffinity(0)),
    "earlier": affinity(earlier),
    "later": affinity(later),
    "count": cpus.cpu_count(),
}))
stop.set()
"""


@linux_only
def test_pin_confines_every_thread_started_before_and_after_it():
    """A real process: a thread started before `pin` (as numpy's are) is moved too, and a
    thread started after it inherits the CPUs, as TensorFlow's pools do."""
    cpu = max(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "FMNIST_THREADS"}
    env.update(FMNIST_CPUS=str(cpu), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", PINNED_PROCESS], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(proc.stdout)
    assert seen == {"pinned": [cpu], "main": [cpu], "earlier": [cpu], "later": [cpu], "count": 1}


def test_the_local_runner_pins_unless_told_not_to(tmp_path, monkeypatch):
    from jobs.local import settings as local_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    parser = local_settings.build_parser()
    for flags, pinned in (([], True), (["--no-pin"], False), (["--pin"], True)):
        args = parser.parse_args(["--work-dir", str(tmp_path / "work"), *flags])
        assert local_settings.settings_from(args).pin is pinned, flags


@pytest.mark.parametrize(("threads", "expected"), [("1", 1), ("2", 1), ("8", 7)])
def test_the_model_server_leaves_one_cpu_to_its_event_loop(monkeypatch, threads, expected):
    monkeypatch.setenv("FMNIST_THREADS", threads)
    assert cpus.serving_intra_op_threads() == expected


def test_thread_pools_are_sized_as_asked_else_from_the_cpus():
    """TensorFlow's own view of its pools after configure_threads (in a fresh process: the pools
    are fixed once TensorFlow starts)."""
    code = (
        "import sys, tensorflow as tf\n"
        "from jobs.core.cpus import configure_threads\n"
        "intra, inter = map(int, sys.argv[1:])\n"
        "got = configure_threads(intra, inter)\n"
        "t = tf.config.threading\n"
        "print(got, t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
    )
    env = {**os.environ, "FMNIST_THREADS": "3", "PYTHONPATH": str(ROOT)}
    env.pop("FMNIST_CPUS", None)

    def sizes(intra: int, inter: int) -> list[int]:
        done = subprocess.run(
            [sys.executable, "-c", code, str(intra), str(inter)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return [int(value) for value in done.stdout.split()]

    assert sizes(0, 0) == [3, 3, 2]  # every CPU for one op, up to 2 ops at once
    assert sizes(1, 1) == [1, 1, 1]
