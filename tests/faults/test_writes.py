"""Interrupted and concurrent writes: ingest and promotion SIGKILLed mid-write, two promotions
at once. Readers must only ever see nothing or a whole dataset / a whole model version."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from jobs.core.paths import Work, versions
from jobs.ingest import data
from jobs.ingest.ingest import ingest
from tests.helpers import ROOT
from tests.helpers.faults import kill_tree, promote_cnn, start_job, wait_for
from tests.helpers.jobs import copy_model, evaluated, run_job

BIG = ("--train-size", "3000", "--test-size", "500")  # another dataset; the slow disk keeps its write open


def slow_disk(tmp_path) -> dict[str, str]:
    """Env for a job on a disk whose every fsync takes a minute: the writers fsync before their
    rename, so the write window stays open until the test kills the job, however fast the
    real disk is."""
    hook = tmp_path / "slow-disk"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import os\nimport time\n_fsync = os.fsync\n\n"
        "def fsync(fd):\n    _fsync(fd)\n    time.sleep(60)\n\n"
        "os.fsync = fsync\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}


def temp_dirs(folder, name: str) -> list:
    return sorted(folder.glob(f".{name}.tmp-*")) if folder.is_dir() else []


def start_big_ingest(work: Work, tmp_path):
    """A big synthetic ingest on a slow disk, returned once it writes its temp dir."""
    target = work.dataset("synthetic")
    args = ("--work-dir", work.root, "--dataset", "synthetic", *BIG)
    proc = start_job("ingest", *args, log=tmp_path / "ingest.log", **slow_disk(tmp_path))
    try:
        wait_for(
            lambda: temp_dirs(target.parent, "synthetic") or proc.poll() is not None, 300, "ingest to start writing"
        )
    except BaseException:
        kill_tree(proc)
        raise
    return proc


@pytest.mark.slow
def test_ingest_killed_mid_write_leaves_the_old_dataset_whole(tmp_path):
    work = Work(tmp_path / "work")
    small = {"name": "synthetic", "train_size": 300, "test_size": 100, "seed": 0}
    ingest(work, small, "synthetic")
    target = work.dataset("synthetic")
    before = data.read_manifest(target)

    proc = start_big_ingest(work, tmp_path)
    try:
        assert proc.poll() is None, f"ingest ended before the kill:\n{(tmp_path / 'ingest.log').read_text()}"
    finally:
        kill_tree(proc)
    assert proc.returncode == -9
    assert temp_dirs(target.parent, "synthetic"), "the kill did not land mid-write"

    # Training sees the previous dataset, whole: same manifest, every array matching it.
    assert data.read_manifest(target) == before
    assert len(data.load(target)["train"].labels) == 300
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["synthetic"]

    again = run_job("ingest", "--work-dir", work.root, "--dataset", "synthetic", *BIG)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "written=1" in again.stdout
    assert len(data.load(target)["train"].labels) == 3000


@pytest.mark.slow
def test_ingest_killed_before_any_dataset_leaves_none(tmp_path):
    work = Work(tmp_path / "work")
    target = work.dataset("synthetic")
    proc = start_big_ingest(work, tmp_path)
    try:
        assert proc.poll() is None, "ingest ended before the kill"
    finally:
        kill_tree(proc)
    assert not target.exists(), "a partial dataset became visible"
    train = run_job("train", "--work-dir", work.root, "--run-id", "r", "--dataset", "synthetic", "--model", "cnn")
    assert train.returncode == 1 and "run the ingest step first" in train.stderr


def make_candidate(work: Work, run_id: str, model_dir, accuracy: float = 0.5, padding_mb: int = 0) -> None:
    candidate = work.candidate(run_id, "cnn")
    copy_model(model_dir, candidate.model)
    if padding_mb:  # an extra file a loader ignores, so that copying the version takes a while
        with open(candidate.model / "variables" / "padding.bin", "wb") as out:
            for _ in range(padding_mb):
                out.write(os.urandom(1 << 20))
    evaluated(work, run_id, "cnn", validation_accuracy=accuracy)


def promote(work: Work, run_id: str, *extra: str):
    return run_job(
        "promote", "--work-dir", work.root, "--run-id", run_id, "--dataset", "synthetic", "--models", "cnn", *extra
    )


def assert_whole(version_dir) -> None:
    assert (version_dir / "saved_model.pb").is_file(), version_dir
    assert (version_dir / "variables" / "variables.index").is_file(), version_dir
    record = json.loads((version_dir / "promotion.json").read_text())
    assert record["version"] == int(version_dir.name)


@pytest.mark.slow
def test_promotion_killed_mid_copy_never_shows_a_partial_version(ingested, trained_model, tmp_path):
    work = Work(ingested)
    base = work.served()
    make_candidate(work, "a", trained_model)
    first = promote(work, "a")
    assert first.returncode == 0 and "version=1" in first.stdout, first.stderr[-3000:]

    make_candidate(work, "b", trained_model, padding_mb=300)
    proc = start_job(
        "promote",
        "--work-dir",
        work.root,
        "--run-id",
        "b",
        "--dataset",
        "synthetic",
        "--models",
        "cnn",
        "--force",
        log=tmp_path / "promote.log",
        **slow_disk(tmp_path),
    )
    try:
        wait_for(lambda: temp_dirs(base, "2") or proc.poll() is not None, 300, "promotion to start copying")
        assert proc.poll() is None, f"promotion ended before the kill:\n{(tmp_path / 'promote.log').read_text()}"
    finally:
        kill_tree(proc)
    assert temp_dirs(base, "2"), "the kill did not land mid-copy"
    assert list(versions(base)) == [1], "a partial version became visible"
    assert_whole(base / "1")

    again = promote(work, "b", "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "version=2" in again.stdout
    assert list(versions(base)) == [1, 2]
    assert_whole(base / "2")
    assert (base / "2" / "variables" / "padding.bin").stat().st_size == 300 << 20
    assert not temp_dirs(base, "2"), "the interrupted promotion's temp dir was not cleaned up"


@pytest.mark.slow
def test_concurrent_promotions_take_distinct_whole_versions(ingested, trained_model):
    """Two pipelines finishing together, three times over; meanwhile a reader polls the base
    path the way a model server does and checks every numeric folder it sees is whole."""
    work = Work(ingested)
    base = work.served()
    for run_id in ("p0", "p1"):
        make_candidate(work, run_id, trained_model)

    checked, problems, stop = [0], [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for version in versions(base):
                path = base / str(version)
                for part in ("saved_model.pb", "variables/variables.index", "promotion.json"):
                    if not (path / part).exists() and path.exists():
                        problems.append(f"{path} has no {part}")
                checked[0] += 1
            time.sleep(0.01)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    outputs = []
    try:
        for _ in range(3):
            procs = [
                start_job(*promote_cnn(work.root, run_id), log=work.root / f"promote-{run_id}.log")
                for run_id in ("p0", "p1")
            ]
            for proc in procs:
                assert proc.wait(timeout=300) == 0, (work.root / "promote-p0.log").read_text()[-3000:]
    finally:
        stop.set()
        thread.join()
    for run_id in ("p0", "p1"):
        log = (work.root / f"promote-{run_id}.log").read_text()
        outputs += [int(line.split("=", 1)[1]) for line in log.splitlines() if line.startswith("version=")]

    assert problems == []
    assert checked[0] > 0, "the reader never saw a version"
    assert sorted(outputs) == [1, 2, 3, 4, 5, 6], "each promotion its own number, none lost"
    assert list(versions(base)) == [1, 2, 3, 4, 5, 6]
    for version in versions(base):
        assert_whole(base / str(version))
    assert not [p.name for p in base.iterdir() if p.name.startswith(".") and p.is_dir()], "temp dirs left"
