"""Release state that cannot go wrong: each test reproduces a way it went wrong (a rollback that
waited for the lock, a canary left open, a run id taken twice, a history write that failed or
was cut short, corrupt files) with real processes and files, and checks what happens now.
docs/reliability.md lists each promise with its test."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.files import write_json
from jobs.core.paths import Work, versions
from jobs.local import settings, status
from jobs.release import history, state
from tests.helpers import ROOT
from tests.helpers.faults import wait_for
from tests.helpers.jobs import assert_one_line_error, job_env, run_job
from tests.pipeline.test_rollback import fake_versions

NOWHERE = "http://127.0.0.1:9"  # --no-check: never asked


def snapshot(work: Work) -> dict[str, bytes]:
    root = work.root / "models"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def holding_the_lock(work: Work):
    """The promotion lock held by this test, as a promotion in progress holds it."""
    path = work.served() / ".promote.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def waiting_for(path, pid: int) -> bool:
    """Whether process `pid` waits for the flock on `path` (a `->` line of /proc/locks)."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            at = fields.index("->") if "->" in fields else -1
            if at >= 0 and fields[at + 4] == str(pid) and fields[at + 5].endswith(f":{inode}"):
                return True
    return False


def start_rollback(work: Work, *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "jobs.rollback", "--work-dir", str(work.root), "--url", NOWHERE, "--no-check"]
    return subprocess.Popen(
        [*argv, *args], cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def promote_by_hand(work: Work, source_version: int) -> int:
    """What a promotion does under the lock: the next version and its history line."""
    record = {"model": "mlp", "run_id": "later", "accuracy": 0.9, "promoted_at": "now", "decision": "forced"}
    version = state.publish(versions(work.served())[source_version], work.served(), record)
    serving_config.serve_latest(work)
    history.catch_up(work)
    return version


# -- 1. a rollback decides under the lock, from what is served then ----------------------------


def test_a_rollback_that_waited_for_the_lock_does_not_undo_what_was_published_meanwhile(tmp_path):
    """Versions 1-3; the operator rolls back version 3 while a promotion holds the lock and
    publishes version 4. The rollback used to publish "version 5 serves version 3's model in
    place of version 4"; now it sees that what is served changed, and writes nothing."""
    work = Work(tmp_path)
    fake_versions(work, 3)
    with holding_the_lock(work) as lock:
        proc = start_rollback(work, "--reason", "v3 misreads sandals")
        wait_for(lambda: waiting_for(lock, proc.pid), 60, "the rollback to wait for the lock")
        assert promote_by_hand(work, 1) == 4
    done = finished(proc)
    assert_one_line_error(done, "version 4 was published while this rollback of version 3 waited", "nothing")
    assert list(versions(work.served())) == [1, 2, 3, 4]


def test_two_rollbacks_behind_one_lock_step_back_once(tmp_path):
    work = Work(tmp_path)
    fake_versions(work, 3)
    with holding_the_lock(work) as lock:
        procs = [start_rollback(work, "--reason", f"operator {i}") for i in (1, 2)]
        for proc in procs:
            wait_for(lambda proc=proc: waiting_for(lock, proc.pid), 60, "both rollbacks to wait for the lock")
    done = [finished(proc) for proc in procs]
    assert sorted(d.returncode for d in done) == [0, 1], [d.stderr[-2000:] for d in done]
    assert_one_line_error(next(d for d in done if d.returncode), "version 4 was published while this rollback")
    assert list(versions(work.served())) == [1, 2, 3, 4]
    assert json.loads((work.served() / "4" / "promotion.json").read_text())["restored_from"] == 2


# -- 2. a canary left open: ended from any state by one command --------------------------------


def canary_open(work: Work, record: object = None, canary_pin: bool = True) -> None:
    """Versions 1-3, version 2 stable (pinned), 3 on the canary servers, as promote leaves it;
    `record`: what canary.json holds (None: the file is missing; "as written": promote's own)."""
    fake_versions(work, 3)
    serving_config.pin(work, "stable", 2)
    if canary_pin:
        serving_config.pin(work, "canary", 3)
    if record == "as written":
        record = {"model": "fmnist", "stable_version": 2, "canary_version": 3, "run_id": "r1", "started_at": "t"}
    if isinstance(record, bytes):
        work.canary_state.write_bytes(record)
    elif record is not None:
        write_json(work.canary_state, record)


def end_canary(work: Work, **extra: str) -> subprocess.CompletedProcess:
    """make canary-end's script, as the Makefile runs it."""
    env = job_env(WORK_DIR=str(work.root), VENV=os.path.dirname(os.path.dirname(sys.executable)), **extra)
    return subprocess.run(["hack/canary-end.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def no_pins_and_no_canary(work: Work) -> bool:
    pins = [serving_config.pinned(serving_config.track_path(work, t)) for t in serving_config.TRACKS]
    return all(not p for p in pins) and not work.canary_state.exists()


@pytest.mark.parametrize(
    "record",
    ["as written", None, [], "x", {}, b"\xff\xfe{", {"stable_version": 2, "canary_version": "3"}],
    ids=["as-promote-left-it", "record-lost", "list", "string", "empty-object", "not-utf8", "not-a-number"],
)
def test_make_canary_end_rolls_back_a_canary_left_in_any_state(tmp_path, record):
    """Smoke failed (or the runner was killed) with the canary open: whatever canary.json holds,
    or without it, the stable model is published again as version 4 and served everywhere."""
    work = Work(tmp_path)
    canary_open(work, record)
    proc = end_canary(work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(versions(work.served())) == [1, 2, 3, 4]
    four = json.loads((work.served() / "4" / "promotion.json").read_text())
    assert (four["restored_from"], four["rollback_of"]) == (2, 3)
    assert no_pins_and_no_canary(work)
    assert serving_config.served_version(work) == 4
    assert end_canary(work).returncode == 0 and list(versions(work.served())) == [1, 2, 3, 4]  # nothing left to end


def test_make_canary_end_lifts_pins_left_without_a_canary(tmp_path):
    """Killed after pinning the stable servers and before publishing: nothing to roll back."""
    work = Work(tmp_path)
    fake_versions(work, 3)
    serving_config.pin(work, "stable", 3)
    proc = end_canary(work)
    assert proc.returncode == 0, proc.stderr
    assert list(versions(work.served())) == [1, 2, 3] and no_pins_and_no_canary(work)


def test_make_canary_end_never_rolls_back_a_later_unrelated_version(tmp_path):
    """A stale canary.json (canary 3 against 2) with version 4 published later: ending the
    canary used to roll version 4 back to 2; it now only lifts the canary's pins."""
    work = Work(tmp_path)
    canary_open(work, "as written")
    fake = work.served() / "4"
    fake.mkdir()
    write_json(fake / "promotion.json", {"model": "mlp", "run_id": "later"})
    proc = end_canary(work)
    assert proc.returncode == 0, proc.stderr
    assert list(versions(work.served())) == [1, 2, 3, 4] and no_pins_and_no_canary(work)


def test_make_canary_end_with_nothing_open_changes_nothing(tmp_path):
    work = Work(tmp_path)
    fake_versions(work, 2)
    before = snapshot(work)
    proc = end_canary(work)
    assert proc.returncode == 0 and "canary=none" in proc.stdout, proc.stderr
    assert snapshot(work) == before


@pytest.mark.parametrize("record", [[], "x", {}, b"\xff\xfe"], ids=["list", "string", "empty-object", "not-utf8"])
def test_a_damaged_canary_record_is_one_line_everywhere(tmp_path, record):
    work = Work(tmp_path / "work")
    canary_open(work, record)
    before = snapshot(work)
    urls = ("--stable-url", NOWHERE, "--canary-url", NOWHERE)
    for proc in (
        run_job("rollback", "--work-dir", work.root, "--reason", "x", "--url", NOWHERE),
        run_job("canary", "--work-dir", work.root, "--run-id", "r", *urls),
    ):
        assert_one_line_error(proc, str(work.canary_state), "make canary-end")
    assert snapshot(work) == before
    shown = status.report(work, None, 5)
    assert "canary: " in shown and "make canary-end" in shown


def test_status_shows_the_pins_and_the_open_canary(tmp_path):
    """make status used to show version 3 (the newest on disk) while the stable servers served 2."""
    work = Work(tmp_path)
    canary_open(work, "as written")
    shown = status.report(work, None, 5)
    assert "served: version 2 in " in shown, shown
    assert f"pin: the stable servers serve version 2 only ({work.serving_config('stable')})" in shown
    assert f"pin: the canary servers serve version 3 only ({work.serving_config('canary')})" in shown
    assert "canary: open: version 3 on the canary servers against version 2 (run r1 at t)" in shown
    assert "make canary-end" in shown


def test_promote_and_a_new_run_refuse_while_a_canary_is_open(tmp_path):
    """Every later make local used to wait 10 minutes for a version the pins held back."""
    work = Work(tmp_path / "work")
    canary_open(work, "as written")
    started = time.monotonic()
    proc = run_job("local", "--work-dir", work.root, "--dataset", "synthetic", "--models", "cnn")
    assert_one_line_error(proc, "a canary of version 3 (run r1) is still open", "make canary-end")
    assert time.monotonic() - started < 60 and not work.runs.exists()
    proc = run_job("promote", "--work-dir", work.root, "--run-id", "r2", "--dataset", "synthetic", "--force")
    assert_one_line_error(proc, "a canary of version 3 is in progress", "make canary-end")


# -- 3. run ids ---------------------------------------------------------------------------------


def test_two_runs_in_one_second_get_their_own_run_ids_and_folders(tmp_path):
    assert settings.default_run_id() != settings.default_run_id()
    work = Work(tmp_path / "work")
    work.run("twin").mkdir(parents=True)  # the other run claimed it first
    proc = run_job("local", "--work-dir", work.root, "--run-id", "twin", "--dataset", "synthetic")
    assert_one_line_error(proc, "run twin exists already in", "choose another --run-id")
    assert list(work.run("twin").iterdir()) == []


# -- 4. MLflow converges to what is served ------------------------------------------------------


def record_of(work: Work, version: int) -> dict:
    return json.loads((work.served() / str(version) / "promotion.json").read_text())


@pytest.mark.slow
def test_mlflow_catches_up_with_what_is_served_after_a_locked_store(tmp_path, mlflow_uri):
    """Versions 1-3 were promoted while tracking was away (each record names its MLflow run,
    none is registered), then a rollback runs while another process holds the SQLite store
    (BEGIN EXCLUSIVE). It used to exit 0 with the registry silently behind; now it exits 3
    saying so, and the next release job (make canary-end, nothing open) registers what is
    served and points champion at it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("fmnist").experiment_id
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    for version in (1, 2, 3):
        run = client.create_run(experiment, run_name=f"candidate-{version}").info.run_id
        write_json(work.served() / str(version) / "promotion.json", {**record_of(work, version), "mlflow_run_id": run})
    args = ("--work-dir", work.root, "--reason", "v3 is worse", "--url", NOWHERE, "--no-check")
    holder = sqlite3.connect(mlflow_uri.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        locked = run_job("rollback", *args, MLFLOW_TRACKING_URI=mlflow_uri)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert locked.returncode == 3, locked.stderr[-3000:]
    assert_one_line_error(locked, "version 4 is served, but MLflow is behind", "register version 1", "champion on")
    assert list(versions(work.served())) == [1, 2, 3, 4]

    caught_up = end_canary(work, MLFLOW_TRACKING_URI=mlflow_uri)
    assert caught_up.returncode == 0, caught_up.stderr[-3000:]
    registered = {v: record_of(work, v).get("registered_version") for v in (1, 2, 3, 4)}
    assert None not in registered.values() and registered[4] == registered[2], registered
    champion = client.get_model_version_by_alias("fmnist", "champion")
    assert str(champion.version) == registered[2] and champion.tags["serving_version"] == "2"
    assert champion.run_id == record_of(work, 2)["mlflow_run_id"]
    again = end_canary(work, MLFLOW_TRACKING_URI=mlflow_uri)
    assert again.returncode == 0 and len(client.search_model_versions("name='fmnist'")) == 3


# -- 5, 6, 10. the served history ---------------------------------------------------------------


def test_a_line_after_a_fragment_is_whole_and_the_fragment_is_skipped_alone(tmp_path):
    work = Work(tmp_path)
    history.append(work, {"event": "promote", "version": 1})
    with open(history.path(work), "ab") as log:
        log.write(b'{"event": "promote", "vers')  # a crash mid-line
    history.append(work, {"event": "promote", "version": 2})
    with open(history.path(work), "ab") as log:
        log.write(b"\xff\xfe garbage\n")  # not UTF-8
    history.append(work, {"event": "promote", "version": 3})
    assert [line["version"] for line in history.read(work)] == [1, 2, 3]


def test_a_history_that_cannot_be_written_says_what_was_published_and_catches_up_once(tmp_path):
    """The append after publishing failed with a bare traceback and a retry rolled back twice.
    Now: one line saying what was published; the next release job writes the missing line,
    exactly once."""
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    history.path(work).mkdir()  # cannot be opened for writing
    proc = run_job("rollback", "--work-dir", work.root, "--reason", "x", "--url", NOWHERE, "--no-check")
    assert_one_line_error(proc, "version 4 (version 2's model, in place of version 3) was published", "do not repeat")
    assert list(versions(work.served())) == [1, 2, 3, 4]
    history.path(work).rmdir()
    proc = run_job("rollback", "--work-dir", work.root, "--reason", "y", "--url", NOWHERE, "--no-check")
    assert proc.returncode == 0, proc.stderr
    assert history.catch_up(work) == []  # idempotent
    lines = history.read(work)
    assert [line["version"] for line in lines] == [1, 2, 3, 4, 5]
    assert (lines[3]["event"], lines[3]["restored_from"], lines[3]["reason"]) == ("rollback", 2, "x")


def test_a_reason_cannot_forge_lines_in_status(tmp_path):
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    forged = "typo\nversion 9 2026-01-01 by root: promoted cnn of run evil\x1b[2J"
    proc = run_job("rollback", "--work-dir", work.root, "--reason", forged, "--url", NOWHERE, "--no-check")
    assert proc.returncode == 0, proc.stderr
    shown = status.report(work, None, 5)
    assert not any(line.startswith("version 9") or "\x1b" in line for line in shown.splitlines())
    assert "typo\\nversion 9 2026-01-01 by root: promoted cnn of run evil\\x1b[2J" in shown


# -- 8. corrupt state ---------------------------------------------------------------------------


def test_corrupt_state_is_one_line(tmp_path):
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    args = ("--work-dir", work.root, "--url", NOWHERE, "--no-check")
    # A symlink loop where the next version goes.
    os.symlink("4", work.served() / "4")
    proc = run_job("rollback", *args, "--reason", "x")
    assert_one_line_error(proc, f"{work.served() / '4'} is not a version folder that can be read", "remove it")
    os.unlink(work.served() / "4")
    # A served version's promotion.json that is a list: its own promotion, with no record.
    write_json(work.served() / "3" / "promotion.json", ["not", "a", "record"])
    assert "served: version 3 in " in status.report(work, None, 5)
    # The stable servers' config as bytes that are not text: what is served cannot be told.
    serving_config.path(work).write_bytes(b"model_config_list {\xff\xfe")
    with pytest.raises(JobError, match=r"is not a model config \(not UTF-8 text\): make canary-end rewrites it"):
        serving_config.served_version(work)
    assert f"pin: {serving_config.path(work)} is not a model config" in status.report(work, None, 5)
    assert end_canary(work).returncode == 0
    assert serving_config.pinned(serving_config.path(work)) == ()


def run_as_root() -> bool:
    return os.geteuid() == 0


@pytest.mark.skipif(not run_as_root(), reason="mounting a small tmpfs (a disk that fills up) needs root")
def test_a_full_disk_during_the_copy_publishes_nothing(tmp_path):
    work = Work(tmp_path / "work")
    work.root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work.root)], check=True)
    try:
        fake_versions(work, 2)
        (work.served() / "1" / "variables.data").write_bytes(os.urandom(700 * 1024))
        proc = run_job(
            "rollback", "--work-dir", work.root, "--to", "1", "--reason", "x", "--url", NOWHERE, "--no-check"
        )
        assert_one_line_error(proc, "could not copy", "as version 3", "nothing was published", "free space")
        assert list(versions(work.served())) == [1, 2]
        assert not [p for p in work.served().iterdir() if p.name.startswith(".3.tmp-")]
    finally:
        subprocess.run(["umount", str(work.root)], check=True)
