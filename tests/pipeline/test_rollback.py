"""Rollback: which version it goes back to (the served history), what it writes (a new version,
nothing deleted, the history), and, end to end against a real model server and MLflow store,
that the server switches, the alias follows, and a rollback that cannot be checked writes
nothing."""

from __future__ import annotations

import json
import socket

import pytest

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.files import write_json
from jobs.core.paths import Work, versions
from jobs.local import status
from jobs.release import history, rollback
from jobs.tracking.tracker import Tracker
from tests.helpers.jobs import assert_one_line_error, run_job


def rolled(version: int, restored_from: int, origin: int) -> dict:
    return {"rollback_of": version - 1, "restored_from": restored_from, "origin": origin}


def test_each_rollback_steps_back_once_skipping_what_was_rolled_away_from():
    promoted = {1: {}, 2: {}, 3: {}}
    assert history.target(promoted, None) == (history.Entry(3, 3), 2)
    once = {**promoted, 4: rolled(4, 2, 2)}
    assert history.stack(once) == [history.Entry(1, 1), history.Entry(4, 2)]
    assert history.target(once, None) == (history.Entry(4, 2), 1)
    twice = {**once, 5: rolled(5, 1, 1)}
    with pytest.raises(JobError, match="nothing to go back to: version 5 is the only one"):
        history.target(twice, None)
    # A promotion after a rollback goes on top; rolling it back returns to the restored model.
    again = {**twice, 6: {"model": "cnn"}}
    assert history.target(again, None) == (history.Entry(6, 6), 5)
    # Forward to a version rolled away from: it goes on top, and the default then comes back.
    forward = {**twice, 6: rolled(6, 3, 3)}
    assert history.stack(forward) == [history.Entry(5, 1), history.Entry(6, 3)]
    assert history.target(forward, None)[1] == 5
    # Rolling back to a rollback's folder counts as its origin.
    assert history.stack({**once, 5: rolled(5, 4, 2)}) == [history.Entry(1, 1), history.Entry(5, 2)]


def test_targets_that_are_refused():
    served = {1: {}, 2: {}, 3: rolled(3, 1, 1)}
    with pytest.raises(JobError, match="nothing is served yet"):
        history.target({}, None)
    with pytest.raises(JobError, match=r"no version 7 to roll back to \(versions: 1, 2, 3\)"):
        history.target(served, 7)
    with pytest.raises(JobError, match="version 3 is the one served now"):
        history.target(served, 3)
    with pytest.raises(JobError, match="version 1 holds the model that version 3 serves now"):
        history.target(served, 1)
    assert history.target(served, 2) == (history.Entry(3, 1), 2)
    # An origin that cannot be one (not earlier, not a number) is ignored: its own promotion.
    assert history.stack({1: {}, 2: {"origin": 5}, 3: {"origin": "1"}}) == [history.Entry(v, v) for v in (1, 2, 3)]


def test_the_history_log_survives_a_torn_line(tmp_path):
    work = Work(tmp_path)
    history.append(work, {"event": "promote", "version": 1, "model": "cnn", "run_id": "a", "accuracy": 0.91})
    with open(history.path(work), "a") as log:
        log.write('{"event": "promote", "vers')  # a crash in mid-line
    assert [line["version"] for line in history.read(work)] == [1]
    assert history.describe(history.read(work)[0]).startswith("version 1 ")


def fake_versions(work: Work, count: int) -> None:
    """Version folders as promotion writes them; the model files are stand-ins (nothing here
    loads them)."""
    for version in range(1, count + 1):
        folder = work.served() / str(version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_text(f"model {version}")
        write_json(folder / "promotion.json", {"model": "cnn", "run_id": f"r{version}", "accuracy": 0.5 + version / 10})


def snapshot(work: Work) -> dict[str, str]:
    root = work.root / "models"
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rollback_publishes_the_next_version_and_deletes_nothing(tmp_path):
    work = Work(tmp_path)
    fake_versions(work, 3)
    before = snapshot(work)
    result = rollback.rollback(work, None, "v3 is worse", "ana@laptop", tracker=Tracker(uri=""))
    assert (result.version, result.rollback_of, result.restored_from, result.origin) == (4, 3, 2, 2)
    assert result.mlflow == "not configured"
    after = snapshot(work)
    assert {k: after[k] for k in before} == before, "an existing file changed"
    assert after["fmnist/4/saved_model.pb"] == "model 2"
    record = json.loads(after["fmnist/4/promotion.json"])
    assert record["run_id"] == "r2" and record["accuracy"] == 0.7 and record["reason"] == "v3 is worse"
    assert record["actor"] == "ana@laptop" and record["version"] == 4 and record["rolled_back_at"]
    assert serving_config.path(work).read_text() == serving_config.render(
        [serving_config.Model("fmnist", str(work.served().absolute()))]
    )
    assert rollback.rollback(work, None, "again", "ana@laptop", tracker=Tracker(uri="")).restored_from == 1
    assert list(versions(work.served())) == [1, 2, 3, 4, 5]
    # The history caught up with the folders copied in without it, then took each rollback.
    *promoted, first, second = history.read(work)
    assert [(line["event"], line["version"]) for line in promoted] == [("promote", v) for v in (1, 2, 3)]
    assert (first["event"], first["rollback_of"], first["restored_from"], first["by"]) == (
        "rollback",
        3,
        2,
        "ana@laptop",
    )
    assert (second["version"], second["restored_from"], second["reason"]) == (5, 1, "again")
    shown = status.report(work, None, 5)
    assert "version 5 in " in shown and "restored from version 1 in place of version 4" in shown
    assert (
        "version 4 " in shown and "rollback from version 3 to version 2's model (cnn of run r2): v3 is worse" in shown
    )


@pytest.mark.parametrize(
    ("to", "status", "needle"),
    [
        ("two", 2, "expected a version number or 'previous', got 'two'"),
        ("0", 2, "version numbers start at 1"),
        ("9", 1, "there is no version 9 to roll back to"),
        ("3", 1, "version 3 is the one served now"),
    ],
)
def test_bad_targets_write_nothing(tmp_path, to, status, needle):
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    before = snapshot(work)
    proc = run_job("rollback", "--work-dir", work.root, "--to", to, "--reason", "test", "--url", "http://127.0.0.1:9")
    assert proc.returncode == status
    assert_one_line_error(proc, needle)
    assert snapshot(work) == before


def test_a_rollback_waits_for_a_canary_in_progress(tmp_path):
    """While a canary runs its servers are pinned: the canary step decides first."""
    work = Work(tmp_path / "work")
    fake_versions(work, 3)
    write_json(work.root / "models" / "canary.json", {"stable_version": 2, "canary_version": 3})
    before = snapshot(work)
    proc = run_job("rollback", "--work-dir", work.root, "--reason", "test", "--url", "http://127.0.0.1:9")
    assert_one_line_error(proc, "a canary of version 3 is in progress", "make canary-end")
    assert snapshot(work) == before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_to_roll_back_and_an_empty_reason(tmp_path):
    work = tmp_path / "work"
    proc = run_job("rollback", "--work-dir", work, "--reason", "test")
    assert_one_line_error(proc, "no served versions under", "nothing to roll back")
    proc = run_job("rollback", "--work-dir", work, "--reason", " ")
    assert proc.returncode == 2 and "say why" in assert_one_line_error(proc)


def promote_forced(work: Work, run_id: str, model_dir) -> int:
    """jobs.promote's promote(), forced, of one candidate holding `model_dir`."""
    from jobs.release import promote
    from jobs.release.selection import Gate
    from tests.helpers.jobs import copy_model, evaluated

    candidate = work.candidate(run_id, "cnn")
    copy_model(model_dir, candidate.model)
    evaluated(work, run_id, "cnn")
    return promote.promote(work, run_id, "synthetic", ["cnn"], True, Gate(0.05, 0.002)).version


def results(proc) -> dict[str, str]:
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)


@pytest.mark.slow
def test_rollbacks_against_a_real_server_and_registry(
    ingested, trained_model, untrained_model, mlflow_uri, monkeypatch, tmp_path
):
    """v1 untrained, v2 trained, v3 untrained again (a bad promotion): with the server down
    nothing is written; rolled back, v4 serves v2's model, then v5 v1's (with a recorded
    accuracy it cannot reach: the check fails loudly), then there is nothing to go back to.
    The alias follows each time, the registry versions and the runs say who did what, and no
    version is deleted."""
    from mlflow.tracking import MlflowClient

    from tests.serving.conftest import LocalServer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    work = Work(ingested)
    for run_id, model in (("a", untrained_model), ("b", trained_model), ("c", untrained_model)):
        promote_forced(work, run_id, model)
    records = {v: json.loads((work.served() / str(v) / "promotion.json").read_text()) for v in (1, 2, 3)}
    assert [records[v]["registered_version"] for v in (1, 2, 3)] == ["1", "2", "3"]
    client = MlflowClient(mlflow_uri)
    env = {"MLFLOW_TRACKING_URI": mlflow_uri}
    args = ("--work-dir", work.root, "--actor", "ana@laptop")

    down = run_job("rollback", *args, "--reason", "v3 is worse", "--url", f"http://127.0.0.1:{closed_port()}", **env)
    assert_one_line_error(down, "cannot reach", "nothing was rolled back", "make serve")
    assert list(versions(work.served())) == [1, 2, 3] and len(history.read(work)) == 3
    assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "3"

    server = LocalServer(work.served(), tmp_path / "serve.log").start(expect_version=3)
    try:
        url = ("--url", server.url)
        first = run_job("rollback", *args, *url, "--reason", "v3 is worse", **env)
        assert first.returncode == 0, first.stderr[-3000:]
        figures = results(first)
        assert (figures["version"], figures["rollback_of"], figures["restored_from"]) == ("4", "3", "2")
        assert figures["registered_version"] == "2" and figures["mlflow"] == "updated"
        # The check scored the server's answers: v2's test accuracy (the same 500 images).
        assert float(figures["accuracy"]) == pytest.approx(records[2]["accuracy"], abs=1e-6)
        assert "version 4 of fmnist is AVAILABLE" in first.stderr, first.stderr
        champion = client.get_model_version_by_alias("fmnist", "champion")
        assert str(champion.version) == "2" and champion.tags["serving_version"] == "4"
        assert champion.tags["restored_by_rollback"] == "true" and champion.tags["restored_by"] == "ana@laptop"
        away = client.get_model_version("fmnist", "3").tags
        assert away["rolled_back"] == "true" and away["rolled_back_reason"] == "v3 is worse"
        assert away["rolled_back_in_serving_version"] == "4"

        # v1's recorded accuracy made one its model cannot reach: published and served, then loud.
        (work.served() / "1" / "promotion.json").write_text(json.dumps({**records[1], "accuracy": 0.99}))
        second = run_job("rollback", *args, *url, "--reason", "v2 too", **env)
        published = "version 5 (version 1's model) was published and is served"
        assert_one_line_error(second, published, "check failed", "champion was not moved")
        assert (results(second)["version"], results(second)["restored_from"]) == ("5", "1")
        # MLflow is told only after the check: champion stays on the model served before.
        assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "2"

        third = run_job("rollback", *args, *url, "--reason", "again", **env)
        assert_one_line_error(third, "nothing to go back to")
    finally:
        server.stop()

    # Nothing deleted: every version's files are there; each rollback's record says what it is.
    assert list(versions(work.served())) == [1, 2, 3, 4, 5]
    for version in range(1, 6):
        assert (work.served() / str(version) / "saved_model.pb").is_file()
    four = json.loads((work.served() / "4" / "promotion.json").read_text())
    assert (four["rollback_of"], four["restored_from"], four["origin"], four["run_id"]) == (3, 2, 2, "b")
    assert [line["event"] for line in history.read(work)] == ["promote"] * 3 + ["rollback"] * 2
    experiment = client.get_experiment_by_name("fmnist")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'rollback'", order_by=["start_time ASC"])
    assert [r.info.run_name for r in runs] == ["rollback-4", "rollback-5"]
    assert runs[0].data.tags["reason"] == "v3 is worse" and runs[0].data.tags["mlflow.user"] == "ana@laptop"
    assert runs[0].info.status == "FINISHED" and runs[0].data.metrics["served_version"] == 4
