"""Promotion's rule and what it writes: versions, their atomicity, the registry."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, copy_model, run_job

from jobs.common import write_json
from jobs.paths import Work, versions
from jobs.promote import decide


@pytest.mark.parametrize(
    "best, served, force, promote",
    [
        (0.90, None, False, True),  # nothing served
        (0.91, 0.90, False, True),  # better
        (0.89, 0.90, False, False),  # worse
        (0.90, 0.90, False, False),  # a tie does not replace what is served
        (0.89, 0.90, True, True),  # forced
    ],
    ids=["none-served", "better", "worse", "tie", "force"],
)
def test_rule(best, served, force, promote):
    decision = decide(best, served, force)
    assert decision.promote is promote
    assert decision.reason


def test_versions_ignore_temp_and_other_dirs(tmp_path):
    for name in ("1", "3", ".3.tmp-abc", "latest", "10"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert list(versions(tmp_path)) == [1, 3, 10]
    assert list(versions(tmp_path / "absent")) == []


def make_candidate(work: Work, run_id: str, name: str, model_dir, accuracy: float) -> None:
    candidate = work.candidate(run_id, name)
    copy_model(model_dir, candidate.model)
    write_json(candidate.eval / "metrics.json", {"accuracy": accuracy})


def promote(work_dir, run_id, *extra, **env):
    return run_job(
        "promote",
        "--work-dir",
        work_dir,
        "--run-id",
        run_id,
        "--dataset",
        "synthetic",
        "--models",
        "cnn,dropout",
        *extra,
        **env,
    )


@pytest.mark.slow
def test_promotion_sequence_and_registry(ingested, trained_model, mlflow_uri):
    """none served → v1; worse → nothing; forced → v2; better → v3; each registered as champion.

    The served version is re-scored on the test split, so candidates claim accuracies of 0.0
    (worse than any real score) or 1.0 (better) while all share one real SavedModel."""
    from mlflow.tracking import MlflowClient

    work = Work(ingested)
    make_candidate(work, "a", "cnn", trained_model, 0.5)
    make_candidate(work, "a", "dropout", trained_model, 0.6)
    first = promote(ingested, "a", MLFLOW_TRACKING_URI=mlflow_uri)
    assert first.returncode == 0, first.stderr
    assert "model=dropout" in first.stdout and "promoted=1" in first.stdout and "version=1" in first.stdout
    served = work.served()
    assert list(versions(served)) == [1]
    assert (served / "1" / "saved_model.pb").exists() and (served / "1" / "variables").is_dir()
    assert json.loads((served / "1" / "promotion.json").read_text())["model"] == "dropout"

    make_candidate(work, "b", "cnn", trained_model, 0.0)
    make_candidate(work, "b", "dropout", trained_model, 0.0)
    worse = promote(ingested, "b", MLFLOW_TRACKING_URI=mlflow_uri)
    assert worse.returncode == 0 and "promoted=0" in worse.stdout and "version=1" in worse.stdout
    assert list(versions(served)) == [1]
    decision = json.loads((work.run("b") / "promotion.json").read_text())
    assert decision["promoted"] is False and decision["served_accuracy"] > 0.5

    forced = promote(ingested, "b", "--force", MLFLOW_TRACKING_URI=mlflow_uri)
    assert forced.returncode == 0 and "version=2" in forced.stdout
    make_candidate(work, "c", "cnn", trained_model, 1.0)
    make_candidate(work, "c", "dropout", trained_model, 0.2)
    better = promote(ingested, "c", MLFLOW_TRACKING_URI=mlflow_uri)
    assert better.returncode == 0 and "model=cnn" in better.stdout and "version=3" in better.stdout
    assert list(versions(served)) == [1, 2, 3]
    assert not [p for p in served.iterdir() if p.name.startswith(".") and p.is_dir()], "temp dir left"

    client = MlflowClient(mlflow_uri)
    champion = client.get_model_version_by_alias("fmnist", "champion")
    assert champion.tags["serving_version"] == "3" and champion.tags["model"] == "cnn"
    assert len(client.search_model_versions("name='fmnist'")) == 3


def test_promote_unevaluated_candidate(ingested, trained_model):
    make_candidate(Work(ingested), "a", "cnn", trained_model, 0.5)
    proc = promote(ingested, "a")
    assert_one_line_error(proc, "dropout", "has not been evaluated")
    assert not Work(ingested).served().exists() or not versions(Work(ingested).served())
