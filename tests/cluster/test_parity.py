"""Static parity: every step the workflow runs is `python -m <module> <args>` exactly as
jobs/steps.py defines it, with the steps' parameters mapped to Argo expressions; the DAG has
the same steps and dependencies; the TFJobs are shaped the way the jobs expect."""

from __future__ import annotations

import pytest

from jobs import steps
from tests.cluster import workflow


def argo_parameters(wf: dict) -> dict[str, str]:
    mount = {
        m["name"]: m["mountPath"]
        for t in wf["spec"]["templates"]
        if "container" in t
        for m in t["container"]["volumeMounts"]
    }
    return {"work_dir": mount[workflow.WORK_VOLUME], **workflow.STEP_PARAMETERS}


def worker_container(wf: dict) -> tuple[dict, dict]:
    train = workflow.templates(wf)["train"]
    tfjob = workflow.manifest_with_expressions(train)
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    return tfjob, worker


def test_dag_has_exactly_the_steps_and_their_dependencies(wf):
    tasks = {t["name"]: t for t in workflow.dag_tasks(wf)}
    assert set(tasks) == {s.name for s in steps.STEPS}
    for s in steps.STEPS:
        assert workflow.depends_on(tasks[s.name]) == set(s.depends), s.name
        assert tasks[s.name]["template"] == s.name


@pytest.mark.parametrize("step", [s for s in steps.STEPS if not s.per_model], ids=lambda s: s.name)
def test_container_commands_equal_the_steps(wf, step):
    template = workflow.templates(wf)[step.name]
    c = template["container"]
    expected = step.command("python", **argo_parameters(wf))
    assert c["command"] + c["args"] == expected
    assert set(step.parameters()) <= set(argo_parameters(wf))


def test_train_is_one_tfjob_per_model_running_the_step(wf):
    step = next(s for s in steps.STEPS if s.per_model)
    tasks = {t["name"]: t for t in workflow.dag_tasks(wf)}
    task = tasks[step.name]
    # Fan-out over the `models` parameter, each item passed as the template's `model` input.
    assert "workflow.parameters.models" in task["withParam"]
    assert task["arguments"]["parameters"] == [{"name": "model", "value": "{{item}}"}]
    template = workflow.templates(wf)[step.name]
    assert template["inputs"]["parameters"] == [{"name": "model"}]
    tfjob, worker = worker_container(wf)
    [c] = worker["template"]["spec"]["containers"]
    assert c["name"] == "tensorflow", "the operator gives TF_CONFIG only to the container named tensorflow"
    assert c["command"] + c["args"] == step.command("python", **argo_parameters(wf))
    assert c["image"] == "{{workflow.parameters.image}}{{workflow.parameters.image-suffix}}"


def test_tfjob_shape(wf):
    template = workflow.templates(wf)["train"]
    resource = template["resource"]
    assert resource["action"] == "create" and resource["setOwnerReference"] is True
    assert "manifests" not in resource
    assert resource["successCondition"] == "status.replicaStatuses.Worker.succeeded = {{workflow.parameters.workers}}"
    assert resource["failureCondition"].startswith("status.conditions.0.type == Failed")
    tfjob, worker = worker_container(wf)
    assert list(tfjob["spec"]["tfReplicaSpecs"]) == ["Worker"]
    assert worker["replicas"] == "{{workflow.parameters.workers}}"
    assert worker["restartPolicy"] == "ExitCode"
    assert tfjob["spec"]["successPolicy"] == "AllWorkers"
    assert tfjob["spec"]["runPolicy"]["cleanPodPolicy"] in ("Running", "All")
    assert tfjob["spec"]["runPolicy"]["backoffLimit"] >= 1
    assert worker["template"]["metadata"]["labels"]["workflows.argoproj.io/workflow"] == "{{workflow.name}}"
    # Unique per run and model (the operator names pods and services after it).
    assert tfjob["metadata"]["name"] == "{{workflow.name}}-{{inputs.parameters.model}}"


def test_every_job_container_gets_the_contract_env(wf):
    _, worker = worker_container(wf)
    containers = [t["container"] for t in wf["spec"]["templates"] if "container" in t]
    containers.append(worker["template"]["spec"]["containers"][0])
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == "{{workflow.parameters.mlflow-uri}}"
        assert env["MLFLOW_EXPERIMENT_NAME"]["value"] == "fmnist"
        assert env["FMNIST_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
        assert c["imagePullPolicy"] == "IfNotPresent"
        # Every job runs the image variant the cluster is set up for (components/gpu: -gpu).
        assert c["image"] == "{{workflow.parameters.image}}{{workflow.parameters.image-suffix}}"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts[workflow.WORK_VOLUME] == argo_parameters(wf)["work_dir"]


def test_ingest_is_memoized_in_the_cache_the_install_creates(wf):
    ingest = workflow.templates(wf)["ingest"]
    assert "workflow.parameters.dataset" in ingest["memoize"]["key"]  # its values: test_memoize.py
    assert ingest["memoize"]["cache"]["configMap"]["name"] == "fmnist-ingest-cache"


def test_parameters_have_defaults_and_gc(wf):
    defaults = workflow.parameter_defaults(wf)
    for name in (
        "dataset",
        "epochs",
        "patience",
        "workers",
        "models",
        "min-accuracy",
        "serving-url",
        "mlflow-uri",
        "worker-requests",
        "worker-limits",
    ):
        assert defaults[name], name
    image = next(p for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "image")
    assert image["valueFrom"]["configMapKeyRef"] == {"name": "fmnist-image", "key": "image"}
    assert wf["spec"]["podGC"]["strategy"] and wf["spec"]["ttlStrategy"]
    assert wf["metadata"]["generateName"] and "name" not in wf["metadata"]
    transient = [t["name"] for t in wf["spec"]["templates"] if t.get("retryStrategy")]
    assert {"ingest", "wait-serving", "smoke"} <= set(transient)


def test_the_drawing_names_every_step():
    head = workflow.WORKFLOW.read_text().split("apiVersion:", 1)[0]
    for s in steps.STEPS:
        assert s.name in head
    assert "──>" in head
