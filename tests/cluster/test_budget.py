"""The memory and CPU budget: the requests of every pod that runs at the busiest moment of a
pipeline fit the minimum Docker resources docs/kubernetes.md states, and the workers request
what they were measured to use.

The busiest moment is found stage by stage along the workflow's DAG (each stage's pods run
while the install's pods run): the add-ons and the app from the rendered overlay (the model
servers at the autoscaler's minimum), k3s's own add-ons, and per stage the step pods (the main
container plus the Argo executor's wait sidecar; an init container counts as the kubelet
counts it, the larger of it and the sum of the others) or, while training, `train-parallelism`
TFJobs at once, each its resource template's executor pod plus its workers."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.cluster import render, workflow

DOCS = render.ROOT / "docs" / "kubernetes.md"
# k3s's add-ons with requests (manifests/coredns.yaml and manifests/metrics-server in the k3s
# repository; local-path-provisioner and servicelb request nothing): (CPU cores, bytes).
K3S_ADDONS = {"coredns": (0.1, 70 * 2**20), "metrics-server": (0.1, 70 * 2**20)}
# What runs outside pods on the node: the k3s server (API server, scheduler, controllers,
# kubelet, containerd in one process) and the Docker VM's own system.
OUTSIDE_PODS = (0.5, 1 * 2**30)
# A worker's peak resident memory, measured with the rendered command and TF_CONFIG on a
# 60,000-image dataset (docs/kubernetes.md, "Memory budget"): its request must cover it.
MEASURED_WORKER_PEAK = 1161 * 2**20


def cpu(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(value) -> int:
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("k", 10**3), ("M", 10**6), ("G", 10**9)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def requests(containers: list[dict]) -> tuple[float, int]:
    got = [c.get("resources", {}).get("requests", {}) for c in containers]
    return sum(cpu(r.get("cpu", 0)) for r in got), sum(memory(r.get("memory", 0)) for r in got)


def pod_requests(spec: dict) -> tuple[float, int]:
    """What the scheduler reserves for a pod: the larger of each init container and the sum of
    the app containers, per resource."""
    app = requests(spec["containers"])
    inits = [requests([c]) for c in spec.get("initContainers", [])]
    return max([app[0], *(i[0] for i in inits)]), max([app[1], *(i[1] for i in inits)])


def documented_minimum() -> tuple[int, int]:
    m = re.search(r"Minimum Docker resources: \*\*(\d+) CPUs, (\d+) GiB of memory\*\*", DOCS.read_text())
    assert m, f"{DOCS} must state 'Minimum Docker resources: **N CPUs, M GiB of memory**'"
    return int(m[1]), int(m[2])


def install_requests(docs: list[dict]) -> dict[str, tuple[float, int]]:
    hpa_min = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["minReplicas"]
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            replicas = hpa_min.get(d["metadata"]["name"], d["spec"].get("replicas", 1))
            c, m = pod_requests(d["spec"]["template"]["spec"])
            out[d["metadata"]["name"]] = (c * replicas, m * replicas)
    return out


def stages(docs: list[dict], wf: dict, parallelism: int | None = None) -> dict[str, tuple[float, int]]:
    """Each DAG task's concurrently running pods, summed."""
    pipeline = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fmnist-pipeline")["data"]
    executor_cfg = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "workflow-controller-configmap"
    )
    executor = {"resources": yaml.safe_load(executor_cfg["data"]["executor"])["resources"]}
    values = workflow.sample_values(wf, {k: pipeline[k] for k in ("worker-requests", "worker-limits")})
    models = len(values["workflow.parameters.models"].split(","))
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fmnist-settings")["data"]
    at_once = min(models, parallelism or int(settings["train-parallelism"]))
    templates = workflow.templates(wf)
    out = {}
    for task in workflow.dag_tasks(wf):
        t = templates[task["template"]]
        if "container" in t:
            main = workflow.substitute_obj(t["container"], values)
            # init (executor) before; wait (executor) beside the main container.
            out[task["name"]] = pod_requests({"initContainers": [executor], "containers": [main, executor]})
        else:
            tfjob = yaml.safe_load(workflow.substitute(t["resource"]["manifest"], values))
            worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
            wc, wm = pod_requests(worker["template"]["spec"])
            ec, em = pod_requests({"containers": [executor]})
            n = int(worker["replicas"])
            out[task["name"]] = (at_once * (ec + n * wc), at_once * (em + n * wm))
    return out


def peak(docs: list[dict], wf: dict, parallelism: int | None = None) -> tuple[float, int, str]:
    base_cpu = sum(c for c, _ in install_requests(docs).values()) + sum(c for c, _ in K3S_ADDONS.values())
    base_mem = sum(m for _, m in install_requests(docs).values()) + sum(m for _, m in K3S_ADDONS.values())
    name, (c, m) = max(stages(docs, wf, parallelism).items(), key=lambda kv: kv[1][1])
    return base_cpu + c, base_mem + m, name


def test_the_busiest_moment_fits_the_documented_minimum(overlay, wf):
    cpus, gib = documented_minimum()
    peak_cpu, peak_mem, stage = peak(overlay, wf)
    assert stage == "train", "training is the busiest moment"
    print(
        f"\n[budget] peak requests ({stage}): {peak_cpu:.2f} CPUs, {peak_mem / 2**30:.2f} GiB of {cpus} CPUs, {gib} GiB"
    )
    assert peak_cpu <= cpus - OUTSIDE_PODS[0]
    assert peak_mem <= gib * 2**30 - OUTSIDE_PODS[1]


def test_training_every_candidate_at_once_would_not_fit(overlay, wf):
    """So the parallelism knob is what makes it fit (and the doc's figure is not too generous)."""
    cpus, gib = documented_minimum()
    models = len(workflow.parameter_defaults(wf)["models"].split(","))
    _, peak_mem, _ = peak(overlay, wf, parallelism=models)
    assert peak_mem > gib * 2**30 - OUTSIDE_PODS[1]


def test_workers_request_their_measured_peak_and_the_workflow_defaults_match(overlay, wf):
    data = next(d for d in overlay if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fmnist-pipeline")["data"]
    worker_requests, worker_limits = yaml.safe_load(data["worker-requests"]), yaml.safe_load(data["worker-limits"])
    assert memory(worker_requests["memory"]) >= MEASURED_WORKER_PEAK
    assert memory(worker_limits["memory"]) >= 1.5 * MEASURED_WORKER_PEAK, "room above the peak before the OOM killer"
    defaults = workflow.parameter_defaults(wf)
    assert yaml.safe_load(defaults["worker-requests"]) == worker_requests
    assert yaml.safe_load(defaults["worker-limits"]) == worker_limits
    settings = next(d for d in overlay if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fmnist-settings")
    assert int(settings["data"]["train-parallelism"]) >= 1


def test_the_train_template_takes_its_parallelism_from_the_configmap(wf):
    train = workflow.templates(wf)["train"]
    assert train["synchronization"] == {
        "semaphores": [{"configMapKeyRef": {"name": "fmnist-settings", "key": "train-parallelism"}}]
    }


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}}]}, (0.25, 2**30)),
        (
            {
                "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
                "containers": [{"resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}}, {}],
            },
            (2.0, 2**30),
        ),
    ],
)
def test_pod_requests_count_as_the_scheduler_counts(spec, expected):
    assert pod_requests(spec) == expected
