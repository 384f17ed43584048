"""Tracking as an ML engineer sees it, against a real `mlflow server` on loopback (what the
cluster runs), after two tiny pipeline runs whose jobs see only what the jobs image installs.

The two pipeline runs, p1 and p2, are the same: same data, seeds and settings. Their six
training processes run at once (cnn on two workers, dropout on one, per run), as the
cluster's parallel TFJobs would, so each run's parent is found or created concurrently. Then
each run is evaluated and promoted: p1 is promoted (nothing was served), p2 must not be (its
models are the same ones again), and its metrics must equal p1's exactly (reproducibility,
on one worker and on two).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from jobs.core.paths import Work
from jobs.local.processes import free_ports
from jobs.train.distributed import tf_config
from tests.helpers import ROOT
from tests.helpers.faults import MlflowServer
from tests.helpers.jobs import job_env, run_job

EXPERIMENT = "fmnist"
TRAIN = ("--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "6", "--batch-per-worker", "32")
CANDIDATES = {"cnn": 2, "dropout": 1}  # candidate: workers


def hidden_modules() -> str:
    """What the full MLflow of requirements/local.txt adds to the image's requirements/jobs.txt,
    as importable module names (mlflow itself excepted: both have it)."""
    from importlib.metadata import packages_distributions

    def pins(name: str) -> set[str]:
        lines = (ROOT / "requirements" / name).read_text().splitlines()
        return {re.split(r"[=<>\[ ;]", line)[0].lower().replace("_", "-") for line in lines if line[:1].isalpha()}

    modules: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    image = set().union(*(modules.get(d, set()) for d in pins("jobs.txt")))
    extra = set().union(*(modules.get(d, set()) for d in pins("local.txt") - pins("jobs.txt")))
    hidden = extra - image
    assert {"pandas", "sqlalchemy", "scipy", "flask"} <= hidden
    return ",".join(sorted(hidden))


def image_env(uri: str) -> dict[str, str]:
    """A job's environment: this tracking server, and nothing the image lacks."""
    return {
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": f"{ROOT / 'tests' / 'skinny'}:{ROOT}",
        "FMNIST_HIDE_MODULES": hidden_modules(),
        "FMNIST_THREADS": "1",
    }


def start_training(work: Path, run_id: str, model: str, workers: int, env: dict, logs: Path) -> list:
    """One candidate's training job: `workers` processes with operator-shaped TF_CONFIG."""
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    argv = [sys.executable, "-m", "jobs.train", "--work-dir", str(work), "--run-id", run_id, "--model", model, *TRAIN]
    procs = []
    for index in range(workers):
        extra = {"TF_CONFIG": tf_config(addresses, index)} if workers > 1 else {}
        with open(logs / f"{run_id}-{model}-{index}.log", "w") as out:
            procs.append(
                subprocess.Popen(argv, cwd=ROOT, env=job_env(**env, **extra), stdout=out, stderr=subprocess.STDOUT)
            )
    return procs


def start_step(module: str, work: Path, run_id: str, env: dict, logs: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", f"jobs.{module}", "--work-dir", str(work), "--run-id", run_id]
    argv += ["--dataset", "synthetic", "--models", ",".join(CANDIDATES)]
    with open(logs / f"{module}-{run_id}.log", "w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=job_env(**env), stdout=out, stderr=subprocess.STDOUT)


def step(module: str, work: Path, run_id: str, env: dict) -> subprocess.CompletedProcess:
    proc = run_job(
        module,
        "--work-dir",
        work,
        "--run-id",
        run_id,
        "--dataset",
        "synthetic",
        "--models",
        ",".join(CANDIDATES),
        **env,
    )
    assert proc.returncode == 0, f"{module} {run_id}:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Two pipeline runs against one tracking server; yields (server, work dir)."""
    root = tmp_path_factory.mktemp("tracking")
    server = MlflowServer(root / "mlflow").start()
    try:
        work = root / "work"
        env = image_env(server.url)
        ingest = run_job(
            "ingest", "--work-dir", work, "--dataset", "synthetic", "--train-size", "1200", "--test-size", "400", **env
        )
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        logs = root / "logs"
        logs.mkdir()
        procs = [
            proc
            for run_id in ("p1", "p2")
            for model, workers in CANDIDATES.items()
            for proc in start_training(work, run_id, model, workers, env, logs)
        ]
        for proc in procs:
            try:
                proc.wait(timeout=600)
            finally:
                proc.kill()
        assert all(proc.returncode == 0 for proc in procs), "\n".join(
            f"{log.name}:\n{log.read_text()[-2000:]}" for log in sorted(logs.iterdir())
        )
        evaluations = [start_step("evaluate", work, run_id, env, logs) for run_id in ("p1", "p2")]
        for proc in evaluations:
            assert proc.wait(timeout=600) == 0, "\n".join(log.read_text()[-3000:] for log in logs.glob("evaluate-*"))
        for run_id in ("p1", "p2"):  # in order: p2 is compared with what p1 promoted
            step("promote", work, run_id, env)
        yield server, Work(work)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(pipeline):
    from mlflow.tracking import MlflowClient

    return MlflowClient(pipeline[0].url)


@pytest.fixture(scope="module")
def runs(pipeline, client) -> dict:
    """{"p1": {"parent": Run, "cnn": Run, "dropout": Run}, "p2": {...}}"""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found: dict = {}
    for run in client.search_runs([experiment.experiment_id]):
        tags = run.data.tags
        found.setdefault(tags["pipeline_run"], {})
        key = "parent" if tags["role"] == "pipeline" else tags["model"]
        assert key not in found[tags["pipeline_run"]], f"two {key} runs in {tags['pipeline_run']}"
        found[tags["pipeline_run"]][key] = run
    return found


def info(work: Work, run_id: str, model: str) -> dict:
    return json.loads(work.candidate(run_id, model).run_info.read_text())


@pytest.mark.slow
def test_experiment_opens_as_model_training(client):
    assert client.get_experiment_by_name(EXPERIMENT).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_one_parent_per_pipeline_run_and_a_named_child_per_candidate(pipeline, runs):
    _, work = pipeline
    assert set(runs) == {"p1", "p2"}
    for run_id, found in runs.items():
        assert set(found) == {"parent", "cnn", "dropout"}
        parent = found["parent"]
        assert parent.info.run_name == run_id and parent.info.status == "FINISHED"
        assert json.loads((work.run(run_id) / "mlflow.json").read_text())["mlflow_run_id"] == parent.info.run_id
        for model, workers in CANDIDATES.items():
            child = found[model]
            assert child.info.run_name == model and child.info.status == "FINISHED"
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert info(work, run_id, model)["mlflow_run_id"] == child.info.run_id
            params = child.data.params
            assert params["workers"] == str(workers) and params["seed"] == "0" and params["deterministic"] == "True"
            assert params["validation_fraction"] == "0.1" and params["validation_examples"] == "120"
            # train: per epoch, training and validation; evaluate: through the SavedModel.
            metrics = child.data.metrics
            assert {"loss", "accuracy", "val_loss", "val_accuracy", "validation_accuracy", "test_accuracy"} <= set(
                metrics
            )
            assert "test_recall_ankle_boot" in metrics


@pytest.mark.slow
def test_promote_logs_the_decision_into_the_parent_and_the_chosen_child(pipeline, runs, client):
    _, work = pipeline
    first, second = (json.loads((work.run(r) / "promotion.json").read_text()) for r in ("p1", "p2"))
    assert first["decision"] == "promoted" and first["version"] == 1 and first["mcnemar"] is None
    parent = runs["p1"]["parent"].data
    assert parent.tags["decision"] == "promoted" and parent.tags["served_version"] == "1"
    assert parent.tags["registered_version"] == "1" and parent.tags["chosen_candidate"] == first["model"]
    assert parent.metrics["chosen_validation_accuracy"] == pytest.approx(first["validation_accuracy"])
    assert "promoted" in parent.tags["mlflow.note.content"]

    parent = runs["p2"]["parent"].data
    assert parent.tags["decision"] == "kept" and parent.tags["served_version"] == "1"
    assert parent.metrics["mcnemar_p_value"] == second["mcnemar"]["p_value"]
    assert parent.metrics["served_test_accuracy"] == pytest.approx(second["served_accuracy"])
    assert parent.metrics["chosen_test_accuracy"] == pytest.approx(second["accuracy"])
    assert "mcnemar_statistic" in parent.metrics and parent.tags["gate_significance"] == "0.05"
    chosen = runs["p2"][second["model"]].data
    assert chosen.tags["selected"] == "true" and chosen.tags["decision"] == "kept"
    assert chosen.metrics["mcnemar_p_value"] == second["mcnemar"]["p_value"]
    assert runs["p1"][first["model"]].data.tags["promoted"] == "true"

    for run_id in ("p1", "p2"):
        artifacts = {f.path for f in client.list_artifacts(runs[run_id]["parent"].info.run_id)}
        assert {"report.md", "promotion.json", "plots"} <= artifacts
        plots = {f.path for f in client.list_artifacts(runs[run_id]["parent"].info.run_id, "plots")}
        assert plots == {f"plots/{n}.png" for n in ("candidates", "per_class", "validation_curves")}
        report = Path(client.download_artifacts(runs[run_id]["parent"].info.run_id, "report.md")).read_text()
        assert f"# Pipeline run {run_id}" in report and "![" in report
        for model in CANDIDATES:
            child = runs[run_id][model].info.run_id
            assert {"eval/confusion_matrix.png", "eval/training_curves.png", "eval/metrics.json"} <= {
                f.path for f in client.list_artifacts(child, "eval")
            }


@pytest.mark.slow
def test_a_re_run_is_not_promoted_and_reproduces_every_metric(pipeline):
    """Same seed, data and settings: identical per-epoch figures on one worker and on two
    (compared exactly), so the re-run's models are the served ones and the gate keeps them."""
    _, work = pipeline
    for model in CANDIDATES:
        histories = [json.loads(work.candidate(r, model).history.read_text())["epochs"] for r in ("p1", "p2")]
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        assert [[e[k] for k in keys] for e in histories[0]] == [[e[k] for k in keys] for e in histories[1]], model
    second = json.loads((work.run("p2") / "promotion.json").read_text())
    assert second["promoted"] is False and second["decision"] == "kept"
    assert second["mcnemar"]["candidate_only"] == second["mcnemar"]["served_only"] == 0
    assert second["mcnemar"]["p_value"] == 1.0


@pytest.mark.slow
def test_dataset_inputs_match_the_ingest_manifest(pipeline, runs):
    _, work = pipeline
    manifest = json.loads((work.dataset("synthetic") / "manifest.json").read_text())
    assert {s: r["examples"] for s, r in manifest["splits"].items()} == {"train": 1080, "validation": 120, "test": 400}

    def inputs(run) -> dict[str, tuple]:
        found = {}
        for item in run.inputs.dataset_inputs:
            context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
            profile = json.loads(item.dataset.profile)
            found[context] = (item.dataset.name, item.dataset.digest, profile["examples"])
            assert json.loads(item.dataset.source)["uri"] == work.dataset("synthetic").resolve().as_uri()
            assert profile["origin"] == manifest["source"]
        return found

    expected = {s: (f"synthetic-{s}", r["digest"], r["examples"]) for s, r in manifest["splits"].items()}
    for found in runs.values():
        assert inputs(found["parent"]) == expected
        for model in CANDIDATES:
            assert inputs(found[model]) == expected


@pytest.mark.slow
def test_logged_models_registry_and_served_folder(pipeline, runs, client):
    _, work = pipeline
    for run_id, found in runs.items():
        for model in CANDIDATES:
            child = found[model]
            model_id = info(work, run_id, model)["model_id"]
            logged = client.get_logged_model(model_id)
            assert str(logged.status) == "READY" and logged.source_run_id == child.info.run_id
            assert logged.name == model and logged.params["seed"] == "0"
            assert [o.model_id for o in child.outputs.model_outputs] == [model_id]
            assert {"MLmodel", "tfmodel", "input_example.json", "serving_input_example.json"} <= {
                f.path for f in client.list_logged_model_artifacts(model_id)
            }
            # Metrics of the model, each on the dataset it was measured on.
            on = {m.key: m.dataset_name for m in logged.metrics}
            assert on["validation_accuracy"] == "synthetic-validation" and on["test_accuracy"] == "synthetic-test"

    first = json.loads((work.run("p1") / "promotion.json").read_text())
    assert [v.version for v in client.search_model_versions("name='fmnist'")] == ["1"]
    version = client.get_model_version_by_alias("fmnist", "champion")
    assert version.version == "1"
    model_id = info(work, "p1", first["model"])["model_id"]
    assert model_id == first["model_id"] and version.source == f"models:/{model_id}"
    linked = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert linked == [{"name": "fmnist", "version": 1}]
    assert version.run_id == runs["p1"][first["model"]].info.run_id
    assert version.tags["serving_version"] == "1"
    folder = work.served() / "1"
    assert version.tags["serving_path"] == str(folder.resolve())
    record = json.loads((folder / "promotion.json").read_text())
    assert record["registered_model"] == "fmnist" and record["registered_version"] == "1"
    assert record["model_id"] == model_id


@pytest.mark.slow
def test_the_champion_loads_and_predicts(pipeline):
    """As a user would: pyfunc by alias, the TensorFlow flavour, signature and input example."""
    import mlflow

    server, work = pipeline
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    from jobs.ingest import data

    splits, _ = data.model_splits(work.dataset("synthetic"), ("test",))
    test = splits["test"]
    model = mlflow.pyfunc.load_model("models:/fmnist@champion")
    assert model.metadata.get_input_schema().input_names() == ["pixels"]
    example = model.input_example
    assert example["pixels"].shape[1:] == (28, 28)
    out = model.predict({"pixels": test.images})
    assert set(out) == {"probabilities", "class_id", "class_name"}
    accuracy = float((np.asarray(out["class_id"]) == test.labels).mean())
    first = json.loads((work.run("p1") / "promotion.json").read_text())
    assert accuracy == pytest.approx(first["accuracy"])
    signature = mlflow.tensorflow.load_model("models:/fmnist@champion")
    import tensorflow as tf

    names = signature(pixels=tf.constant(test.images[:3]))["class_name"].numpy()
    assert list(names) == list(np.asarray(out["class_name"])[:3])
    mlflow.set_tracking_uri(previous)


@pytest.mark.slow
def test_the_ui_pages_rest_calls_return_these_objects(pipeline, runs):
    """What the UI's pages fetch (its REST routes under /ajax-api/ and its GraphQL run query),
    checked without a browser."""
    server, work = pipeline
    api = httpx.Client(base_url=f"{server.url}/ajax-api/2.0/mlflow", timeout=30)
    experiment = api.get("/experiments/get-by-name", params={"experiment_name": EXPERIMENT}).json()["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    eid = experiment["experiment_id"]

    # The runs table: parents and their children (nested by mlflow.parentRunId), with datasets.
    table = api.post("/runs/search", json={"experiment_ids": [eid], "max_results": 100}).json()["runs"]
    names = sorted(r["info"]["run_name"] for r in table)
    assert names == ["cnn", "cnn", "dropout", "dropout", "p1", "p2"]
    for row in table:
        contexts = {t["value"] for d in row["inputs"]["dataset_inputs"] for t in d["tags"]}
        assert contexts == {"train", "validation", "test"}, row["info"]["run_name"]

    # The experiment's models tab and a model's page.
    models = api.post("/logged-models/search", json={"experiment_ids": [eid]}).json()["models"]
    assert len(models) == 4 and {m["info"]["status"] for m in models} == {"LOGGED_MODEL_READY"}
    model_id = runs["p1"]["cnn"].outputs.model_outputs[0].model_id
    page = api.get(f"/logged-models/{model_id}").json()["model"]
    assert page["info"]["source_run_id"] == runs["p1"]["cnn"].info.run_id

    # The registry: the model, its versions, the alias.
    assert api.get("/registered-models/get", params={"name": "fmnist"}).json()["registered_model"]["name"] == "fmnist"
    versions = api.get("/model-versions/search", params={"filter": "name='fmnist'"}).json()["model_versions"]
    assert [v["version"] for v in versions] == ["1"]
    champion = api.get("/registered-models/alias", params={"name": "fmnist", "alias": "champion"}).json()
    assert champion["model_version"]["version"] == "1"

    # A run page: GraphQL, then the artifact browser and a metric chart.
    parent = runs["p1"]["parent"].info.run_id
    query = (
        "query Run($id: String) { mlflowGetRun(input: {runId: $id}) { run { info { runName status } "
        "inputs { datasetInputs { dataset { name digest } } } outputs { modelOutputs { modelId } } "
        "modelVersions { version } } } }"
    )
    child = runs["p1"]["cnn"].info.run_id
    got = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": {"id": child}}, timeout=30).json()
    run = got["data"]["mlflowGetRun"]["run"]
    assert run["info"]["runName"] == "cnn" and run["outputs"]["modelOutputs"] == [{"modelId": model_id}]
    assert len(run["inputs"]["datasetInputs"]) == 3
    files = api.get("/artifacts/list", params={"run_id": parent}).json()["files"]
    assert {"report.md", "plots"} <= {f["path"] for f in files}
    history = api.get("/metrics/get-history", params={"run_id": child, "metric_key": "val_accuracy"}).json()
    assert [int(m["step"]) for m in history["metrics"]] == [0, 1]


@pytest.mark.slow
def test_the_parent_run_is_found_or_created_once(pipeline, tmp_path, monkeypatch):
    """Six steps at once asking for a new pipeline run's parent get one run; so does a step
    that comes after an attempt that died between creating it and recording it."""
    from mlflow.tracking import MlflowClient

    from jobs.tracking.tracker import Tracker

    server, _ = pipeline
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    work = Work(tmp_path / "work")
    found: list = []

    def ask() -> None:
        found.append(Tracker().pipeline_run(work, "race"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and found[0]
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert len(client.search_runs([experiment], "tags.pipeline_run = 'race'")) == 1

    work.mlflow_parent("race").unlink()  # as if the step that created it died before writing this
    assert Tracker().pipeline_run(work, "race") == found[0]
