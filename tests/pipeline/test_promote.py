"""Promotion: what it writes (versions, their atomicity, the registry, the decision) and its
gate on real models: a clearly better one is promoted, the same one again is not."""

from __future__ import annotations

import json

import pytest

from jobs.core import serving_config
from jobs.core.files import write_json
from jobs.core.paths import Work, versions
from tests.helpers.jobs import assert_one_line_error, copy_model, evaluated, run_job


def test_versions_ignore_temp_and_other_dirs(tmp_path):
    for name in ("1", "3", ".3.tmp-abc", "latest", "10"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert list(versions(tmp_path)) == [1, 3, 10]
    assert list(versions(tmp_path / "absent")) == []


def make_candidate(work: Work, run_id: str, name: str, model_dir, validation_accuracy: float) -> None:
    """A candidate with a real model; its validation score (what selection reads) is claimed,
    its test record is measured as evaluate measures it."""
    candidate = work.candidate(run_id, name)
    copy_model(model_dir, candidate.model)
    evaluated(work, run_id, name, validation_accuracy=validation_accuracy)


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


def results(proc) -> dict[str, str]:
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)


@pytest.mark.slow
def test_gate_on_real_models_and_the_registry(ingested, trained_model, untrained_model, mlflow_uri):
    """nothing served → v1; clearly better → v2; the same model again → kept; forced → v3.
    Each promoted version is registered, the alias follows, folder and version name each other."""
    from mlflow.tracking import MlflowClient

    work = Work(ingested)
    served = work.served()
    make_candidate(work, "a", "cnn", untrained_model, 0.5)
    make_candidate(work, "a", "dropout", untrained_model, 0.6)
    first = promote(ingested, "a", MLFLOW_TRACKING_URI=mlflow_uri)
    assert first.returncode == 0, first.stderr[-3000:]
    assert results(first) | {"model": "dropout", "promoted": "1", "version": "1", "p_value": "none"} == results(first)
    assert json.loads((served / "1" / "promotion.json").read_text())["model"] == "dropout"

    make_candidate(work, "b", "cnn", trained_model, 0.9)  # chosen: the higher validation score
    make_candidate(work, "b", "dropout", untrained_model, 0.2)
    better = promote(ingested, "b", MLFLOW_TRACKING_URI=mlflow_uri)
    assert better.returncode == 0, better.stderr[-3000:]
    figures = results(better)
    assert figures["model"] == "cnn" and figures["promoted"] == "1" and figures["version"] == "2"
    assert float(figures["p_value"]) < 1e-6 and float(figures["accuracy"]) > float(figures["served_accuracy"]) + 0.3
    decision = json.loads((work.run("b") / "promotion.json").read_text())
    assert decision["decision"] == "promoted" and decision["mcnemar"]["images"] == 500
    assert decision["mcnemar"]["candidate_only"] > decision["mcnemar"]["served_only"]

    make_candidate(work, "c", "cnn", trained_model, 0.9)
    make_candidate(work, "c", "dropout", untrained_model, 0.1)
    same = promote(ingested, "c", MLFLOW_TRACKING_URI=mlflow_uri)
    assert same.returncode == 0, same.stderr[-3000:]
    assert results(same)["promoted"] == "0" and results(same)["version"] == "2"
    kept = json.loads((work.run("c") / "promotion.json").read_text())
    assert kept["decision"] == "kept" and kept["mcnemar"]["candidate_only"] == kept["mcnemar"]["served_only"] == 0
    assert kept["mcnemar"]["p_value"] == 1.0 and kept["served_accuracy"] == kept["accuracy"]
    assert list(versions(served)) == [1, 2]

    forced = promote(ingested, "c", "--force", MLFLOW_TRACKING_URI=mlflow_uri)
    assert forced.returncode == 0 and results(forced)["version"] == "3"
    assert json.loads((work.run("c") / "promotion.json").read_text())["decision"] == "forced"
    assert list(versions(served)) == [1, 2, 3]
    assert not [p for p in served.iterdir() if p.name.startswith(".") and p.is_dir()], "temp dir left"

    client = MlflowClient(mlflow_uri)
    champion = client.get_model_version_by_alias("fmnist", "champion")
    assert str(champion.version) == "3" and champion.tags["serving_version"] == "3"
    assert champion.tags["decision"] == "forced" and champion.tags["model"] == "cnn"
    assert len(client.search_model_versions("name='fmnist'")) == 3
    for version in (1, 2, 3):
        record = json.loads((served / str(version) / "promotion.json").read_text())
        assert record["registered_model"] == "fmnist" and record["registered_version"] == str(version)
        assert client.get_model_version("fmnist", str(version)).tags["serving_version"] == str(version)

    # Each pipeline run's parent run holds its decision.
    experiment = client.get_experiment_by_name("fmnist")
    parents = {
        r.data.tags["pipeline_run"]: r for r in client.search_runs([experiment.experiment_id], "tags.role = 'pipeline'")
    }
    assert set(parents) == {"a", "b", "c"}
    assert parents["b"].data.tags["decision"] == "promoted" and parents["b"].data.metrics["mcnemar_p_value"] < 1e-6
    assert parents["c"].data.tags["decision"] == "forced"  # the forced re-run of c, on the same parent
    assert parents["c"].data.tags["gate_significance"] == "0.05" and parents["c"].data.tags["forced"] == "true"
    assert {a.path for a in client.list_artifacts(parents["b"].info.run_id)} >= {"report.md", "plots"}

    # --rollout canary: version 4 goes to the canary servers only, champion stays on 3; then an
    # operator's roll back (jobs.canary --now: no watch) serves 3's model again, as version 5.
    make_candidate(work, "d", "cnn", trained_model, 0.9)
    make_candidate(work, "d", "dropout", untrained_model, 0.1)
    canary = promote(ingested, "d", "--force", "--rollout", "canary", MLFLOW_TRACKING_URI=mlflow_uri)
    assert canary.returncode == 0 and results(canary)["version"] == "4", canary.stderr[-3000:]
    assert serving_config.pinned(serving_config.path(work)) == (3,)
    assert serving_config.pinned(serving_config.track_path(work, "canary")) == (4,)
    state = json.loads((work.root / "models" / "canary.json").read_text())
    assert state | {"stable_version": 3, "canary_version": 4, "registered_version": "4"} == state
    assert state["stable_registered_version"] == "3"
    assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "3"
    assert str(client.get_model_version_by_alias("fmnist", "canary").version) == "4"
    rollback = run_job(
        "canary",
        *("--work-dir", ingested, "--run-id", "d", "--dataset", "synthetic"),
        *("--stable-url", "http://127.0.0.1:9", "--canary-url", "http://127.0.0.1:9", "--now", "rollback"),
        MLFLOW_TRACKING_URI=mlflow_uri,
    )
    # Decided by hand, a roll back is what was asked for: exit 0 (a decision of the watch exits 1).
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    assert "decision=rollback" in rollback.stdout and "served_version=5" in rollback.stdout
    for track in serving_config.TRACKS:
        assert serving_config.pinned(serving_config.track_path(work, track)) == ()
    assert serving_config.served_version(work) == 5 and list(versions(served)) == [1, 2, 3, 4, 5]
    assert json.loads((served / "5" / "promotion.json").read_text())["restored_from"] == 3
    assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "3"
    assert "canary" not in client.get_registered_model("fmnist").aliases
    assert client.get_model_version("fmnist", "4").tags["canary_decision"] == "rollback"
    assert client.get_model_version("fmnist", "3").tags["canary_last_decision"] == "rollback of serving version 4"


def test_promote_unevaluated_candidate(ingested, trained_model):
    make_candidate(Work(ingested), "a", "cnn", trained_model, 0.5)
    proc = promote(ingested, "a")
    assert_one_line_error(proc, "dropout", "has not been evaluated")
    assert not Work(ingested).served().exists() or not versions(Work(ingested).served())


def test_promote_needs_a_validation_score(ingested, trained_model):
    work = Work(ingested)
    make_candidate(work, "a", "cnn", trained_model, 0.5)
    make_candidate(work, "a", "dropout", trained_model, 0.5)
    write_json(work.candidate("a", "dropout").eval / "metrics.json", {"accuracy": 0.5})
    assert_one_line_error(promote(ingested, "a"), "no validation score", "re-run evaluate")


def test_promote_refuses_a_nonsense_gate(ingested):
    # The others (a significance above 1, a gain that is no difference of accuracies) are
    # Gate's own checks, in test_selection.py.
    assert_one_line_error(promote(ingested, "a", "--significance", "0"), "significance must be above 0")
