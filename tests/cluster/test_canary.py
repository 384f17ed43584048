"""The canary replica as rendered (kustomize/components/canary, in every overlay): a copy of the
stable model server that differs only where it must, selected by the shared Service but not
by the stable Deployment, reachable per track by the workflow's canary step, with an init
container (its exact script, run on a temp dir) that starts it on what the stable servers
serve."""

from __future__ import annotations

import copy
from urllib.parse import urlparse

import pytest

from jobs.core import serving_config
from jobs.core.paths import Work
from tests.cluster import render, workflow
from tests.cluster.test_serving_start import mount, run_init


def find(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


@pytest.fixture(scope="module", params=render.OVERLAYS)
def docs(request, rendered):
    return rendered[f"overlays/{request.param}"]


def test_the_canary_pod_is_the_stable_pod_but_for_its_config_file(docs):
    stable, canary = find(docs, "Deployment", "tf-serving"), find(docs, "Deployment", "tf-serving-canary")
    assert canary["spec"]["replicas"] == 1
    a, b = copy.deepcopy(stable["spec"]["template"]["spec"]), copy.deepcopy(canary["spec"]["template"]["spec"])
    a.pop("topologySpreadConstraints")  # spreading the stable replicas only
    flags = b["containers"][0]["args"]
    assert "--model_config_file=/work/models/serving-canary.config" in flags
    b["containers"][0]["args"] = [f.replace("serving-canary.config", "serving.config") for f in flags]
    init_a, init_b = a.pop("initContainers")[0], b.pop("initContainers")[0]
    assert a == b, "the canary's pod drifted from the stable one"
    assert init_a["image"] == init_b["image"] and init_a["resources"] == init_b["resources"]


def test_the_service_takes_both_tracks_and_each_deployment_its_own(docs):
    stable, canary = find(docs, "Deployment", "tf-serving"), find(docs, "Deployment", "tf-serving-canary")
    service = find(docs, "Service", "tf-serving")["spec"]["selector"]
    assert selects(service, pod_labels(stable)) and selects(service, pod_labels(canary))
    assert not selects(stable["spec"]["selector"]["matchLabels"], pod_labels(canary))
    assert not selects(canary["spec"]["selector"]["matchLabels"], pod_labels(stable))
    pdb = find(docs, "PodDisruptionBudget", "tf-serving")["spec"]["selector"]["matchLabels"]
    assert selects(pdb, pod_labels(stable)) and not selects(pdb, pod_labels(canary))
    assert pod_labels(stable)["track"] == "stable" and pod_labels(canary)["track"] == "canary"


def test_the_canary_step_reaches_each_track_through_a_headless_service(docs, wf):
    defaults = workflow.parameter_defaults(wf)
    for track in ("stable", "canary"):
        url = urlparse(defaults[f"{track}-url"])
        service = find(docs, "Service", url.hostname)
        assert service["spec"]["clusterIP"] == "None", "headless: one address per pod, each pod's metrics"
        assert service["spec"]["selector"]["track"] == track
        assert url.port in {p["port"] for p in service["spec"]["ports"]}
        deployment = find(docs, "Deployment", "tf-serving" if track == "stable" else "tf-serving-canary")
        assert selects(service["spec"]["selector"], pod_labels(deployment))


def test_the_overlays_release_through_the_canary_and_the_workflow_reads_it(docs, rendered, wf):
    assert find(docs, "ConfigMap", "fmnist-settings")["data"]["rollout"] == "canary"
    base = find(rendered["base"], "ConfigMap", "fmnist-settings")["data"]["rollout"]
    parameter = next(p for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "rollout")
    assert parameter["valueFrom"]["configMapKeyRef"] == {"name": "fmnist-settings", "key": "rollout"}
    assert parameter["valueFrom"]["default"] == base == "direct"


def test_the_canary_init_starts_on_the_stable_config_or_the_placeholder_and_keeps_its_own(tmp_path, overlay):
    spec = find(overlay, "Deployment", "tf-serving-canary")["spec"]["template"]["spec"]
    [init], server = spec["initContainers"], spec["containers"][0]
    work_mount = mount(server, "work")["mountPath"]
    work = tmp_path / "work"
    canary = serving_config.track_path(Work(work), "canary")
    proc = run_init(init, work_mount, work)  # nothing yet: the placeholder
    assert proc.returncode == 0 and "created" in proc.stdout, proc.stdout + proc.stderr
    assert canary.read_text() == serving_config.PLACEHOLDER
    canary.unlink()
    (work / "models" / "fmnist" / "3").mkdir(parents=True)
    serving_config.pin(Work(work), "stable", 3)
    proc = run_init(init, work_mount, work)  # the stable servers' config, pins and all
    assert proc.returncode == 0 and "created" in proc.stdout
    assert serving_config.pinned(canary) == (3,)
    serving_config.pin(Work(work), "canary", None)
    written = canary.read_text()
    proc = run_init(init, work_mount, work)
    assert proc.returncode == 0 and "kept" in proc.stdout and canary.read_text() == written
    assert sorted(p.name for p in (work / "models").iterdir()) == ["fmnist", "serving-canary.config", "serving.config"]
