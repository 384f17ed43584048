"""Every kustomization renders, and what comes out is what the cluster path needs."""

from __future__ import annotations

import fnmatch
import re
from urllib.parse import urlparse

import pytest
import yaml

from tests.cluster import render, workflow
from tests.cluster.conftest import SAMPLE_TAG, TARGETS

NAMESPACE = "fmnist"


def find(docs, kind, name):
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", [t[0] for t in TARGETS])
def test_renders_without_duplicates(rendered, name):
    docs = rendered[name]
    assert docs, f"{name} rendered nothing"
    keys = [(d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{name} renders duplicates"


def test_remote_bases_are_pinned_to_release_tags():
    urls = render.remote_urls()
    assert urls, "the add-ons come from pinned remote bases"
    for url in urls:
        ref = url.rsplit("?ref=", 1)[1]
        assert re.fullmatch(r"v\d+\.\d+\.\d+", ref), f"{url}: pin a release tag, not {ref!r}"
    paths = {u.split("//")[2].split("?")[0] for u in urls}
    assert {"manifests/overlays/standalone", "manifests/base/crds/full"} <= paths


def test_one_namespace_everywhere(overlay):
    transformer = yaml.safe_load((render.KUSTOMIZE / "overlays/local/namespace.yaml").read_text())
    base_ns = yaml.safe_load((render.KUSTOMIZE / "base/namespace/namespace.yaml").read_text())
    makefile = (render.ROOT / "Makefile").read_text()
    assert transformer["metadata"]["namespace"] == base_ns["metadata"]["name"] == NAMESPACE
    assert re.search(rf"^NAMESPACE\s*\?=\s*{NAMESPACE}\s*$", makefile, re.M)
    namespaces = {d["metadata"].get("namespace") for d in overlay}
    assert namespaces == {None, NAMESPACE, "kubeflow"}
    operator = [d for d in overlay if d["metadata"].get("namespace") == "kubeflow"]
    assert {d["kind"] for d in operator} <= {"ServiceAccount", "Secret", "Service", "Deployment"}


def test_overlay_has_every_component(overlay):
    for kind, name in [
        ("Deployment", "training-operator"),
        ("Deployment", "workflow-controller"),
        ("Deployment", "argo-server"),
        ("Deployment", "mlflow"),
        ("Deployment", "tf-serving"),
        ("Service", "mlflow"),
        ("Service", "tf-serving"),
        ("HorizontalPodAutoscaler", "tf-serving"),
        ("PersistentVolumeClaim", "fmnist-work"),
        ("ServiceAccount", "fmnist-pipeline"),
        ("ConfigMap", "fmnist-pipeline"),
        ("ConfigMap", "fmnist-settings"),
        ("ConfigMap", "fmnist-ingest-cache"),
    ]:
        find(overlay, kind, name)
    find(overlay, "CustomResourceDefinition", "tfjobs.kubeflow.org")


def test_argo_crds_are_the_full_ones(rendered):
    docs = rendered["addons/argo-crds"]
    for crd in ("workflows.argoproj.io", "workflowtemplates.argoproj.io", "cronworkflows.argoproj.io"):
        schema = find(docs, "CustomResourceDefinition", crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "spec" in schema["properties"], f"{crd} lacks its full schema"


def test_storage_is_rwo_local_path(overlay):
    for name in ("fmnist-work", "mlflow-data"):
        pvc = find(overlay, "PersistentVolumeClaim", name)
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["storageClassName"] == "local-path"


def test_argo_server_auth_mode_and_namespaced(overlay, rendered):
    args = container(find(overlay, "Deployment", "argo-server"))["args"]
    assert "--auth-mode=server" in args and "--namespaced" in args
    # A shared cluster: each user's own token (client mode), never the server's Role.
    for name in ("overlays/cluster", "overlays/cluster+gpu"):
        args = container(find(rendered[name], "Deployment", "argo-server"))["args"]
        assert [a for a in args if a.startswith("--auth-mode")] == ["--auth-mode=client"], name
    controller = container(find(overlay, "Deployment", "workflow-controller"))
    assert "--namespaced" in controller["args"]
    assert [a.split("@")[0] for a in controller["args"] if a.startswith("--executor-image=")] == [
        "--executor-image=quay.io/argoproj/argoexec:v4.1.2"
    ]


def test_mlflow_server(overlay, wf):
    deployment = find(overlay, "Deployment", "mlflow")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    c = container(deployment)
    assert c["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    args = c["args"]
    assert "--serve-artifacts" in args
    assert any(a.startswith("--backend-store-uri=sqlite:////mlflow/") for a in args)
    assert any(a.startswith("--artifacts-destination=/mlflow/") for a in args)
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(c)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/mlflow"] == "data"
    # The Host headers clients send must pass --allowed-hosts (mlflow >= 3.5 answers 403 otherwise).
    patterns = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")).split(",")
    uri = workflow.parameter_defaults(wf)["mlflow-uri"]
    hosts = [
        urlparse(uri).netloc,
        f"mlflow.{NAMESPACE}.svc:5000",
        f"mlflow.{NAMESPACE}.svc.cluster.local:5000",
        "localhost:5001",
        "127.0.0.1:5001",
    ]
    for host in hosts:
        assert any(fnmatch.fnmatch(host, p) for p in patterns), f"Host {host} is refused by {patterns}"
    assert urlparse(uri).hostname == find(overlay, "Service", "mlflow")["metadata"]["name"]


def test_tf_serving(overlay, wf):
    deployment = find(overlay, "Deployment", "tf-serving")
    c = container(deployment)
    assert c["image"] == "tensorflow/serving:2.20.0"
    args = dict(a.split("=", 1) for a in c["args"])
    work_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "work")
    # Which models and where: the config file on the work volume (tests/cluster/test_serving_start.py).
    assert args["--model_config_file"] == f"{work_mount}/models/serving.config"
    assert int(args["--file_system_poll_wait_seconds"]) > 0
    assert args["--rest_api_port"] == "8501"
    config_dir = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "monitoring")
    assert args["--monitoring_config_file"].startswith(config_dir + "/")
    config = find(
        overlay,
        "ConfigMap",
        next(
            v["configMap"]["name"]
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "monitoring"
        ),
    )
    text = config["data"][args["--monitoring_config_file"].rsplit("/", 1)[1]]
    assert "enable: true" in text and 'path: "/monitoring/prometheus/metrics"' in text
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/fmnist/metadata"
    # The same volume the workflow writes: its promote step fills <work>/models/fmnist.
    claim = next(
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "work"
    )
    assert claim == next(v["persistentVolumeClaim"]["claimName"] for v in wf["spec"]["volumes"] if v["name"] == "work")
    hpa = find(overlay, "HorizontalPodAutoscaler", "tf-serving")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] >= 2
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    service = find(overlay, "Service", "tf-serving")
    url = urlparse(workflow.parameter_defaults(wf)["serving-url"])
    assert url.hostname == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}


def test_gpu_component_gives_workers_a_gpu_and_the_gpu_image(rendered, overlay, wf):
    plain = find(overlay, "ConfigMap", "fmnist-pipeline")["data"]
    gpu = find(rendered["overlays/local+gpu"], "ConfigMap", "fmnist-pipeline")["data"]
    assert "nvidia.com/gpu" not in yaml.safe_load(plain["worker-limits"])
    assert yaml.safe_load(gpu["worker-limits"])["nvidia.com/gpu"] == "1"
    # The image: <tag> on CPU, <tag>-gpu (make image GPU=1: tensorflow[and-cuda]) with the component.
    assert plain["image-suffix"] == "" and gpu["image-suffix"] == "-gpu"
    suffix = next(p for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "image-suffix")
    assert suffix["valueFrom"]["configMapKeyRef"] == {"name": "fmnist-pipeline", "key": "image-suffix"}
    assert suffix["valueFrom"]["default"] == plain["image-suffix"]
    image_sh = (render.ROOT / "hack" / "image.sh").read_text()
    assert "requirements=requirements/jobs-gpu.txt suffix=-gpu" in image_sh
    assert "ARG REQUIREMENTS=requirements/jobs.txt" in (render.ROOT / "infra" / "Dockerfile").read_text()
    assert (
        find(rendered["overlays/local+gpu"], "ConfigMap", "fmnist-pipeline")["metadata"]["labels"][
            "workflows.argoproj.io/configmap-type"
        ]
        == "Parameter"
    )


def test_arm64_component_swaps_in_the_jobs_server(rendered, overlay):
    docs = rendered["overlays/local+arm64-serving"]
    c = container(find(docs, "Deployment", "tf-serving"))
    assert c["image"] == f"fmnist-jobs:{SAMPLE_TAG}"
    assert c["command"] == ["python", "-m", "jobs.serve"]
    args = c["args"]
    assert args[args.index("--model-base-path") + 1] == "/work/models/fmnist"
    assert args[args.index("--model-name") + 1] == "fmnist"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert {p["containerPort"] for p in c["ports"]} == {port}
    service = find(docs, "Service", "tf-serving")
    assert [p["port"] for p in service["spec"]["ports"]] == [8501]
    # Everything else (Service, HPA, readiness on the model) stays as it was.
    assert c["readinessProbe"] == container(find(overlay, "Deployment", "tf-serving"))["readinessProbe"]
